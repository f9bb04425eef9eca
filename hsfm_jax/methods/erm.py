"""ERM linear head on frozen features (the "Base (ERM)" rows of the HSFM paper's tables).

`fit` trains a linear head with cross-entropy (+ optional L2 on the weight) with an optax
optimizer, full batch or minibatch (optionally class-balanced sampling). It is one jitted
`lax.scan`, a pure function of (data, key), so it vmaps over seeds. How it trains is a `Recipe`
(static: optimizer, steps, batches; changing one compiles a new program) and `Rates` (a pytree
of the learning rate and L2 coefficient, traced, so grids of them vmap); `from_config` is where
an ERM config becomes both.

As a method (`hsfm_jax.methods`): `default_config`, `check`, `run` give the "erm" row; the
experiment's ``config.erm`` is the one ERM recipe of a run, which HSFM's initial head, AFR's ERM
stage and NeuronTune's reference head start from (`check` validates it for all of them).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hsfm_jax.core import checks, heads, losses, optim, sampling
from hsfm_jax.data import buckets, stream
from hsfm_jax.data.features import FeatureSet, Split, SplitArrays
from hsfm_jax.methods.contract import MethodResult
from hsfm_jax.runtime import epoch_loop, program_cache

NAME = "erm"
LR_SCHEDULES = ("constant", "cosine")


class Recipe(NamedTuple):
    """How `fit` trains a head, the static part (hashable: a jit static argument).

    Attributes:
      num_classes: C.
      optimizer: a name understood by `hsfm_jax.core.optim.make`.
      steps: optimizer steps.
      batch_size: 0 for full batch; else examples drawn per step (with replacement).
      class_balanced: weight (full batch) or sample (minibatch) classes equally.
      lr_schedule: "constant", or "cosine" (cosine decay to 0 over `steps`, as PyTorch's
        CosineAnnealingLR with T_max=steps stepped once per step).
      l2_bias: also penalize the bias (as PyTorch SGD's weight_decay does for all parameters).
    """

    num_classes: int
    optimizer: str = "adam"
    steps: int = 1000
    batch_size: int = 0
    class_balanced: bool = False
    lr_schedule: str = "constant"
    l2_bias: bool = False


class Rates(NamedTuple):
    """How `fit` trains a head, the traced part (a pytree: grids of it vmap, one program).

    Attributes:
      learning_rate: () step size.
      l2: () coefficient of ``0.5 * l2 * ||W||^2`` (and the bias with ``l2_bias``).
    """

    learning_rate: float | jax.Array = 1e-3
    l2: float | jax.Array = 0.0


def _objective(head, features, labels, weights, l2, l2_bias=False, feature_mask=None):
    """What `fit` minimizes: the weighted mean cross-entropy plus ``l2 / 2`` times the squared
    weight (and bias). `fit` steps along its closed-form gradient, `_objective_grad`
    (tests/core/test_losses.py checks the two against ``jax.grad``)."""
    # `features * feature_mask` seen by the head, computed as the masked head on the features:
    # the same logits, and heads that share `features` (NeuronTune's lambda grid, vmapped) then
    # share one gather of the minibatch and one matmul.
    masked = head if feature_mask is None else head.replace(weight=head.weight * feature_mask)
    per_example = losses.per_example_cross_entropy(
        logits=heads.apply(masked, features), labels=labels
    )
    data_loss = jnp.sum(per_example * weights) / jnp.sum(weights)
    penalty = jnp.sum(head.weight**2) + (jnp.sum(head.bias**2) if l2_bias else 0.0)
    return data_loss + 0.5 * l2 * penalty


def _data_grad(head, features, onehot_t, weights, feature_mask=None):
    """The gradient of ``sum_i w_i CE_i`` of the (masked) head: labels as (C, N) one-hot columns,
    in closed form (`losses.weighted_ce_grad`: several times faster than ``jax.grad`` with few
    classes)."""
    masked = head if feature_mask is None else head.replace(weight=head.weight * feature_mask)
    grads = losses.weighted_ce_grad(masked, features, onehot_t, weights)
    return grads if feature_mask is None else grads.replace(weight=grads.weight * feature_mask)


def _penalized(head, data_grads, total_weight, l2, l2_bias):
    """The gradient of `_objective` from `_data_grad` (summed over rows of total weight)."""
    return heads.LinearHead(
        data_grads.weight / total_weight + l2 * head.weight,
        data_grads.bias / total_weight + (l2 * head.bias if l2_bias else 0.0),
    )


def _objective_grad(head, features, onehot_t, weights, l2, l2_bias=False, feature_mask=None):
    """The gradient of `_objective` (labels as (C, N) one-hot columns), in closed form."""
    data_grads = _data_grad(head, features, onehot_t, weights, feature_mask)
    return _penalized(head, data_grads, jnp.sum(weights), l2, l2_bias)


def _draw_minibatches(step_keys, example_weight, *, batch_size):
    """(K, batch_size) int32 rows drawn with replacement, P(row) proportional to its weight, one
    draw per key of `step_keys` (K,): `jax.random.choice`'s draws (`sampling.choice`)."""
    p = example_weight / jnp.sum(example_weight)
    return jax.vmap(lambda k: sampling.choice(k, p, (batch_size,)))(step_keys)


def _example_weight(labels, num_classes, dtype, *, sample_weight, class_balanced):
    """(N,) weight of each example in the loss (full batch) or sampling (minibatch); 0 for the
    padding rows (label -1, `hsfm_jax.data.buckets`)."""
    base_weight = (
        jnp.ones(labels.shape, dtype)
        if sample_weight is None
        else jnp.asarray(sample_weight, dtype)
    )
    base_weight = jnp.where(buckets.valid(labels), base_weight, 0)
    counts = jnp.zeros((num_classes,), dtype).at[labels].add(base_weight)
    return base_weight / jnp.maximum(counts[labels], 1e-12) if class_balanced else base_weight


def _optimizer(optimizer, learning_rate, lr_schedule, steps) -> optax.GradientTransformation:
    if lr_schedule == "constant":
        schedule = learning_rate
    elif lr_schedule == "cosine":
        schedule = optax.cosine_decay_schedule(learning_rate, steps)
    else:
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    return optim.make(optimizer, schedule)


@program_cache.jit(static_argnames=("recipe",))
def fit(
    features: jnp.ndarray,
    labels: jnp.ndarray,
    key: jax.Array,
    recipe: Recipe,
    rates: Rates,
    *,
    init: heads.LinearHead | None = None,
    sample_weight: jnp.ndarray | None = None,
    feature_mask: jnp.ndarray | None = None,
) -> heads.LinearHead:
    """Trains a linear head.

    Args:
      features: (N, d) float.
      labels: (N,) int in [0, C), or -1 on padding rows (left out).
      key: PRNG key for minibatch sampling (unused in full batch).
      recipe: the static `Recipe`; rates: its `Rates` (learning rate, L2).
      init: starting head; zeros when None.
      sample_weight: optional (N,) non-negative weight per example (0 leaves it out); multiplies
        the class-balancing weight and, in minibatch mode, the sampling probability.
      feature_mask: optional (d,) 0/1 mask: the head sees `features * feature_mask`, and the
        returned head has the masked columns zeroed.

    Returns:
      The trained `LinearHead` (weight (C, d), bias (C,)).
    """
    num_classes, steps, batch_size = recipe.num_classes, recipe.steps, recipe.batch_size
    l2 = rates.l2
    d = features.shape[1]
    head = heads.zeros(num_classes, d, features.dtype) if init is None else init
    example_weight = _example_weight(
        labels,
        num_classes,
        features.dtype,
        sample_weight=sample_weight,
        class_balanced=recipe.class_balanced,
    )
    tx = _optimizer(recipe.optimizer, rates.learning_rate, recipe.lr_schedule, steps)
    step = _step_fn(features, labels, example_weight, tx, recipe, l2, feature_mask)
    step_keys = jax.random.split(key, steps)
    # Every step's minibatch drawn before the loop: the same rows as one draw per step (one
    # key each), without a cumulative sum and search inside each sequential step.
    xs = (
        _draw_minibatches(step_keys, example_weight, batch_size=batch_size)
        if batch_size
        else step_keys
    )
    (head, _), _ = jax.lax.scan(step, (head, tx.init(head)), xs)
    if feature_mask is not None:
        head = head.replace(weight=head.weight * feature_mask)
    return head


def _step_fn(features, labels, example_weight, tx, recipe: Recipe, l2, feature_mask):
    """One optimizer step of `fit`: ``step((head, opt_state), rows or key) -> (carry, None)``."""
    num_classes, batch_size, l2_bias = recipe.num_classes, recipe.batch_size, recipe.l2_bias
    onehot_t = None if batch_size else losses.onehot_columns(labels, num_classes, features.dtype)
    batch_weight = jnp.ones((batch_size,), features.dtype)

    def step(carry, idx):
        head, opt_state = carry
        if batch_size:
            batch_onehot = losses.onehot_columns(labels[idx], num_classes, features.dtype)
            grads = _objective_grad(
                head, features[idx], batch_onehot, batch_weight, l2, l2_bias, feature_mask
            )
        else:
            grads = _objective_grad(
                head, features, onehot_t, example_weight, l2, l2_bias, feature_mask
            )
        updates, opt_state = tx.update(grads, opt_state, head)
        return (jax.tree_util.tree_map(jnp.add, head, updates), opt_state), None

    return step


def fit_chain(
    features: jnp.ndarray,
    labels: jnp.ndarray,
    key: jax.Array,
    recipe: Recipe,
    rates: Rates,
    *,
    segments: tuple[int, ...],
) -> heads.LinearHead:
    """A chain of `fit` calls from zeros as one loop: the head after each segment, (T, C, d).

    ``head = zeros; for i, n in enumerate(segments): head = fit(fold_in(key, i),
    recipe._replace(steps=n), rates, init=head)``, keeping every head (constant learning rate,
    no class balancing, no sample weights: ``recipe.steps``, ``lr_schedule`` and
    ``class_balanced`` are not read), with the same operations (equal up to rounding: XLA fuses
    them differently): the same minibatch rows (each segment's keys are
    ``split(fold_in(key, i), n)``), the optimizer state reset at each segment's start as each
    `fit` call starts afresh. One `lax.scan` over all ``sum(segments)`` steps traces and
    compiles the step once instead of once per segment.
    """
    num_classes, batch_size = recipe.num_classes, recipe.batch_size
    segments = tuple(int(n) for n in segments)
    total = sum(segments)
    example_weight = _example_weight(
        labels, num_classes, features.dtype, sample_weight=None, class_balanced=False
    )
    tx = _optimizer(recipe.optimizer, rates.learning_rate, "constant", total)
    step = _step_fn(features, labels, example_weight, tx, recipe, rates.l2, None)
    step_keys = jnp.concatenate(
        [jax.random.split(jax.random.fold_in(key, i), n) for i, n in enumerate(segments)]
    )
    xs = (
        _draw_minibatches(step_keys, example_weight, batch_size=batch_size)
        if batch_size
        else step_keys
    )
    bounds = np.cumsum(segments)
    starts = np.isin(np.arange(total), bounds - np.asarray(segments))
    ends = np.isin(np.arange(total), bounds - 1)
    segment = np.repeat(np.arange(len(segments)), segments)

    def chain_step(carry, x):
        head, opt_state, out = carry
        idx, start, end, i = x
        opt_state = jax.tree_util.tree_map(
            lambda fresh, old: jnp.where(start, fresh, old), tx.init(head), opt_state
        )
        (head, opt_state), _ = step((head, opt_state), idx)
        out = jax.tree_util.tree_map(lambda o, h: o.at[i].set(jnp.where(end, h, o[i])), out, head)
        return (head, opt_state, out), None

    head = heads.zeros(num_classes, features.shape[1], features.dtype)
    out = jax.tree_util.tree_map(lambda x: jnp.zeros((len(segments), *x.shape), x.dtype), head)
    (_, _, out), _ = jax.lax.scan(
        chain_step, (head, tx.init(head), out), (xs, starts, ends, segment)
    )
    return out


# ------------------------------------------------------------------- train larger than memory
# `fit_stream` is `fit` with the features read from the host (`hsfm_jax.data.stream`) instead of
# held on the device: the same objective, optimizer and (for minibatches) the same example
# indices, drawn on the device from the labels alone with `fit`'s per-step keys. One compiled
# program per step kind; the loop over steps is Python's. Buffers are not donated: the state is
# one (C, d) head and its optimizer state, and CPU backends ignore donation with a warning.
_cached_optimizer = functools.lru_cache(_optimizer)
_INDEX_STEPS = 1024  # steps whose minibatch indices are drawn at once: (1024, batch_size) int32


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _minibatch_indices(step_keys, example_weight, *, batch_size):
    """(K, batch_size) int32: the rows `fit`'s scan gathers at the steps of `step_keys` (K,)."""
    return _draw_minibatches(step_keys, example_weight, batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("tx", "l2_bias"))
def _minibatch_step(head, opt_state, features, labels, l2, feature_mask, *, tx, l2_bias):
    weights = jnp.ones((features.shape[0],), features.dtype)
    onehot_t = losses.onehot_columns(labels, head.num_classes, features.dtype)
    grads = _objective_grad(head, features, onehot_t, weights, l2, l2_bias, feature_mask)
    updates, opt_state = tx.update(grads, opt_state, head)
    return jax.tree_util.tree_map(jnp.add, head, updates), opt_state


@jax.jit
def _block_grad(head, features, labels, weights, feature_mask):
    """`_data_grad` over one block (padding rows have w_i = 0)."""
    onehot_t = losses.onehot_columns(labels, head.num_classes, features.dtype)
    return _data_grad(head, features, onehot_t, weights, feature_mask)


@functools.partial(jax.jit, static_argnames=("tx", "l2_bias"))
def _full_batch_step(head, opt_state, data_grads, total_weight, l2, *, tx, l2_bias):
    """`fit`'s full-batch step from the summed block gradients of the data term."""
    grads = _penalized(head, data_grads, total_weight, l2, l2_bias)
    updates, opt_state = tx.update(grads, opt_state, head)
    return jax.tree_util.tree_map(jnp.add, head, updates), opt_state


class Reading(NamedTuple):
    """How `fit_stream` reads a host split.

    Attributes:
      block_rows: rows per full-batch block.
      prefetch_depth: > 0 reads that many batches ahead in a thread (`stream.prefetch`). Off by
        default: on 2 shared cores the read (a cast) competes with XLA's threads and the thread
        gains nothing (minibatch) or loses (full batch); benchmarks/results/stream_erm_cpu.json.
    """

    block_rows: int = 16384
    prefetch_depth: int = 0


DEFAULT_READING = Reading()


def fit_stream(
    train: Split,
    key: jax.Array,
    recipe: Recipe,
    rates: Rates,
    *,
    init: heads.LinearHead | None = None,
    sample_weight: np.ndarray | None = None,
    feature_mask: jnp.ndarray | None = None,
    reading: Reading = DEFAULT_READING,
) -> heads.LinearHead:
    """`fit` (same arguments and result) on a host split read minibatch by minibatch.

    Minibatch steps read only their `batch_size` rows; a full-batch step reads train in blocks
    of `reading.block_rows` and sums their gradients, so device memory holds one block. Results
    equal `fit`'s to float rounding (the same indices; sums in another order).

    Args:
      train: host split (features (N, d), possibly a memmap; labels (N,)), cast to its `dtype`
        (as `Split.to_arrays`).
    """
    num_classes, steps, batch_size = recipe.num_classes, recipe.steps, recipe.batch_size
    l2_bias, dtype = recipe.l2_bias, train.dtype
    block_rows, prefetch_depth = reading
    d = train.features.shape[1]
    labels = jnp.asarray(train.labels, jnp.int32)
    head = heads.zeros(num_classes, d, dtype) if init is None else init
    example_weight = _example_weight(
        labels,
        num_classes,
        dtype,
        sample_weight=sample_weight,
        class_balanced=recipe.class_balanced,
    )
    # cached: the step programs take `tx` as a static argument, so one per recipe compiles
    tx = _cached_optimizer(recipe.optimizer, float(rates.learning_rate), recipe.lr_schedule, steps)
    opt_state = tx.init(head)
    l2 = jnp.asarray(rates.l2, dtype)
    step_keys = jax.random.split(key, steps)
    feed = (lambda items: stream.prefetch(items, prefetch_depth)) if prefetch_depth else iter
    if batch_size:

        def batches():
            for start in range(0, steps, _INDEX_STEPS):
                indices = np.asarray(
                    _minibatch_indices(
                        step_keys[start : start + _INDEX_STEPS],
                        example_weight,
                        batch_size=batch_size,
                    )
                )
                for rows in indices:
                    yield stream.rows(train, rows, dtype), train.labels[rows]

        for features, batch_labels in feed(batches()):
            head, opt_state = _minibatch_step(
                head, opt_state, features, batch_labels, l2, feature_mask, tx=tx, l2_bias=l2_bias
            )
    else:
        weight_host = np.asarray(example_weight)
        total_weight = jnp.sum(example_weight)

        def blocks():
            for i, (features, valid) in enumerate(stream.blocks(train, block_rows, dtype)):
                rows = slice(i * block_rows, (i + 1) * block_rows)
                block_labels = np.zeros((block_rows,), np.int32)
                block_weights = np.zeros((block_rows,), weight_host.dtype)
                block_labels[valid] = train.labels[rows]
                block_weights[valid] = weight_host[rows]
                yield features, block_labels, block_weights

        for _ in range(steps):
            loss_grads = jax.tree_util.tree_map(jnp.zeros_like, head)
            for block in feed(blocks()):
                grads = _block_grad(head, *block, feature_mask)
                loss_grads = jax.tree_util.tree_map(jnp.add, loss_grads, grads)
            head, opt_state = _full_batch_step(
                head, opt_state, loss_grads, total_weight, l2, tx=tx, l2_bias=l2_bias
            )
    if feature_mask is not None:
        head = head.replace(weight=head.weight * feature_mask)
    return head


# ------------------------------------------------------------------------- the method contract


def default_config() -> ml_collections.ConfigDict:
    """ERM linear head on train features."""
    return ml_collections.ConfigDict(
        dict(
            optimizer="adam",
            learning_rate=1e-3,
            steps=1000,
            epochs=0,  # > 0: steps = epochs * ceil(N_train / batch_size) instead of `steps`
            l2=0.0,
            batch_size=0,  # 0: full batch
            class_balanced=False,
            # GiB train's features may take on the device; a larger train split is read from the
            # host memmap minibatch by minibatch (`fit_stream`, `hsfm_jax.data.stream`). Every method
            # reads it from here (one ERM recipe per run); 0 streams always.
            train_memory_budget_gb=4.0,
        )
    )


def check(config: ml_collections.ConfigDict, data: FeatureSet) -> dict:
    """Raises ValueError naming the first bad field of the ERM recipe (``erm.<field>``: one
    recipe per run, which every method that starts from ERM checks here); nothing to resolve."""
    prefix = NAME
    checks.check_choice(prefix, config, "optimizer", optim.OPTIMIZERS)
    checks.check_value(prefix, config, "learning_rate", "positive")
    checks.check_value(prefix, config, "epochs", "non_negative_int")
    checks.check_value(
        prefix, config, "steps", "non_negative_int" if config.epochs > 0 else "positive_int"
    )
    checks.check_value(prefix, config, "l2", "non_negative")
    checks.check_value(prefix, config, "batch_size", "non_negative_int")
    checks.check_bool(prefix, config, "class_balanced")
    checks.check_value(prefix, config, "train_memory_budget_gb", "non_negative")
    del data
    return {}


def num_steps(config: ml_collections.ConfigDict, num_train: int) -> int:
    """`config.steps`, or `epochs * ceil(N_train / batch_size)` (one step per epoch in full batch)
    when `config.epochs` > 0, as the paper states head training in epochs (Sec. 8.2)."""
    if config.get("epochs", 0) > 0:
        return config.epochs * (-(-num_train // config.batch_size) if config.batch_size else 1)
    return config.steps


def from_config(
    config: ml_collections.ConfigDict, data: FeatureSet, *, num_train: int | None = None
) -> tuple[Recipe, Rates]:
    """The `Recipe` and `Rates` of a checked ERM config (the only place one is read) for
    `data`'s classes, training on `num_train` examples (default: all of train)."""
    num_train = data.train.num_examples if num_train is None else num_train
    recipe = Recipe(
        num_classes=data.num_classes,
        optimizer=config.optimizer,
        steps=num_steps(config, num_train),
        batch_size=int(config.batch_size),
        class_balanced=bool(config.class_balanced),
    )
    return recipe, Rates(float(config.learning_rate), float(config.l2))


@program_cache.jit(static_argnames=("recipe",))
def fit_seeds(
    features: jnp.ndarray, labels: jnp.ndarray, keys: jax.Array, rates: Rates, *, recipe: Recipe
) -> heads.LinearHead:
    """`fit` for each key (S,): heads (S, C, d), one program.

    The seeds run in sequence (``lax.map``), not ``vmap``ped: each head is then bit for bit the
    one `fit` (and `fit_stream`) gives for its key alone, and batching the seeds measured no
    faster (5 seeds of 1,000 minibatch steps at d = 32: 22 ms vmapped, 24 ms in sequence; 3
    seeds at C = 200, d = 2048: 1.34 s vmapped, 1.22 s in sequence)."""
    return jax.lax.map(lambda key: fit(features, labels, key, recipe, rates), keys)


def fit_heads(
    train: SplitArrays, recipe: Recipe, rates: Rates, keys: jax.Array
) -> heads.LinearHead:
    """ERM heads (S, C, d): one per key when minibatched, else one deterministic head (1, C, d)."""
    keys = keys if recipe.batch_size else keys[:1]
    return fit_seeds(train.features, train.labels, keys, rates, recipe=recipe)


def memory_budget_gb(config: ml_collections.ConfigDict) -> float:
    """The ERM recipe's `train_memory_budget_gb` (the default where a config predates it)."""
    return float(config.get("train_memory_budget_gb", default_config().train_memory_budget_gb))


def fit_heads_split(
    train: Split, config: ml_collections.ConfigDict, data: FeatureSet, keys: jax.Array
) -> heads.LinearHead:
    """`fit_heads` of the ERM config `config` on a host split of `data`: on the device when its
    features fit the recipe's `train_memory_budget_gb`, else streamed from the host
    (`fit_stream`, one seed at a time)."""
    recipe, rates = from_config(config, data, num_train=train.num_examples)
    if stream.fits(train, memory_budget_gb(config), train.dtype):
        return fit_heads(train.to_arrays(), recipe, rates, keys)
    keys = keys if recipe.batch_size else keys[:1]
    fitted = [fit_stream(train, key, recipe, rates) for key in keys]
    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *fitted)


def streams_train(config: ml_collections.ConfigDict) -> bool:
    """ERM reads a train split over the memory budget from the host (`hsfm_jax.methods`)."""
    del config
    return True


def run(
    data: FeatureSet,
    config: ml_collections.ConfigDict,
    keys: jax.Array,
    *,
    loop: epoch_loop.Options = epoch_loop.PLAIN,
) -> MethodResult:
    """Row "erm": heads (S, C, d), or one head (1, C, d) in full batch (deterministic)."""
    del loop  # no epoch loop
    return MethodResult(rows={NAME: fit_heads_split(data.train, config, data, keys)})


def group_use(config: ml_collections.ConfigDict) -> dict[str, dict[str, bool]]:
    """Which rows read train / val group labels: none (no selection, class labels only)."""
    del config
    return {"erm": {"train": False, "val": False}}
