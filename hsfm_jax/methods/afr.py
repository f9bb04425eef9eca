"""Automatic Feature Reweighting (AFR; Qiu, Potapczynski, Izmailov & Wilson, ICML 2023).

The authors' protocol (AndPotap/afr: ``train_embeddings.py``, ``losses/__init__.py``,
``utils/supervised_utils.py``, and the sweeps of ``notebooks/wb_celeba.ipynb``), on frozen
features:

1. train is split at random (per seed) into D_ERM (``erm_fraction``, the README's
   ``--train_prop=80``) and D_RW (the remaining 20%, ``--train_prop=-20``);
2. an ERM head theta_ERM is trained on D_ERM (``config.erm``: the experiment's ERM recipe);
3. on D_RW, with p_i the ERM head's softmax probability of the true class,
   ``w_i = exp(-gamma p_i) / n_{y_i}`` normalized to sum 1 (``get_exp_weights``, then
   ``rebalance_weights``: class c's weights times N / n_c, then ``normalize_weights``;
   ``class_balance="count"``). ``"sum"`` instead makes every class's weights sum to 1 / C;
   ``"none"`` skips the class factor;
4. the last layer, started from theta_ERM, is retrained on D_RW by full-batch gradient descent
   on ``sum_i w_i CE_i + lambda (||W - W_ERM||^2 + ||b - b_ERM||^2)`` (``take_step``; the
   notebook's sweeps clip the gradient to global norm 1, ``grad_clip``);
5. gamma and lambda are chosen on the validation metric, each grid point early-stopped at its
   best checkpoint (the notebook's ``early_stop='wga'``; it scores every epoch = step, here every
   ``eval_every`` steps). No train group label is read. Row ``"afr"``.

Everything after the host-side scaler is one jitted program: seeds are ``vmap``ped (they differ
in the D_ERM / D_RW split and, with a minibatch ERM recipe, its draws), and so is the
(gamma x lambda) grid, which shares each seed's ERM head and D_RW. Deviations: both stages train
on standardized features by default (``standardize``; the released code uses raw embeddings);
the split is a plain random permutation, not class-stratified.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hsfm_jax.core import checks, heads, losses, optim, sampling, scaling, selection
from hsfm_jax.data import buckets
from hsfm_jax.data.features import FeatureSet, to_device
from hsfm_jax.methods import common, erm
from hsfm_jax.methods.contract import MethodResult
from hsfm_jax.runtime import epoch_loop, program_cache

NAME = "afr"
CLASS_BALANCE = ("count", "sum", "none")


def default_config() -> ml_collections.ConfigDict:
    """AFR defaults (Qiu et al., 2023; AndPotap/afr README and notebooks/wb_celeba.ipynb)."""
    config = ml_collections.ConfigDict()
    config.erm_fraction = 0.8  # share of train for the ERM stage (README: --train_prop=80)
    # gamma: the Waterbirds sweep is linspace(4, 20, 33), CelebA linspace(1, 3, 10), the
    # robustness-to-gamma plot linspace(0, 30, 11). Here a coarser cover of [0, 20] (0: the ERM
    # head retrained class-balanced): every grid point is a full retraining.
    config.gamma_grid = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 14.0, 20.0)
    # lambda (reg_coeff): the Waterbirds sweep {0, 0.1, 0.2, 0.3}; CelebA logspace(-3, -1, 3).
    config.reg_grid = (0.0, 0.1, 0.2, 0.3)
    config.class_balance = "count"  # rebalance_weights (default on in train_embeddings.py)
    config.optimizer = "sgd"  # notebook: SGD, momentum 0, no weight decay
    config.learning_rate = 1e-2  # notebook (Waterbirds); its CelebA sweep uses 2e-2
    config.steps = 500  # full-batch epochs (Waterbirds 500; CelebA 1000)
    config.grad_clip = 1.0  # global-norm clip of the notebook's sweeps (0: none)
    config.eval_every = 10  # steps between checkpoints scored for early stopping (0: final)
    # Standardized features (folded into the head), as DFR, so one learning rate serves
    # backbones of any feature scale (the released code retrains on raw ResNet-50 embeddings).
    config.standardize = True
    config.selection_metric = "auto"  # WGA with groups, else mean acc (label-free: worst-class)
    # The ERM stage: the experiment's ERM recipe, which `methods.method_config` puts here, so
    # AFR's theta_ERM is the ERM row's recipe (on D_ERM; ``epochs`` count |D_ERM|).
    config.erm = erm.default_config()
    return config


_FIELDS = tuple(default_config().keys())


def check(config: ml_collections.ConfigDict, data: FeatureSet) -> dict:
    """Raises ``ValueError`` naming ``afr.<field>`` (``afr.erm.<field>``) for a bad setting."""
    checks.check_known(NAME, config, _FIELDS)
    checks.check_value(NAME, config, "erm_fraction", "fraction")
    checks.check_grid(NAME, config, "gamma_grid", "non_negative")
    checks.check_grid(NAME, config, "reg_grid", "non_negative")
    checks.check_choice(NAME, config, "class_balance", CLASS_BALANCE)
    checks.check_choice(NAME, config, "optimizer", optim.OPTIMIZERS)
    checks.check_value(NAME, config, "learning_rate", "positive")
    checks.check_value(NAME, config, "steps", "positive_int")
    checks.check_value(NAME, config, "grad_clip", "non_negative")
    checks.check_eval_every(NAME, config, "steps")
    checks.check_bool(NAME, config, "standardize")
    if not isinstance(config.get("erm"), ml_collections.ConfigDict):
        raise ValueError(f"{NAME}.erm must be a ConfigDict (the ERM recipe, `erm.default_config`)")
    erm.check(config.erm, data)
    n_erm, n_rw = split_sizes(data.train.num_examples, config.erm_fraction)
    if min(n_erm, n_rw) < data.num_classes:
        raise ValueError(
            f"{NAME}.erm_fraction={config.erm_fraction} splits {data.train.num_examples} train "
            f"examples into {n_erm} (ERM) and {n_rw} (reweighting); each needs >= "
            f"{data.num_classes} (the number of classes)"
        )
    return {"selection_metric": checks.check_selection(NAME, config, data)}


def split_sizes(num_train: int, erm_fraction: float) -> tuple[int, int]:
    """(|D_ERM|, |D_RW|) for `num_train` examples."""
    n_erm = int(round(erm_fraction * num_train))
    return n_erm, num_train - n_erm


# ----------------------------------------------------------------------------- weights, loss


def afr_weights(
    logits: jnp.ndarray,
    labels: jnp.ndarray,
    gamma: jnp.ndarray,
    *,
    num_classes: int,
    class_balance: str = "count",
) -> jnp.ndarray:
    """AFR's example weights (N,), summing to 1 (module docstring, step 3).

    Args:
      logits: (N, C) of the ERM head on D_RW; labels: (N,) int.
      gamma: () the temperature gamma >= 0.
      class_balance: "count" (x 1 / n_y, the released code), "sum" (each class's weights sum to
        1 / C), or "none".
    """
    valid = buckets.valid(labels)  # padding rows (label -1) weigh 0
    p_true = jnp.exp(-losses.per_example_cross_entropy(logits=logits, labels=labels))
    weights = jnp.where(valid, jnp.exp(-gamma * p_true), 0.0)
    one_hot = (labels[:, None] == jnp.arange(num_classes)).astype(weights.dtype)
    if class_balance == "count":
        weights = weights / jnp.where(valid, jnp.sum(one_hot, axis=0) @ one_hot.T, 1.0)
    elif class_balance == "sum":
        weights = weights / jnp.where(valid, (weights @ one_hot) @ one_hot.T, 1.0)
    elif class_balance != "none":
        raise ValueError(f"{NAME}.class_balance must be one of {CLASS_BALANCE}")
    return weights / jnp.sum(weights)


def objective(
    head: heads.LinearHead,
    features: jnp.ndarray,
    labels: jnp.ndarray,
    weights: jnp.ndarray,
    reference: heads.LinearHead,
    reg: jnp.ndarray,
) -> jnp.ndarray:
    """``sum_i w_i CE_i + reg (||W - W_ref||^2 + ||b - b_ref||^2)`` (``take_step``)."""
    per_example = losses.per_example_cross_entropy(
        logits=heads.apply(head, features), labels=labels
    )
    pull = jnp.sum((head.weight - reference.weight) ** 2) + jnp.sum(
        (head.bias - reference.bias) ** 2
    )
    return jnp.sum(weights * per_example) + reg * pull


def objective_grad(
    head: heads.LinearHead,
    features: jnp.ndarray,
    onehot_t: jnp.ndarray,
    weights: jnp.ndarray,
    reference: heads.LinearHead,
    reg: jnp.ndarray,
) -> heads.LinearHead:
    """The gradient of `objective` in closed form: `losses.weighted_ce_grad` (on the transposed
    (C, N) logits, about 3x faster over the vmapped grid than ``jax.grad``, which gives the same
    values: tests/methods/test_afr.py) plus ``2 reg (W - W_ref)`` and ``2 reg (b - b_ref)``.

    Args:
      head: weight (C, d), bias (C,); features: (N, d); onehot_t: (C, N) one-hot labels,
        transposed; weights: (N,); reference: the pull-back head; reg: () lambda.
    """
    data = losses.weighted_ce_grad(head, features, onehot_t, weights)
    return heads.LinearHead(
        weight=data.weight + 2.0 * reg * (head.weight - reference.weight),
        bias=data.bias + 2.0 * reg * (head.bias - reference.bias),
    )


def make_optimizer(optimizer: str, learning_rate, grad_clip: float) -> optax.GradientTransformation:
    """`optim.make`, after a global-norm clip when ``grad_clip > 0``."""
    tx = optim.make(optimizer, learning_rate)
    return optax.chain(optax.clip_by_global_norm(grad_clip), tx) if grad_clip > 0 else tx


# ----------------------------------------------------------------------------- runs


class Settings(NamedTuple):
    """Static settings of an AFR run (changing one compiles a new program).

    Attributes:
      num_classes, num_groups: of the data; metric: the selection metric.
      num_reweight: rows read as D_RW, at least its size for every train size of the row
        bucket (``ceil((1 - erm_fraction) * rows + 0.5)``); those past D_RW weigh 0.
      class_balance: of `afr_weights`; optimizer, steps, grad_clip, eval_every: the retraining.
      erm: the ERM stage's `erm.Recipe` (the experiment's ERM recipe, on D_ERM).
    """

    num_classes: int
    num_groups: int
    metric: str
    num_reweight: int
    class_balance: str
    optimizer: str
    steps: int
    grad_clip: float
    eval_every: int
    erm: erm.Recipe


class Grid(NamedTuple):
    """The traced values of an AFR run (a pytree).

    Attributes:
      gamma: (Γ,) temperatures; reg: (L,) lambdas; learning_rate: () the retraining step size;
      erm: the ERM stage's `erm.Rates`; num_erm: () int32 |D_ERM| (traced: another train size
      in the same row bucket runs the same program).
    """

    gamma: jnp.ndarray
    reg: jnp.ndarray
    learning_rate: jnp.ndarray
    erm: erm.Rates
    num_erm: jnp.ndarray


def from_config(config: ml_collections.ConfigDict, data: FeatureSet) -> tuple[Settings, Grid]:
    """The `Settings` and `Grid` (on the device, in the data's dtype) of a checked AFR config."""
    num_erm, _ = split_sizes(data.train.num_examples, config.erm_fraction)
    recipe, erm_rates = erm.from_config(config.erm, data, num_train=num_erm)
    rows = data.train.num_rows
    settings = Settings(
        num_reweight=min(rows, math.ceil((1 - config.erm_fraction) * rows + 0.5)),
        num_classes=data.num_classes,
        num_groups=data.num_groups,
        metric=config.selection_metric,
        class_balance=config.class_balance,
        optimizer=config.optimizer,
        steps=int(config.steps),
        grad_clip=float(config.grad_clip),
        eval_every=int(config.eval_every),
        erm=recipe,
    )
    on_device = lambda values: to_device(values, data.dtype)
    grid = Grid(
        gamma=on_device(config.gamma_grid),
        reg=on_device(config.reg_grid),
        learning_rate=on_device(config.learning_rate),
        erm=erm.Rates(*map(on_device, erm_rates)),
        num_erm=to_device(num_erm, jnp.int32),
    )
    return settings, grid


def afr_single(key: jax.Array, inputs: common.Inputs, grid: Grid, *, settings: Settings) -> dict:
    """AFR for one seed over the whole (gamma x lambda) grid.

    Args:
      key: PRNG key (the D_ERM / D_RW split and the ERM stage's minibatches).
      inputs: train (standardized when the run standardizes), the selection split and the
        scaler to fold (`common.Inputs`).

    Returns:
      dict with ``erm_head`` (C, d) raw-feature theta_ERM, ``reweight_rows`` (num_reweight,)
      the train rows of D_RW first, ``weights`` (Γ, num_reweight) (0 past D_RW), and per grid
      point (P = Γ * L, gamma
      slowest) ``head`` (P, C, d) best checkpoint on raw features, ``score`` (P,),
      ``checkpoint`` (P,), ``scores`` (P, K).
    """
    s = settings
    features, labels, mean, scale = inputs.features, inputs.labels, inputs.mean, inputs.scale
    num_classes, n = s.num_classes, features.shape[0]
    k_split, k_erm = jax.random.split(key)
    # jax.random.permutation(k_split, N) of the real rows (the padding rows after them): D_ERM is
    # its first num_erm rows, D_RW the real rows after them. num_erm is traced, so D_RW is read
    # as `num_reweight` rows from position num_erm of the order, those past the real rows
    # labelled -1 (weight 0). D_ERM as 0/1 example weights over all of train rather than a
    # gathered copy: the seeds' ERM heads then share one (N, d) operand, so each step reads the
    # features once for all seeds (the stage is memory-bound: C is small).
    num_real = buckets.count(labels)
    order = sampling.permutation(k_split, num_real, n)
    rank = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    in_erm = (rank < grid.num_erm).astype(features.dtype)
    erm_head = erm.fit(features, labels, k_erm, s.erm, grid.erm, sample_weight=in_erm)
    padded_order = jnp.concatenate([order, jnp.zeros((s.num_reweight,), order.dtype)])
    rw_rows = jax.lax.dynamic_slice(padded_order, (grid.num_erm,), (s.num_reweight,))
    in_rw = grid.num_erm + jnp.arange(s.num_reweight) < num_real
    x, y = features[rw_rows], jnp.where(in_rw, labels[rw_rows], -1)
    erm_logits = heads.apply(erm_head, x)
    weights = jax.vmap(
        lambda g: afr_weights(
            erm_logits, y, g, num_classes=num_classes, class_balance=s.class_balance
        )
    )(grid.gamma)  # (Γ, num_reweight), 0 past D_RW

    tx = make_optimizer(s.optimizer, grid.learning_rate, s.grad_clip)
    onehot_t = losses.onehot_columns(y, num_classes, x.dtype)  # (C, num_reweight)
    raw = lambda state: scaling.fold_scaler(state[0], mean, scale)
    score_of = functools.partial(
        selection.score,
        split=inputs.select,
        num_classes=num_classes,
        num_groups=s.num_groups,
        metric=s.metric,
    )

    def retrain(w, reg):
        def step(state, _):
            head, opt_state = state
            updates, opt_state = tx.update(
                objective_grad(head, x, onehot_t, w, erm_head, reg), opt_state, head
            )
            return (jax.tree_util.tree_map(jnp.add, head, updates), opt_state), None

        advance = lambda state, keys: jax.lax.scan(step, state, keys)[0]
        out = common.best_over_checkpoints(
            advance,
            (erm_head, tx.init(erm_head)),
            common.chunk_keys(jax.random.key(0), s.steps, s.eval_every),  # full batch: unused
            head_of=raw,
            score_of=score_of,
            loss_of=functools.partial(common.loss, split=inputs.select),
        )
        del out["state"]
        return out

    over_reg = jax.vmap(retrain, in_axes=(None, 0))
    out = jax.vmap(over_reg, in_axes=(0, None))(weights, grid.reg)  # (Γ, L, ...)
    out = jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), out)
    out["erm_head"] = scaling.fold_scaler(erm_head, mean, scale)
    out["reweight_rows"] = rw_rows
    out["weights"] = weights
    return out


