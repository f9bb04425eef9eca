"""Multi-process runs on JAX's own distributed runtime (`jax.distributed.initialize`).

One process per host (or per CPU device in tests) joins a coordination service; `jax.devices()`
then lists every process's devices, a `Mesh` over them is global, and a jitted program runs on all
of them at once. Every process runs the same Python program on the same inputs (each reads the
features itself); process 0 alone writes result files (`is_primary`). On CPU the cross-process
collectives are gloo's (``jax_cpu_collectives_implementation``, JAX's default).

Helpers here make host data global and bring global results back to every host:

- `put_global`: host arrays (the same on every process) -> global `jax.Array`s on a sharding.
- `to_host`: global (or local) arrays -> full NumPy arrays on every process.
- `agreed`: process 0's value of a small host value (a decision read from the workdir), so that
  every process takes the same branch even if a shared filesystem shows them different states.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec


def check_flags(
    *,
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    auto: bool,
) -> bool:
    """Whether the flags ask for a multi-process run; ValueError naming a bad combination."""
    explicit = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    given = [name for name, value in explicit.items() if value is not None]
    if auto and given:
        raise ValueError(
            f"--distributed_auto detects the cluster itself; drop --{', --'.join(given)}"
        )
    if auto:
        return True
    if not given:
        return False
    missing = [name for name in explicit if name not in given]
    if missing:
        raise ValueError(f"a multi-process run needs --{', --'.join(missing)} too")
    host, sep, port = coordinator_address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--coordinator_address must be HOST:PORT, got {coordinator_address!r}")
    if num_processes < 1:
        raise ValueError(f"--num_processes must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id must be in [0, {num_processes}), got {process_id}")
    return True


def initialize(
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
    auto: bool = False,
) -> bool:
    """Joins the processes of a multi-process run (before anything touches a JAX backend).

    With `auto`, `jax.distributed.initialize()` finds the cluster itself (SLURM, TPU pod slices,
    Open MPI, ...). With none of the arguments, does nothing: a single-process run. Returns
    whether the run is multi-process.
    """
    if not check_flags(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        auto=auto,
    ):
        return False
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=list(local_device_ids) if local_device_ids else None,
    )
    return True


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0)."""
    return jax.process_index() == 0


def put_global(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """Host arrays (the same on every process) as global arrays on `sharding`.

    Each process fills its own devices' shards from its copy; nothing crosses processes.
    """

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(put, tree)


def _identity(tree: Any) -> Any:
    return tree


@functools.cache
def _replicated(mesh: jax.sharding.Mesh):
    """A jitted identity whose outputs are replicated on every device of `mesh`: one program
    gathers a whole tree (`multihost_utils.process_allgather` compiles one per leaf)."""
    return jax.jit(_identity, out_shardings=NamedSharding(mesh, PartitionSpec()))


def to_host(tree: Any) -> Any:
    """Every leaf as a full NumPy array on every process (gathered across processes for global
    arrays with shards elsewhere, which must all be on one `NamedSharding` mesh)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    remote = [
        i for i, x in enumerate(leaves) if isinstance(x, jax.Array) and not x.is_fully_addressable
    ]
    if remote:
        gathered = _replicated(leaves[remote[0]].sharding.mesh)([leaves[i] for i in remote])
        for i, x in zip(remote, gathered, strict=True):
            leaves[i] = x.addressable_data(0)
    return jax.tree_util.tree_unflatten(treedef, [np.asarray(x) for x in leaves])


def agreed(value: Any) -> Any:
    """Process 0's `value` (a pytree of small host arrays or scalars) on every process."""
    if jax.process_count() == 1:
        return value
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x).item() if np.ndim(x) == 0 else np.asarray(x),
        multihost_utils.broadcast_one_to_all(jax.tree_util.tree_map(np.asarray, value)),
    )


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name` (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
