"""Group DRO (Sagawa, Koh, Hashimoto & Liang, ICLR 2020) as a linear head on frozen features.

Online group DRO (paper Alg. 1, implemented as ``LossComputer.compute_robust_loss`` in the
authors' ``loss.py``, kohpangwei/group_DRO). Each step, on the batch (all of train, or a
minibatch drawn group-balanced as the official commands' ``--reweight_groups``):

1. the mean cross-entropy ``L_g`` of every group (0 for a group absent from the batch, as the
   code's ``compute_group_avg``);
2. exponentiated-gradient ascent on the group weights,
   ``q_g <- q_g exp(eta_q (L_g + C / sqrt(n_g)))``, ``q <- q / sum(q)``, with ``n_g`` the train
   count of group g and C the group adjustment of Sec. 3.3 (kept in log space, which is the same
   update without overflow);
3. one optimizer step on the head for ``sum_g q_g L_g + (l2 / 2) ||theta||^2`` with the new q
   (the code updates q first, then backpropagates the robust loss; PyTorch weight decay penalizes
   the bias too, ``l2_bias``).

q starts uniform over the groups present in train; a group absent from train keeps q = 0 (the
code would divide by sqrt(0)). Training is on standardized features (``standardize``; the
scaler is folded into the returned head, as DFR's).

Model selection (row ``"group_dro"``): each grid point keeps its best checkpoint by the
validation metric, scored every ``eval_every`` steps (the code's ``--save_best`` keeps the epoch
with the best validation worst-group accuracy; the paper shows early stopping as the other
regularizer, Sec. 3.2), and the grid point with the best score wins (the first on ties).

The grid (eta_q x l2 x C) is ``vmap``ped in one program; so are seeds, which only differ in the
minibatch draws: a full-batch run is deterministic, so it is computed once and repeated.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from hsfm_jax.core import checks, heads, losses, optim, sampling, scaling, selection
from hsfm_jax.data import buckets
from hsfm_jax.data.features import FeatureSet, to_device
from hsfm_jax.methods import common
from hsfm_jax.methods.contract import MethodResult
from hsfm_jax.runtime import epoch_loop, program_cache

NAME = "group_dro"


def default_config() -> ml_collections.ConfigDict:
    """Group DRO defaults; grids follow the paper (Sagawa et al., 2020) where it gives one."""
    config = ml_collections.ConfigDict()
    # eta_q: the paper and the code (--robust_step_size) use 0.01; a head takes far fewer steps
    # than the paper's 300 (Waterbirds) / 50 (CelebA) epochs, so larger steps are searched too.
    config.step_size_grid = (0.01, 0.1, 1.0)
    # Weight decay: the paper's "standard" 1e-4 and "strong" 0.1 (CelebA) / 1.0 (Waterbirds).
    config.l2_grid = (1e-4, 0.1, 1.0)
    # Group adjustment C (Sec. 3.3; the paper searches {0, 1, 2, 3, 4, 5}); 0 is plain group DRO.
    config.adjustment_grid = (0.0,)
    # SGD with momentum 0.9, learning rate 1e-3 and minibatches of 128: the official Waterbirds
    # command. On standardized backbone-sized features (d ~ 2048) this is a stable step; small
    # unit-scale problems (hsfm_jax.data.synthetic, d = 32) want a larger one.
    config.optimizer = "momentum"
    config.learning_rate = 1e-3
    config.steps = 1000
    config.batch_size = 128  # 0: full batch (deterministic: computed once for all seeds)
    config.group_balanced = True  # minibatches drawn group-balanced (--reweight_groups)
    config.l2_bias = True  # PyTorch weight_decay penalizes the bias too
    config.eval_every = 50  # steps between checkpoints scored for early stopping (0: final only)
    config.standardize = True  # train on standardized features (folded into the head)
    config.selection_metric = "auto"  # "auto": WGA
    return config


_FIELDS = tuple(default_config().keys())


def check(config: ml_collections.ConfigDict, data: FeatureSet) -> dict:
    """Raises ``ValueError`` naming ``group_dro.<field>`` for a bad setting or missing labels."""
    checks.check_known(NAME, config, _FIELDS)
    checks.check_grid(NAME, config, "step_size_grid", "non_negative")
    checks.check_grid(NAME, config, "l2_grid", "non_negative")
    checks.check_grid(NAME, config, "adjustment_grid", "non_negative")
    checks.check_choice(NAME, config, "optimizer", optim.OPTIMIZERS)
    checks.check_value(NAME, config, "learning_rate", "positive")
    checks.check_value(NAME, config, "steps", "positive_int")
    checks.check_value(NAME, config, "batch_size", "non_negative_int")
    for field in ("group_balanced", "l2_bias", "standardize"):
        checks.check_bool(NAME, config, field)
    checks.check_eval_every(NAME, config, "steps")
    if data.group_labels == "none":
        raise ValueError(
            f"{NAME} reads train group labels, which group_labels='none' removes; "
            "drop it from config.methods"
        )
    if data.num_groups == 0:
        raise ValueError(f"{NAME} needs group labels on train (num_groups=0)")
    unknown = int(np.sum(data.train.groups < 0))
    if unknown:
        raise ValueError(
            f"{NAME} needs group labels on train: {unknown} of {data.train.num_examples} "
            "train examples have group -1"
        )
    return {"selection_metric": checks.check_selection(NAME, config, data)}


# ----------------------------------------------------------------------------- one step


def group_losses(
    per_example: jnp.ndarray, groups: jnp.ndarray, num_groups: int
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Mean loss per group (0 where a group has no row) and row counts, both (G,).

    A one-hot product rather than ``segment_sum``: XLA:CPU runs the scatter serially, and under
    the grid's ``vmap`` it was most of a step's time.
    """
    one_hot = (groups[:, None] == jnp.arange(num_groups)).astype(per_example.dtype)
    counts = jnp.sum(one_hot, axis=0)
    return (per_example @ one_hot) / jnp.maximum(counts, 1.0), counts