@program_cache.jit(static_argnames=("settings",))
def run_grid(keys: jax.Array, inputs: common.Inputs, grid: Grid, *, settings: Settings) -> dict:
    """`afr_single` vmapped over seeds (S,), then the best grid point per seed; `inputs` on raw
    features (standardized here, in the program).

    Returns the dict of `afr_single` with a leading (S,) axis, plus ``selected_head``
    (S, C, d) and ``selected`` (S,) the chosen grid index.
    """
    inputs = common.standardized(inputs)
    single = lambda k: afr_single(k, inputs, grid, settings=settings)
    return common.select_best(jax.vmap(single)(keys))


def run(
    data: FeatureSet,
    config: ml_collections.ConfigDict,
    keys: jax.Array,
    *,
    loop: epoch_loop.Options = epoch_loop.PLAIN,
) -> MethodResult:
    """Row "afr": the best grid point's best checkpoint per seed, heads (S, C, d).

    Returns:
      `MethodResult` whose ``info`` is the output of `run_grid` (ERM heads, D_RW rows, weights,
      every grid point's scores; leading seed axis) plus ``grid`` (``gamma`` and ``reg`` per
      grid point, (P,) each). `loop` is unused (no epoch loop).
    """
    del loop
    settings, grid = from_config(config, data)
    out = run_grid(keys, common.inputs(data, config.standardize), grid, settings=settings)
    num_rw = data.train.num_examples - int(grid.num_erm)  # D_RW's rows, not those past it
    out["reweight_rows"] = np.asarray(out["reweight_rows"])[:, :num_rw]
    out["weights"] = np.asarray(out["weights"])[..., :num_rw]
    g_mesh, r_mesh = np.meshgrid(config.gamma_grid, config.reg_grid, indexing="ij")
    out["grid"] = {"gamma": g_mesh.ravel(), "reg": r_mesh.ravel()}
    curves = common.checkpoint_curves(out, int(config.eval_every), int(config.steps))
    return MethodResult(rows={NAME: out["selected_head"]}, info=out, curves=curves)


streams_train = common.streams_train


def group_use(config: ml_collections.ConfigDict) -> dict[str, dict[str, bool]]:
    """Which rows read train / val group labels, for a resolved config: val when selecting by WGA."""
    return common.one_row_group_use(NAME, config, train=False)
