"""One full HSFM run (paper Alg. 1), jitted end to end and vmapped over seeds.

A run is a pure function of (data, initial head, rates, key):

1. draw a class-balanced support set S from train (`support_per_class` per class); H0 = features;
2. each epoch (a `lax.scan` step):
   a. per-example CE of the current head on val; hard set Q = top-`hard_set_size` per class
      (Eqs. 4-6). The val logits of the current head are carried from the end of the previous
      epoch (step d computes them), so val is read once per epoch;
   b. `meta_steps` (KH) times: the meta-gradient of L_out(H; Q) through `inner_steps` (T) SGD steps
      of the head on (H, y_S) (Eqs. 12-16), clipped to global norm `meta_grad_clip`, then an update
      of H by the meta optimizer ("adam", as the authors' released code, state kept across epochs;
      or "sgd", Eq. 17);
   c. T steps of the head on (stop_gradient(H), y_S) with the head optimizer ("adam" as the
      released code, state kept across epochs; or "sgd");
   d. val logits and metrics of the new head; keep it if its selection score (val WGA by
      default; any of `evaluate.SELECTION_METRICS`, SFit included) is >= the best so far (ties
      go to the later epoch);
3. test metrics of every epoch's head, for the history (they feed nothing back, so a chunk of
   epochs is evaluated after its scan with one matmul when small enough: `run_epochs`).

A run can also go in chunks of epochs (`run_chunk`: the first epoch is traced, so every chunk of
a run is one compiled program; progress and checkpoints between chunks are `epoch_loop`'s).
`run_seeds` is `init_seeds` and then all epochs as one chunk, so chained chunks give its heads and
history exactly.

Static settings (those that set shapes or program structure) live in `Settings`, a hashable
NamedTuple closed over by jit; learning rates and the clip norm live in `Rates`, a pytree of
scalars, so sweeps can vmap over them without recompiling.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from hsfm_jax.core import heads, losses, optim, selection
from hsfm_jax.data.features import SplitArrays
from hsfm_jax.methods.hsfm import hard_set, meta
from hsfm_jax.reporting import evaluate
from hsfm_jax.runtime import program_cache


class Settings(NamedTuple):
    """Static configuration of a run: changing any of these compiles a new program."""

    num_classes: int
    num_groups: int
    support_per_class: int
    hard_set_size: int
    inner_steps: int
    meta_steps: int
    epochs: int
    meta_optimizer: str = "adam"
    head_optimizer: str = "adam"
    remat: bool = False
    meta_gradient: str = (
        "auto"  # hsfm_jax.methods.hsfm.meta.META_GRADIENTS; "auto" picks by problem size
    )
    selection_metric: str = "wga"
    hard_set_fill: str = "error"  # "repeat": classes smaller than Khard give all, repeated


class Rates(struct.PyTreeNode):
    """Dynamic scalars of a run (can carry a leading axis to vmap a sweep over them)."""

    inner_lr: jnp.ndarray  # alpha: inner-loop SGD step
    meta_lr: jnp.ndarray  # eta: meta optimizer step on H
    head_lr: jnp.ndarray  # head optimizer step (the paper uses alpha)
    meta_grad_clip: jnp.ndarray  # global-norm clip of the meta-gradient


def make_rates(*, inner_lr, meta_lr, head_lr=None, meta_grad_clip=10.0, dtype=jnp.float32) -> Rates:
    head_lr = inner_lr if head_lr is None else head_lr
    return Rates(*(jnp.asarray(v, dtype) for v in (inner_lr, meta_lr, head_lr, meta_grad_clip)))


class Data(struct.PyTreeNode):
    """All arrays a run reads.

    Attributes:
      train, val, test: `SplitArrays`. The hard set is drawn from `val`.
      train_group_counts: (G,) float, for the train-weighted average accuracy.
      select: optional `SplitArrays` for model selection (e.g. the other half of a split val, as
        the fine-grained protocol does); None selects on `val`.
      train_rows: optional (R,) sorted int32 train rows whose features `train.features` (R, d)
        holds (labels and groups stay all N rows): a train split too large for the device
        carries just the rows the support sets draw (`support_indices`); None: all rows.
    """

    train: SplitArrays
    val: SplitArrays
    test: SplitArrays
    train_group_counts: jnp.ndarray
    select: SplitArrays | None = None
    train_rows: jnp.ndarray | None = None

    @property
    def selection_split(self) -> SplitArrays:
        return self.val if self.select is None else self.select


class Result(struct.PyTreeNode):
    """What a run returns (leading seed axis when vmapped).

    Attributes:
      best_head: head with the best val selection score; weight (C, d).
      last_head: head after the last epoch.
      best_epoch: () int32, 1-based epoch of best_head.
      best_score: () float, its val selection score.
      support_indices: (C * support_per_class,) int32 train rows of S.
      support: (C * support_per_class, d) final H.
      history: dict of (epochs, ...) arrays, one row per epoch.
    """

    best_head: heads.LinearHead
    last_head: heads.LinearHead
    best_epoch: jnp.ndarray
    best_score: jnp.ndarray
    support_indices: jnp.ndarray
    support: jnp.ndarray
    history: dict


class State(struct.PyTreeNode):
    """Everything that carries from one epoch to the next (a checkpointable pytree).

    Attributes:
      head: current head.
      head_opt_state: head optimizer state (kept across epochs, as the released code).
      support: (C * support_per_class, d) current H.
      support0: the initial H0 (for the edit norm).
      support_indices: (C * support_per_class,) int32 train rows of S.
      support_labels: (C * support_per_class,) int32.
      val_logits: (N_val, C) logits of `head` on val (for the next hard set).
      meta_opt_state: meta optimizer state (kept across epochs).
      best_head, best_score, best_epoch: model selection so far.
      epoch: () int32, epochs done.
    """

    head: heads.LinearHead
    head_opt_state: optax.OptState
    support: jnp.ndarray
    support0: jnp.ndarray
    support_indices: jnp.ndarray
    support_labels: jnp.ndarray
    val_logits: jnp.ndarray
    meta_opt_state: optax.OptState
    best_head: heads.LinearHead
    best_score: jnp.ndarray
    best_epoch: jnp.ndarray
    epoch: jnp.ndarray


def _meta_transform(settings: Settings, rates: Rates) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(rates.meta_grad_clip),
        optim.make(settings.meta_optimizer, rates.meta_lr),
    )


def _metrics(logits, split, settings, data):
    return evaluate.evaluate_logits(
        logits,
        split,
        num_classes=settings.num_classes,
        num_groups=settings.num_groups,
        train_group_counts=data.train_group_counts,
    )


def _hard_set_groups(groups: jnp.ndarray, num_groups: int) -> jnp.ndarray:
    if num_groups == 0:
        return jnp.zeros((0,), jnp.int32)
    valid = groups >= 0
    return jax.ops.segment_sum(valid.astype(jnp.int32), jnp.where(valid, groups, 0), num_groups)


def support_indices(
    key: jax.Array, train_labels: jnp.ndarray, *, settings: Settings
) -> jnp.ndarray:
    """(C * support_per_class,) int32 train rows of the support set S that `init` draws."""
    return hard_set.sample_per_class(
        key, train_labels, num_classes=settings.num_classes, per_class=settings.support_per_class
    )


def init(
    data: Data,
    init_head: heads.LinearHead,
    rates: Rates,
    key: jax.Array,
    *,
    settings: Settings,
) -> State:
    """Draws the support set and builds the state before the first epoch (Alg. 1, lines 3-4)."""
    s = settings
    rows = support_indices(key, data.train.labels, settings=s)
    if data.train_rows is None:
        support0 = data.train.features[rows]
    else:
        support0 = data.train.features[jnp.searchsorted(data.train_rows, rows)]
    return State(
        head=init_head,
        head_opt_state=optim.make(s.head_optimizer, rates.head_lr).init(init_head),
        support=support0,
        support0=support0,
        support_indices=rows,
        support_labels=data.train.labels[rows],
        val_logits=heads.apply(init_head, data.val.features),
        meta_opt_state=_meta_transform(s, rates).init(support0),
        best_head=init_head,
        best_score=jnp.asarray(-jnp.inf, support0.dtype),
        best_epoch=jnp.asarray(0, jnp.int32),
        epoch=jnp.asarray(0, jnp.int32),
    )


def epoch(state: State, data: Data, rates: Rates, *, settings: Settings) -> tuple[State, dict]:
    """One epoch (Alg. 1, lines 6-14) and model selection. Returns (state, history row)."""
    s = settings
    meta_tx = _meta_transform(s, rates)
    head_tx = optim.make(s.head_optimizer, rates.head_lr)
    head_grad = jax.grad(losses.head_loss)
    unroll = dict(inner_steps=s.inner_steps, inner_lr=rates.inner_lr, remat=s.remat)
    labels = state.support_labels

    val_losses = losses.per_example_cross_entropy(logits=state.val_logits, labels=data.val.labels)
    q_idx = hard_set.top_k_per_class(
        val_losses,
        data.val.labels,
        num_classes=s.num_classes,
        per_class=s.hard_set_size,
        repeat_small_classes=s.hard_set_fill == "repeat",
    )
    query = (data.val.features[q_idx], data.val.labels[q_idx])

    def meta_step(carry, _):
        support, opt_state = carry
        loss, grad = meta.meta_value_and_grad(
            support, state.head, labels, query, method=s.meta_gradient, **unroll
        )
        updates, opt_state = meta_tx.update(grad, opt_state, support)
        return (optax.apply_updates(support, updates), opt_state), loss

    (support, meta_opt_state), outer_losses = jax.lax.scan(
        meta_step, (state.support, state.meta_opt_state), None, length=s.meta_steps
    )
    outer_after = meta.outer_loss(
        support, state.head, labels, query, method=s.meta_gradient, **unroll
    )

    frozen = jax.lax.stop_gradient(support)

    def head_step(carry, _):
        head, opt_state = carry
        updates, opt_state = head_tx.update(head_grad(head, frozen, labels), opt_state, head)
        return (optax.apply_updates(head, updates), opt_state), None

    (head, head_opt_state), _ = jax.lax.scan(
        head_step, (state.head, state.head_opt_state), None, length=s.inner_steps
    )

    val_logits = heads.apply(head, data.val.features)
    if data.select is None:
        val_metrics = _metrics(val_logits, data.val, s, data)
    else:
        val_metrics = _metrics(heads.apply(head, data.select.features), data.select, s, data)
    if s.selection_metric == "sfit":  # reads features, not only predictions
        score = selection.score(
            head,
            data.selection_split,
            num_classes=s.num_classes,
            num_groups=s.num_groups,
            metric="sfit",
        )
    else:
        score = val_metrics[s.selection_metric]
    better = score >= state.best_score  # ties go to the later epoch
    new_state = state.replace(
        head=head,
        head_opt_state=head_opt_state,
        support=support,
        val_logits=val_logits,
        meta_opt_state=meta_opt_state,
        best_head=jax.tree_util.tree_map(
            lambda new, old: jnp.where(better, new, old), head, state.best_head
        ),
        best_score=jnp.where(better, score, state.best_score),
        best_epoch=jnp.where(better, state.epoch + 1, state.best_epoch),
        epoch=state.epoch + 1,
    )
    history = {
        "outer_loss_before": outer_losses[0],
        "outer_loss_after": outer_after,
        "edit_norm": jnp.linalg.norm(support - state.support0),
        "hard_set_group_counts": _hard_set_groups(data.val.groups[q_idx], s.num_groups),
        "hard_set_indices": q_idx,  # (C * hard_set_size,) val rows of Q, for the analysis plots
        "val_selection": score,
        **_scalars("val", val_metrics),
    }
    return new_state, history


def _scalars(prefix: str, metrics: dict, epoch_axes: int = 0) -> dict:
    """The per-epoch scalar metrics, prefixed (arrays with `epoch_axes` leading epoch axes)."""
    return {f"{prefix}_{k}": v for k, v in metrics.items() if jnp.ndim(v) == epoch_axes}


# Test metrics feed nothing back into training, so a chunk of epochs can record its heads and
# evaluate them all after the scan with one (N_test, d) @ (d, E C) matmul: the test features are
# read once per chunk instead of once per epoch (the pass is memory-bound for small C). Done
# when the chunk's heads and logits take at most this many bytes (per seed); else each epoch
# evaluates its own head.
_DEFERRED_TEST_BYTES = 64 * 2**20


def _defer_test(data: Data, settings: Settings, num_epochs: int) -> bool:
    n, d = data.test.features.shape
    itemsize = data.test.features.dtype.itemsize
    return num_epochs * settings.num_classes * (n + d) * itemsize <= _DEFERRED_TEST_BYTES


def _test_history(epoch_heads: heads.LinearHead, data: Data, settings: Settings) -> dict:
    """Test metrics of E heads (weight (E, C, d)) from one matmul: dict of (E,) arrays."""
    E, C, d = epoch_heads.weight.shape
    logits = data.test.features @ epoch_heads.weight.reshape(E * C, d).T  # (N, E C)
    logits = logits.reshape(-1, E, C).transpose(1, 0, 2) + epoch_heads.bias[:, None, :]
    metrics = jax.vmap(lambda z: _metrics(z, data.test, settings, data))(logits)
    return _scalars("test", metrics, epoch_axes=1)


def run_epochs(
    state: State, data: Data, rates: Rates, *, settings: Settings, num_epochs: int
) -> tuple[State, dict]:
    """`num_epochs` epochs as one `lax.scan`; history arrays have a leading (num_epochs,) axis.

    Each epoch's head is also evaluated on test (`test_*` history rows), after the scan when
    the chunk is small enough (`_defer_test`; same metrics, one pass over the test features).
    """
    if _defer_test(data, settings, num_epochs):

        def body(st, _):
            st, row = epoch(st, data, rates, settings=settings)
            return st, (row, st.head)

        state, (history, epoch_heads) = jax.lax.scan(body, state, None, length=num_epochs)
        return state, {**history, **_test_history(epoch_heads, data, settings)}

    def body_with_test(st, _):
        st, row = epoch(st, data, rates, settings=settings)
        test = _metrics(heads.apply(st.head, data.test.features), data.test, settings, data)
        return st, {**row, **_scalars("test", test)}

    return jax.lax.scan(body_with_test, state, None, length=num_epochs)


def run_chunk(
    state: State,
    data: Data,
    rates: Rates,
    first_epoch: jnp.ndarray,
    *,
    settings: Settings,
    chunk_epochs: int,
) -> tuple[State, dict]:
    """Epochs `first_epoch` .. `first_epoch + chunk_epochs - 1` (0-based) of a run, those before
    `settings.epochs` only: one program for every chunk of a run, the last, shorter one included.

    `first_epoch` is traced (and, under `vmap` over seeds, unbatched, so the skip stays a
    `lax.cond`): epochs past the end keep the state and give zero history rows, which the
    caller drops. The epochs that run compute what `run_epochs` does, so chunks chained from
    `init` give the heads and history of `run` (tests/methods/test_hsfm_chunks.py checks equality).

    Returns:
      (state, history) with history arrays of a leading (chunk_epochs,) axis.
    """
    defer = _defer_test(data, settings, chunk_epochs)

    def run_one(st):
        st, row = epoch(st, data, rates, settings=settings)
        if not defer:
            test = _metrics(heads.apply(st.head, data.test.features), data.test, settings, data)
            row = {**row, **_scalars("test", test)}
        return st, (row, st.head) if defer else row

    shapes = jax.eval_shape(run_one, state)[1]
    skip = lambda st: (st, jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), shapes))

    def body(st, index):
        return jax.lax.cond(first_epoch + index < settings.epochs, run_one, skip, st)

    state, out = jax.lax.scan(body, state, jnp.arange(chunk_epochs))
    if not defer:
        return state, out
    history, epoch_heads = out
    return state, {**history, **_test_history(epoch_heads, data, settings)}


def finish(state: State, history: dict) -> Result:
    return Result(
        best_head=state.best_head,
        last_head=state.head,
        best_epoch=state.best_epoch,
        best_score=state.best_score,
        support_indices=state.support_indices,
        support=state.support,
        history=history,
    )


def run(
    data: Data,
    init_head: heads.LinearHead,
    rates: Rates,
    key: jax.Array,
    *,
    settings: Settings,
) -> Result:
    """One HSFM run for one seed (pure; jit it with `settings` static, or use `run_seeds`)."""
    state = init(data, init_head, rates, key, settings=settings)
    state, history = run_epochs(state, data, rates, settings=settings, num_epochs=settings.epochs)
    return finish(state, history)


@program_cache.jit(static_argnames=("settings",))
def init_seeds(
    data: Data, init_head: heads.LinearHead, rates: Rates, keys: jax.Array, *, settings: Settings
) -> State:
    """`init` vmapped over keys (S,): the state before the first chunk, leading axis S."""
    return jax.vmap(lambda k: init(data, init_head, rates, k, settings=settings))(keys)


@program_cache.jit(static_argnames=("settings", "chunk_epochs"))
def run_chunk_seeds(
    state: State,
    data: Data,
    rates: Rates,
    first_epoch: jnp.ndarray,
    *,
    settings: Settings,
    chunk_epochs: int,
) -> tuple[State, dict]:
    """`run_chunk` vmapped over the seed axis of `state`; history arrays (S, chunk_epochs, ...).

    One compiled program per (settings, chunk_epochs): `first_epoch` () int32 is traced.
    """
    chunk = lambda st: run_chunk(
        st, data, rates, first_epoch, settings=settings, chunk_epochs=chunk_epochs
    )
    return jax.vmap(chunk)(state)


def run_seeds(
    data: Data,
    init_head: heads.LinearHead,
    rates: Rates,
    keys: jax.Array,
    *,
    settings: Settings,
) -> Result:
    """`run` vmapped over keys (S,), leading axis S: `init_seeds`, then all epochs as one chunk.

    The programs are those a run in chunks (`run_chunk_seeds` with fewer epochs, chained)
    compiles, so its heads and history equal these exactly (one program per chunk size).
    """
    state = init_seeds(data, init_head, rates, keys, settings=settings)
    first = jnp.asarray(0, jnp.int32)
    state, history = run_chunk_seeds(
        state, data, rates, first, settings=settings, chunk_epochs=settings.epochs
    )
    return finish(state, history)


@program_cache.jit(static_argnames=("settings",))
def init_runs(
    data: Data, init_head: heads.LinearHead, rates: Rates, keys: jax.Array, *, settings: Settings
) -> State:
    """`init` vmapped over runs: rates (R,) and keys (R,) paired, e.g. a rate grid x seeds.

    Returns the state before the first chunk, leading axis R.
    """
    return jax.vmap(lambda r, k: init(data, init_head, r, k, settings=settings))(rates, keys)


@program_cache.jit(static_argnames=("settings", "chunk_epochs"))
def run_chunk_runs(
    state: State,
    data: Data,
    rates: Rates,
    first_epoch: jnp.ndarray,
    *,
    settings: Settings,
    chunk_epochs: int,
) -> tuple[State, dict]:
    """`run_chunk` vmapped over runs (state and rates (R,) paired); history (R, chunk_epochs, ...).

    One compiled program per (settings, chunk_epochs, R) whatever the rates: a grid of rates x
    seeds is one program.
    """
    chunk = lambda st, r: run_chunk(
        st, data, r, first_epoch, settings=settings, chunk_epochs=chunk_epochs
    )
    return jax.vmap(chunk)(state, rates)