def update_log_weights(
    log_q: jnp.ndarray,
    group_loss: jnp.ndarray,
    *,
    step_size: jnp.ndarray,
    adjustment: jnp.ndarray,
    group_counts: jnp.ndarray,
) -> jnp.ndarray:
    """log of ``q * exp(eta_q (L_g + C / sqrt(n_g)))`` normalized (paper Alg. 1; Sec. 3.3).

    Args:
      log_q: (G,) current log group weights (-inf for groups absent from train).
      group_loss: (G,) mean loss per group on the batch.
      step_size: () eta_q.
      adjustment: () C.
      group_counts: (G,) train examples per group.
    """
    adjusted = group_loss + adjustment / jnp.sqrt(jnp.maximum(group_counts, 1.0))
    log_q = log_q + step_size * jax.lax.stop_gradient(adjusted)
    return log_q - jax.nn.logsumexp(log_q)


class State(struct.PyTreeNode):
    """Training state of one grid point: head, optimizer state, log group weights (G,)."""

    head: heads.LinearHead
    opt_state: object
    log_q: jnp.ndarray


class Settings(NamedTuple):
    """Static settings of a GroupDRO run (changing one compiles a new program): the data's
    classes and groups, the selection metric, the head's optimizer, steps and minibatches,
    checkpoint spacing (``eval_every``, 0: the final head only)."""

    num_classes: int
    num_groups: int
    metric: str
    optimizer: str
    steps: int
    batch_size: int
    group_balanced: bool
    l2_bias: bool
    eval_every: int


class Point(NamedTuple):
    """One grid point's traced values (a pytree; (P,) each over the grid): eta_q, the weight
    decay and the group adjustment C."""

    step_size: jnp.ndarray
    l2: jnp.ndarray
    adjustment: jnp.ndarray


