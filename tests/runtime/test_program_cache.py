"""program_cache: executables kept on disk by signature, loaded by a new process without tracing,
and plain jax.jit for what cannot be keyed."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hsfm_jax.core import heads
from hsfm_jax.reporting import results
from hsfm_jax.runtime import divergence, program_cache

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache_dir(tmp_path):
    program_cache.enable(tmp_path / "programs")
    yield tmp_path / "programs"
    program_cache.disable()


def _head(seeds=3, classes=2, dim=4):
    rng = np.random.default_rng(0)
    return heads.LinearHead(
        jnp.asarray(rng.normal(size=(seeds, classes, dim)), jnp.float32),
        jnp.zeros((seeds, classes), jnp.float32),
    )


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.pkl"))


def test_off_by_default_and_plain_jit_results():
    assert program_cache.directory() is None
    head, x = _head(), jnp.ones((5, 4))
    assert divergence._finite_per_seed(head, x).tolist() == [True, True, True]


def test_one_entry_per_signature_and_the_same_values(cache_dir):
    head, x = _head(), jnp.ones((5, 4))
    bad = head.replace(bias=head.bias.at[1, 0].set(jnp.nan))
    assert divergence._finite_per_seed(head, x).tolist() == [True, True, True]
    assert divergence._finite_per_seed(bad, x).tolist() == [True, False, True]
    assert len(_entries(cache_dir)) == 1  # same shapes: one program
    divergence._finite_per_seed(head, jnp.ones((6, 4)))  # another shape: another program
    assert len(_entries(cache_dir)) == 2


def test_static_arguments_are_part_of_the_key(cache_dir):
    correct = jnp.asarray([True, False, True, True])
    segments = jnp.asarray([0, 0, 1, 1])
    indices = jnp.asarray([[0, 1, 2, 3], [0, 0, 2, 2]])
    for num_segments in (2, 3):
        got = results.bootstrap_worst_accuracy(
            correct, segments, indices, num_segments=num_segments
        )
        want = results.bootstrap_worst_accuracy._jitted(
            correct, segments, indices, num_segments=num_segments
        )
        np.testing.assert_array_equal(got, want)
    assert len(_entries(cache_dir)) == 2


def test_what_cannot_be_keyed_goes_to_plain_jit(cache_dir):
    @program_cache.jit(static_argnames=("fn",))
    def apply(x, *, fn):
        return fn(x)

    assert float(apply(jnp.ones(3), fn=jnp.sum)) == 3.0  # a function: its repr has an address
    head, x = _head(), jnp.ones((5, 4))
    inside = jax.jit(lambda h: divergence._finite_per_seed(h, x))(head)  # called while tracing
    assert inside.tolist() == [True, True, True]
    assert _entries(cache_dir) == []


def test_an_unreadable_entry_is_rebuilt(cache_dir):
    head, x = _head(), jnp.ones((5, 4))
    divergence._finite_per_seed(head, x)
    (entry,) = cache_dir.glob("*.pkl")
    entry.write_bytes(b"not a program")
    fresh = program_cache.Program(divergence._finite_per_seed.__wrapped__)  # nothing in memory
    assert fresh(head, x).tolist() == [True, True, True]
    assert entry.read_bytes() != b"not a program"


def test_a_new_process_loads_the_program_without_tracing(tmp_path):
    """As the entry points run it: JAX's compilation cache on too. The first process only fills
    that cache; the second builds the program (an executable fetched from the compilation cache
    would be kept without its kernels on XLA:CPU and fail in the third); the third loads it."""
    script = textwrap.dedent(
        f"""
        import sys
        import jax
        import jax.numpy as jnp
        from hsfm_jax.runtime import divergence, program_cache
        from hsfm_jax.core import heads
        jax.config.update("jax_compilation_cache_dir", {str(tmp_path / "jax")!r})
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        jax.jit(lambda x: 2 * x)(jnp.ones(3)).block_until_ready()  # the cache is now in use
        if sys.argv[1] == "on":
            program_cache.enable({str(tmp_path / "programs")!r})
        head = heads.LinearHead(jnp.ones((3, 2, 4)), jnp.zeros((3, 2)))
        builds = []  # programs traced, lowered and compiled in this process
        build = program_cache.Program._build
        program_cache.Program._build = lambda *a: builds.append(1) or build(*a)
        print(divergence._finite_per_seed(head, jnp.ones((5, 4))).tolist(), len(builds))
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run = lambda cache: subprocess.run(
        [sys.executable, "-c", script, cache], cwd=ROOT, env=env, capture_output=True, text=True
    )
    runs = [run("off"), run("on")]
    assert [p.name.endswith(".new.pkl") for p in (tmp_path / "programs").glob("*.pkl")] == [True]
    runs += [run("on")]  # loads the new entry, runs it to completion, keeps it as checked
    assert [p.name.endswith(".new.pkl") for p in (tmp_path / "programs").glob("*.pkl")] == [False]
    runs += [run("on")]  # loads the checked entry
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert runs[1].stdout.split() == ["[True,", "True,", "True]", "1"]  # traced and compiled once
    for later in runs[2:]:
        assert later.stdout.split() == ["[True,", "True,", "True]", "0"]  # loaded: never traced
    assert not any("not kept" in r.stderr or "rebuilding" in r.stderr for r in runs)