def from_config(
    config: ml_collections.ConfigDict, data: FeatureSet
) -> tuple[Settings, Point, jnp.ndarray]:
    """(`Settings`, the grid as a `Point` of (P,) arrays, the head's learning rate ()) of a
    checked GroupDRO config, on the device in the data's dtype."""
    settings = Settings(
        num_classes=data.num_classes,
        num_groups=data.num_groups,
        metric=config.selection_metric,
        optimizer=config.optimizer,
        steps=int(config.steps),
        batch_size=int(config.batch_size),
        group_balanced=bool(config.group_balanced),
        l2_bias=bool(config.l2_bias),
        eval_every=int(config.eval_every),
    )
    grid = Point(**{k: to_device(v, data.dtype) for k, v in grid_points(config).items()})
    return settings, grid, to_device(config.learning_rate, data.dtype)


def make_step(
    inputs: common.Inputs, group_counts: jnp.ndarray, point: Point, tx, *, settings: Settings
):
    """step(state, key) -> state: one group DRO update (module docstring, steps 1-3) on
    ``inputs``' train rows (labels, groups: (N,) int32), group_counts (G,) their train counts."""
    features, labels, groups = inputs.features, inputs.labels, inputs.groups
    step_size, l2, adjustment = point
    num_groups, batch_size = settings.num_groups, settings.batch_size
    l2_bias = settings.l2_bias
    valid = buckets.valid(labels)  # padding rows (`hsfm_jax.data.buckets`) are never drawn
    n = buckets.count(labels)  # the real rows come first
    if settings.group_balanced:
        sample_p = jnp.where(valid, 1.0 / jnp.maximum(group_counts[groups], 1.0), 0.0)
        sample_p = sample_p / jnp.sum(sample_p)
    else:
        sample_p = None

    def step(state: State, key: jax.Array) -> State:
        if batch_size:
            idx = (
                # jax.random.choice(key, n, (batch_size,)) with n traced: the same draws
                jax.random.randint(key, (batch_size,), 0, n)
                if sample_p is None
                else sampling.choice(key, sample_p, (batch_size,))  # = jax.random.choice's
            )
            x, y, g = features[idx], labels[idx], groups[idx]
        else:
            x, y, g = features, labels, groups

        onehot_t = losses.onehot_columns(y, state.head.num_classes, x.dtype)  # (C, B)
        per_example = losses.per_example_cross_entropy_columns(state.head, x, onehot_t)
        group_loss, batch_counts = group_losses(per_example, g, num_groups)
        log_q = update_log_weights(
            state.log_q,
            group_loss,
            step_size=step_size,
            adjustment=adjustment,
            group_counts=group_counts,
        )
        # The gradient of sum_g q_g L_g at the current head, in closed form: a weighted CE sum,
        # each row weighted q_g / (its group's rows in the batch).
        row_weight = jnp.where(g >= 0, (jnp.exp(log_q) / jnp.maximum(batch_counts, 1.0))[g], 0.0)
        grads = losses.weighted_ce_grad(state.head, x, onehot_t, row_weight)
        grads = heads.LinearHead(
            grads.weight + l2 * state.head.weight,
            grads.bias + (l2 * state.head.bias if l2_bias else 0.0),
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.head)
        head = jax.tree_util.tree_map(jnp.add, state.head, updates)
        return State(head, opt_state, log_q)

    return step


def initial_state(num_classes: int, feature_dim: int, group_counts: jnp.ndarray, tx) -> State:
    """Zero head, fresh optimizer state, q uniform over the groups present in train."""
    head = heads.zeros(num_classes, feature_dim, group_counts.dtype)
    present = group_counts > 0
    log_q = jnp.where(present, -jnp.log(jnp.sum(present)), -jnp.inf)
    return State(head, tx.init(head), log_q)


# ----------------------------------------------------------------------------- runs


def fit(
    key: jax.Array,
    inputs: common.Inputs,
    group_counts: jnp.ndarray,
    point: Point,
    learning_rate: jnp.ndarray,
    *,
    settings: Settings,
) -> dict:
    """One grid point, one seed: group DRO on `inputs`' (standardized) features, best
    checkpoint.

    Args:
      key: PRNG key (minibatch draws).
      inputs: train (already standardized when the run standardizes), the selection split on
        raw features and the scaler to fold (`common.Inputs`).
      group_counts: (G,) float train counts.
      point: () eta_q, weight decay and C; learning_rate: () the head's step size.

    Returns:
      dict of `common.best_over_checkpoints` (``head`` on raw features, ``score``,
      ``checkpoint``, ``scores``) plus ``final_head`` (raw features) and ``group_weights`` (G,) q
      at the end.
    """
    s = settings
    tx = optim.make(s.optimizer, learning_rate)
    step = make_step(inputs, group_counts, point, tx, settings=s)
    advance = lambda state, keys: jax.lax.scan(lambda st, k: (step(st, k), None), state, keys)[0]
    raw = lambda state: scaling.fold_scaler(state.head, inputs.mean, inputs.scale)
    out = common.best_over_checkpoints(
        advance,
        initial_state(s.num_classes, inputs.features.shape[1], group_counts, tx),
        common.chunk_keys(key, s.steps, s.eval_every),
        head_of=raw,
        score_of=functools.partial(
            selection.score,
            split=inputs.select,
            num_classes=s.num_classes,
            num_groups=s.num_groups,
            metric=s.metric,
        ),
        loss_of=functools.partial(common.loss, split=inputs.select),
    )
    state = out.pop("state")
    return dict(out, final_head=raw(state), group_weights=jnp.exp(state.log_q))


@program_cache.jit(static_argnames=("settings",))
def run_grid(
    keys: jax.Array,
    inputs: common.Inputs,
    group_counts: jnp.ndarray,
    grid: Point,
    learning_rate: jnp.ndarray,
    *,
    settings: Settings,
) -> dict:
    """`fit` vmapped over the grid (P,) and seeds (S,), then the best grid point per seed;
    `inputs` on raw features (standardized here, in the program).

    Returns:
      the dict of `fit` with leading (S, P) axes, plus ``selected_head`` (S, C, d) and
      ``selected`` (S,) the chosen grid index.
    """
    inputs = common.standardized(inputs)

    def one_seed(key):
        point = lambda p: fit(key, inputs, group_counts, p, learning_rate, settings=settings)
        return jax.vmap(point)(grid)

    return common.select_best(jax.vmap(one_seed)(keys))


def grid_points(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """The product grid eta_q x l2 x C as three (P,) float64 arrays (eta_q slowest)."""
    mesh = np.meshgrid(config.step_size_grid, config.l2_grid, config.adjustment_grid, indexing="ij")
    return {
        name: np.asarray(m, np.float64).ravel()
        for name, m in zip(("step_size", "l2", "adjustment"), mesh, strict=True)
    }


def run(
    data: FeatureSet,
    config: ml_collections.ConfigDict,
    keys: jax.Array,
    *,
    loop: epoch_loop.Options = epoch_loop.PLAIN,
) -> MethodResult:
    """Row "group_dro": the best grid point's best checkpoint per seed, heads (S, C, d).

    Returns:
      `MethodResult` whose ``info`` is the output of `run_grid` (every grid point's heads,
      scores, checkpoints and final group weights; leading (S, P) axes; with full batch the one
      deterministic run repeated S times) and ``grid`` (the (P,) grid arrays). `loop` is unused
      (no epoch loop).
    """
    del loop
    settings, grid, learning_rate = from_config(config, data)
    group_counts = to_device(data.train_group_counts(), data.dtype)
    deterministic = settings.batch_size == 0
    out = run_grid(
        keys[:1] if deterministic else keys,
        common.inputs(data, config.standardize),
        group_counts,
        grid,
        learning_rate,
        settings=settings,
    )
    if deterministic:
        out = common.repeat_seeds(out, keys.shape[0])
    out["grid"] = grid_points(config)
    curves = common.checkpoint_curves(out, int(config.eval_every), int(config.steps))
    return MethodResult(rows={NAME: out["selected_head"]}, info=out, curves=curves)


streams_train = common.streams_train


def group_use(config: ml_collections.ConfigDict) -> dict[str, dict[str, bool]]:
    """Which rows read train / val group labels, for a resolved config: train always."""
    return common.one_row_group_use(NAME, config, train=True)
