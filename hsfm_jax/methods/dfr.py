"""Deep Feature Reweighting (DFR; Kirichenko, Izmailov & Wilson, ICLR 2023) on frozen features.

Protocol of the authors' released evaluation script (``dfr_evaluate_spurious.py`` in
PolinaKirichenko/deep_feature_reweighting), re-implemented in JAX:

DFR on validation (row ``"dfr"``, the script's ``dfr_on_validation_tune/_eval`` with
``balance_val=True``, ``add_train=False``, so no class-weight tuning):

1. Tuning. The val set is permuted (seeded); the first ``N // 2`` examples are held out, the rest
   are the fitting half. The fitting half is subsampled group-balanced (every group down to the
   size of its smallest group). A ``StandardScaler`` is fitted **on that balanced subsample** and
   applied to both halves. For each C in {1, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01} an L1 logistic
   regression is fitted and scored by worst-group accuracy on the held-out half; the first best C
   wins (``np.argmax``).
2. Final. A ``StandardScaler`` is fitted **on the whole train split**. With the chosen C, 20
   group-balanced subsamples of the whole val set are fitted and their weights and intercepts
   averaged.

tr-DFR (row ``"tr_dfr"``, ``dfr_train_subset_tune/_eval``): scaler fitted on the whole train
split; C tuned by WGA on the whole val set from one group-balanced subsample of train; final head =
average of 10 fits (the script's ``num_retrains=10``) on group-balanced subsamples of train.

The L1 logistic regressions are `hsfm_jax.solvers.l1_logistic` (scikit-learn's liblinear
objective and method, run to a tolerance on the L1 optimality conditions). The C grid is solved as a regularization path, largest
penalty first, each fit warm-started from the previous one; the refits are ``vmap``ped and
warm-started from the tuning fit at the chosen C; seeds run one after another (``lax.map``), so
one DFR run is one jitted call. FISTA (``solver.method = "fista"``) remains as an alternative,
and ``solver.method = "sklearn"`` runs the fits with scikit-learn's liblinear on the host
(`hsfm_jax.solvers.sklearn_l1`: no solver to compile; docs/compile_time.md says when it is faster).
Binary heads are stored as logits ``(-z/2, z/2)``, so softmax gives the logistic probability.

"Paper DFR" (row ``"paper_dfr"``, the setting the Hard-Spurious-ImageNet paper uses, taken from
DFR's ImageNet-9 notebook): scaler fitted on the (group-balanced) val data the head is trained on,
1000 full-batch SGD steps with learning rate 1 and cosine annealing, L2 with lambda=100 applied as
PyTorch ``weight_decay = 100 / n_train`` to weight and bias.

Datasets without groups (``num_groups == 0``, the fine-grained protocol) balance classes instead
and select C by accuracy (`evaluate.selection_metric_name`); with ``group_labels="none"`` (the
label-free track) they balance classes and select C by worst-class accuracy.

Row buckets (`hsfm_jax.data.buckets`): val and train may come padded, their own rows first, then
rows of label -1. Every program counts the own rows as a traced number and draws what it drew on
the unpadded split: the halves come from `sampling.permutation` (``jax.random.permutation`` of
the own rows), the held-out half is a mask and the fitting half a `jax.lax.dynamic_slice` of the
permutation in its order, and the uniform draws of `balanced_mask` are prefix-invariant, one per
position. No static size depends on the own rows' count: the tuning fits gather the bucket's
largest fitting half (``rows - rows // 2``), the balanced subsamples `gather_size` rows (the
subsample's bucket), both with weight-0 rows past the subsample. So padding changes no result
beyond rounding (tests/methods/test_padding.py), and a split of another size compiles nothing new unless a
balanced subsample's size leaves its bucket; the price is the solver reading those weight-0 rows
(at most a bucket's rounding, or up to `buckets.FLOOR` rows for small subsamples).

Deviations from the script: (a) the solver runs to tolerance; liblinear stops at ``tol=1e-4`` on
its own criterion, and the tr-DFR tuning fits used ``max_iter=20`` (an early-stopped solver),
which we do not reproduce; (b) if a group is absent from the fitting half, balancing uses the
smallest *present* group (the script would fit on an empty set); (c) random subsamples come from
``jax.random``, so they are not numerically the script's NumPy draws.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hsfm_jax.core import checks, heads, sampling, selection
from hsfm_jax.core.scaling import fit_scaler, fold_scaler, host_scaler
from hsfm_jax.data import buckets
from hsfm_jax.data.features import FeatureSet, SplitArrays, to_device
from hsfm_jax.methods import erm
from hsfm_jax.methods.contract import MethodResult
from hsfm_jax.runtime import epoch_loop, program_cache
from hsfm_jax.solvers import sklearn_l1
from hsfm_jax.solvers.l1_logistic import SOLVERS, Solver, fit_l1_logreg

NAME = "dfr"
VARIANTS = ("dfr", "tr_dfr", "paper_dfr")


def default_config() -> ml_collections.ConfigDict:
    """DFR settings of ``dfr_evaluate_spurious.py`` (Waterbirds block) and the IN-9 notebook."""
    config = ml_collections.ConfigDict()
    # Rows to produce: any of VARIANTS.
    config.variants = ("dfr", "tr_dfr")
    # C_OPTIONS of dfr_evaluate_spurious.py (Waterbirds; also the issue's grid).
    config.c_grid = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
    # dfr_on_validation_eval(num_retrains=20); dfr_train_subset_eval(num_retrains=10).
    config.num_retrains = 20
    config.tr_num_retrains = 10
    # StandardScaler in every variant (preprocess=True in the script).
    config.standardize = True
    # "auto": groups when the dataset has them, else classes (fine-grained protocol, and
    # group_labels="none").
    config.balance = "auto"
    # "auto": WGA with groups, else mean accuracy (worst-class accuracy with group_labels="none").
    config.selection_metric = "auto"
    # L1 solver (`Solver`): "newton" (proximal Newton, liblinear's method) or "fista", or
    # "sklearn" (liblinear itself on the host, tol and newton_iters as its tol and max_iter: the
    # faster choice for a one-off CPU run, docs/compile_time.md). The JAX solvers stop
    # when every L1 optimality violation is <= tol (the penalty's slope is 1).
    config.solver = ml_collections.ConfigDict()
    config.solver.method = "newton"
    config.solver.tol = 1e-4
    config.solver.max_iters = 20000  # FISTA iterations
    config.solver.check_every = 50  # FISTA iterations between convergence checks
    config.solver.newton_iters = 100  # Newton steps
    config.solver.working_set = 256  # coordinates per Newton step, at most
    config.solver.cd_sweeps = 50  # coordinate-descent sweeps per Newton step, at most
    # Hard-Spurious-ImageNet appendix / DFR ImageNet-9 notebook.
    config.paper = ml_collections.ConfigDict()
    config.paper.epochs = 1000  # full-batch SGD steps
    config.paper.learning_rate = 1.0
    config.paper.l2 = 100.0  # weight_decay = l2 / n_train, on weight and bias
    config.paper.balance = True  # group-balanced subsample of val (DFR's definition)
    return config


# ----------------------------------------------------------------------------- subsampling


def balanced_mask(
    key: jax.Array, strata: jnp.ndarray, valid: jnp.ndarray, num_strata: int
) -> jnp.ndarray:
    """A random stratum-balanced subset: every stratum down to the smallest present one.

    Args:
      key: PRNG key.
      strata: (N,) int stratum (group or class) of each example, in [0, num_strata).
      valid: (N,) bool, which examples may be chosen.
      num_strata: number of strata.

    Returns:
      (N,) bool mask with exactly ``m`` examples of every stratum present among ``valid``, where
      ``m`` is the smallest present stratum's count; chosen uniformly within each stratum.
    """
    n = strata.shape[0]
    strata = jnp.where(valid, strata, num_strata)  # invalid rows sort after every stratum
    order = jnp.lexsort((jax.random.uniform(key, (n,)), strata))
    counts = jnp.bincount(strata, length=num_strata + 1)
    starts = jnp.cumsum(counts) - counts
    rank = (
        jnp.zeros((n,), jnp.int32)
        .at[order]
        .set((jnp.arange(n) - starts[strata[order]]).astype(jnp.int32))
    )
    present = counts[:num_strata] > 0
    smallest = jnp.min(jnp.where(present, counts[:num_strata], n))
    return valid & (rank < smallest)


def mask_rows(mask: jnp.ndarray, size: int) -> jnp.ndarray:
    """(size,) int32 rows: those in `mask` (N,) in increasing order, then rows outside it, so the
    entries past ``sum(mask)`` are rows of weight 0 (the solver's `rows` may list those, not a
    repeat of a weighted row). size <= N."""
    return jnp.argsort(~mask, stable=True)[:size].astype(jnp.int32)


def balanced_indices(
    key: jax.Array, strata: jnp.ndarray, valid: jnp.ndarray, num_strata: int, size: int
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """A stratum-balanced subsample (`balanced_mask`) as (rows (size,) int32, kept (size,) bool):
    the chosen rows in increasing order (kept), then other rows (not kept) up to `size`, a static
    bound on the subsample's size (`gather_size`, at most N)."""
    mask = balanced_mask(key, strata, valid, num_strata)
    return mask_rows(mask, size), jnp.arange(size) < jnp.sum(mask)


def balanced_size(strata: np.ndarray, num_strata: int) -> int:
    """Host-side size of a balanced subsample of the whole array."""
    counts = np.bincount(np.asarray(strata), minlength=num_strata)
    present = counts[counts > 0]
    return int(present.size * present.min())


def gather_size(size: int, split) -> int:
    """The static row count of a gathered subset of `size` rows of `split`: `size` itself, or with
    row buckets its bucket (`buckets.rows`, at most the split's padded rows), so another split
    size in the same buckets keeps the compiled programs unless the subset's bucket changes."""
    if not split.row_buckets:
        return size
    return min(buckets.rows(size), split.num_rows)


# ----------------------------------------------------------------------------- DFR


def _metric(head, features, labels, groups, num_classes, num_groups, metric):
    split = SplitArrays(features, labels, groups)
    return selection.score(
        head, split, num_classes=num_classes, num_groups=num_groups, metric=metric
    )


def _solver(config) -> Solver:
    """The `Solver` of a checked ``config.solver`` (fields missing from an older config keep
    defaults)."""
    fields = {name: type(default) for name, default in Solver._field_defaults.items()}
    return Solver(**{k: fields[k](v) for k, v in config.solver.items() if k in fields})


_REFIT_AXIS = "refits"  # the vmap over a DFR run's refits (`Solver.batch_axes`)


def _fit_grid(features, labels, weights, c_grid, num_classes, solver):
    """Fits for every C of the grid (G,) on shared features -> (heads (G, C, d), beta (G, K, p)).

    A regularization path: solved in order of increasing C (the largest penalty, whose solution
    is sparsest, first), each fit warm-started from the previous solution. One fit at a time does
    less work than all C at once from zero, where every Newton step costs G times as much and
    the loop runs until the slowest (largest) C has converged.
    """
    fit = functools.partial(fit_l1_logreg, num_classes=num_classes, solver=solver)

    def path_step(beta, c):
        head, info = fit(features, labels, weights, c, init=beta)
        return info["beta"], (head, info["beta"])

    num_problems = 1 if num_classes == 2 else num_classes
    beta0 = jnp.zeros((num_problems, features.shape[1] + 1), features.dtype)
    order = jnp.argsort(c_grid)
    _, (heads_, betas) = jax.lax.scan(path_step, beta0, c_grid[order])
    inverse = jnp.argsort(order)
    return jax.tree_util.tree_map(lambda x: x[inverse], heads_), betas[inverse]


def _fit_refits(features, labels, weight_sets, rows, c, num_classes, solver, init):
    """Average of the heads fitted on each row of weight_sets (R, N) (vmapped; shared features).

    rows: (R, M) indices of each weight set's nonzero rows; init: (K, p) warm start for all."""
    fit = functools.partial(
        fit_l1_logreg,
        num_classes=num_classes,
        solver=solver._replace(batch_axes=(_REFIT_AXIS,)),
        init=init,
    )
    stack = jax.vmap(lambda w, r: fit(features, labels, w, c, rows=r)[0], axis_name=_REFIT_AXIS)(
        weight_sets, rows
    )
    return jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), stack)


def _rescale_beta(beta, from_mean, from_scale, to_mean, to_scale):
    """(K, p) solution on features standardized by (from_mean, from_scale) -> the same linear
    function of raw features on features standardized by (to_mean, to_scale)."""
    raw = beta[:, :-1] / from_scale
    bias = beta[:, -1] - raw @ (from_mean - to_mean)
    return jnp.concatenate([raw * to_scale, bias[:, None]], axis=1)


def tune_size_bound(strata: np.ndarray, num_strata: int) -> int:
    """Host-side bound on the size of a balanced subsample of any subset of `strata`.

    A subset whose present strata are P has ``|P| * min_{g in P} count_g`` rows, at most
    ``q * c_q`` with c_q the q-th largest full count, q = |P|: a static shape for the tuning half.
    """
    counts = np.sort(np.bincount(np.asarray(strata), minlength=num_strata))[::-1]
    return int(max(q * c for q, c in enumerate(counts, start=1)))


class Fitting(NamedTuple):
    """A split as DFR's programs read it: features (N, d), labels, groups and strata (N,) int32
    (strata: what balanced subsampling equalizes, groups or classes). With row buckets the split's
    own rows come first and the padding rows after them have label, group and stratum -1
    (`hsfm_jax.data.buckets`)."""

    features: jnp.ndarray
    labels: jnp.ndarray
    groups: jnp.ndarray
    strata: jnp.ndarray


class Settings(NamedTuple):
    """Static settings every DFR variant shares (changing one compiles a new program)."""

    num_classes: int
    num_groups: int
    num_strata: int
    metric: str
    solver: Solver


class ValSizes(NamedTuple):
    """Static sizes of DFR on validation.

    Attributes:
      num_retrains: the final fits averaged; standardize: the tuning scaler on the balanced
        fitting half (else none).
      tune_size: static bound on the balanced fitting half's size (`tune_size`); refit_size: on
        the size of a balanced subsample of all of val (`balanced_size`, `gather_size`).
    """

    num_retrains: int
    standardize: bool
    tune_size: int
    refit_size: int


class TrainSizes(NamedTuple):
    """Static sizes of tr-DFR: a bound on a balanced train subsample's size (`gather_size`), the
    final fits averaged."""

    subsample_size: int
    num_retrains: int


class PaperSizes(NamedTuple):
    """Static settings of paper DFR: a bound on the balanced subsample's size (`gather_size`),
    full-batch SGD steps, and whether val is subsampled group-balanced."""

    subsample_size: int
    epochs: int
    balance: bool


def tuning_halves(
    key: jax.Array, n: jnp.ndarray, size: int
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """DFR's split of val's `n` own rows (traced; `size` rows in all) into held-out and fitting
    halves: ``perm = jax.random.permutation(key, n)``, held ``perm[:n // 2]``, fitting
    ``perm[n // 2:]``.

    Returns:
      held (size,) bool, the held-out rows; fitting (size - size // 2,) int32, the fitting rows
      in ``perm``'s order, then padding rows; fitting_valid (size - size // 2,) bool, which
      entries of ``fitting`` are fitting rows (its first ``n - n // 2``).
    """
    perm = sampling.permutation(key, n, size)
    n_half = n // 2
    held = sampling.leading(perm, n_half)
    fitting_size = size - size // 2  # >= n - n // 2, and n // 2 + fitting_size <= size
    fitting = jax.lax.dynamic_slice(perm, (n_half,), (fitting_size,))
    return held, fitting, jnp.arange(fitting_size) < n - n_half


def dfr_val_single(
    key: jax.Array,
    val: Fitting,
    train_scaler: tuple[jnp.ndarray, jnp.ndarray],
    c_grid: jnp.ndarray,
    *,
    settings: Settings,
    sizes: ValSizes,
) -> tuple[heads.LinearHead, jnp.ndarray]:
    """DFR on validation for one seed (see module docstring). Returns (raw-feature head, C index).

    `train_scaler`: (d,) mean and scale of train, folded into the head. The tuning fits see only
    the balanced rows (gathered, padded with weight-0 rows to `sizes.tune_size`), so the solver's
    work scales with the subsample, not with val. Padding rows of val (label -1) are in neither
    half and no subsample.
    """
    val_features, val_labels, val_groups, val_strata = val
    train_mean, train_scale = train_scaler
    num_classes, num_groups, num_strata, metric, solver = settings
    num_retrains, standardize, tune_size, refit_size = sizes
    valid = buckets.valid(val_labels)
    k_perm, k_tune, k_final = jax.random.split(key, 3)
    held, fitting, fitting_valid = tuning_halves(
        k_perm, buckets.count(val_labels), val_labels.shape[0]
    )

    # balanced_mask draws one uniform per position of `fitting`, as on the unpadded half
    chosen, tune_w = balanced_indices(
        k_tune, val_strata[fitting], fitting_valid, num_strata, tune_size
    )
    tune_rows, tune_w = fitting[chosen], tune_w.astype(val_features.dtype)
    fit_x, fit_y = val_features[tune_rows], val_labels[tune_rows]
    if standardize:  # the script fits the tuning scaler on the balanced fitting subset
        mean, scale = fit_scaler(fit_x, tune_w)
    else:
        mean, scale = jnp.zeros_like(train_mean), jnp.ones_like(train_scale)
    z_fit = (fit_x - mean) / scale
    held_split = SplitArrays((val_features - mean) / scale, val_labels, val_groups)
    grid, betas = _fit_grid(z_fit, fit_y, tune_w, c_grid, num_classes, solver)
    scores = jax.vmap(
        lambda h: selection.score(
            h,
            held_split,
            num_classes=num_classes,
            num_groups=num_groups,
            metric=metric,
            member=held,
        )
    )(grid)
    best = jnp.argmax(scores)

    refit_keys = jax.random.split(k_final, num_retrains)
    weight_sets = jax.vmap(lambda k: balanced_mask(k, val_strata, valid, num_strata))(refit_keys)
    rows = jax.vmap(lambda w: mask_rows(w, refit_size))(weight_sets)
    z_val = (val_features - train_mean) / train_scale
    # Warm start: the tuning fit at the chosen C, as the same function of the raw features.
    init = _rescale_beta(betas[best], mean, scale, train_mean, train_scale)
    head = _fit_refits(
        z_val,
        val_labels,
        weight_sets.astype(val_features.dtype),
        rows,
        c_grid[best],
        num_classes,
        solver,
        init,
    )
    return fold_scaler(head, train_mean, train_scale), best


def tr_dfr_single(
    key: jax.Array,
    train: Fitting,
    val: Fitting,
    train_scaler: tuple[jnp.ndarray, jnp.ndarray],
    c_grid: jnp.ndarray,
    *,
    settings: Settings,
    sizes: TrainSizes,
) -> tuple[heads.LinearHead, jnp.ndarray]:
    """tr-DFR for one seed: tune C on a balanced train subsample by val metric, average refits.
    Each subsample is `sizes.subsample_size` gathered rows, those past its size of weight 0."""
    train_features, train_labels, _, train_strata = train
    val_features, val_labels, val_groups, _ = val
    train_mean, train_scale = train_scaler
    num_classes, num_groups, num_strata, metric, solver = settings
    subsample_size, num_retrains = sizes
    train_valid = buckets.valid(train_labels)
    k_tune, k_final = jax.random.split(key)
    z_val = (val_features - train_mean) / train_scale

    def subsample(k):
        idx, kept = balanced_indices(k, train_strata, train_valid, num_strata, subsample_size)
        x = (train_features[idx] - train_mean) / train_scale
        return x, train_labels[idx], kept.astype(train_features.dtype)

    x_tune, y_tune, w_tune = subsample(k_tune)
    grid, betas = _fit_grid(x_tune, y_tune, w_tune, c_grid, num_classes, solver)
    scores = jax.vmap(
        lambda h: _metric(h, z_val, val_labels, val_groups, num_classes, num_groups, metric)
    )(grid)
    best = jnp.argmax(scores)

    init = betas[best]  # warm start: the tuning fit (same scaler)
    fit = functools.partial(
        fit_l1_logreg,
        num_classes=num_classes,
        solver=solver._replace(batch_axes=(_REFIT_AXIS,)),
        init=init,
    )

    def one_refit(k):
        return fit(*subsample(k), c_grid[best])[0]

    stack = jax.vmap(one_refit, axis_name=_REFIT_AXIS)(jax.random.split(k_final, num_retrains))
    head = jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), stack)
    return fold_scaler(head, train_mean, train_scale), best


def paper_dfr_single(
    key: jax.Array, val: Fitting, rates: erm.Rates, *, settings: Settings, sizes: PaperSizes
) -> heads.LinearHead:
    """ "Paper DFR" for one seed: scaler on the training (val) data, full-batch SGD, cosine lr;
    `rates`: the learning rate and ``l2`` (weight decay ``l2 / n_train``). Rows left out (past
    the balanced subsample's size, or padding) get label -1, which `erm.fit` leaves out."""
    val_features, val_labels, _, val_strata = val
    num_classes, num_strata = settings.num_classes, settings.num_strata
    subsample_size, epochs, balance = sizes
    learning_rate, l2 = rates
    valid = buckets.valid(val_labels)
    if balance:
        idx, kept = balanced_indices(key, val_strata, valid, num_strata, subsample_size)
        x, y = val_features[idx], jnp.where(kept, val_labels[idx], -1)
    else:
        x, y, kept = val_features, val_labels, valid
    weights = kept.astype(x.dtype)
    mean, scale = fit_scaler(x, weights)
    recipe = erm.Recipe(
        num_classes, optimizer="sgd", steps=epochs, lr_schedule="cosine", l2_bias=True
    )
    head = erm.fit(
        (x - mean) / scale, y, key, recipe, erm.Rates(learning_rate, l2 / jnp.sum(weights))
    )
    return fold_scaler(head, mean, scale)


@program_cache.jit(static_argnames=("settings", "sizes"))
def dfr_val(keys: jax.Array, *args, **static) -> tuple[heads.LinearHead, jnp.ndarray]:
    """`dfr_val_single` for each key (S,): heads (S, C, d), chosen C index (S,).

    Seeds run one after another (`lax.map`): batched in lockstep, every seed would wait for the
    slowest one's Newton steps, and the solver's loop bounds would be batched."""
    return jax.lax.map(lambda k: dfr_val_single(k, *args, **static), keys)


@program_cache.jit(static_argnames=("settings", "sizes"))
def tr_dfr(keys: jax.Array, *args, **static) -> tuple[heads.LinearHead, jnp.ndarray]:
    """`tr_dfr_single` for each key (S,), one after another (as `dfr_val`): heads (S, C, d),
    chosen C index (S,)."""
    return jax.lax.map(lambda k: tr_dfr_single(k, *args, **static), keys)


@program_cache.jit(static_argnames=("settings", "sizes"))
def paper_dfr(keys: jax.Array, *args, **static) -> heads.LinearHead:
    """`paper_dfr_single` vmapped over keys (S,): heads (S, C, d)."""
    return jax.vmap(lambda k: paper_dfr_single(k, *args, **static))(keys)


def _fitting(split, balance: str) -> Fitting:
    """`Fitting` of a host split on the device, in its dtype, padded as `split.to_arrays` pads;
    strata are the groups or the classes (`balance` as `check` resolved it)."""
    arrays = split.to_arrays()
    strata = arrays.groups if balance == "groups" else arrays.labels
    return Fitting(arrays.features, arrays.labels, arrays.groups, strata)


def _strata(split, num_classes: int, num_groups: int, balance: str) -> tuple[np.ndarray, int]:
    """(strata (N,) of the split's own rows, number of strata) that balanced subsampling
    equalizes: groups or classes (`balance` as `check` resolved it)."""
    if balance == "groups":
        return np.asarray(split.groups), num_groups
    return np.asarray(split.labels), num_classes


def tune_size(split, strata: np.ndarray, num_strata: int) -> int:
    """Static bound on the balanced fitting half's size: `tune_size_bound`, at most the half's
    rows; with row buckets the largest fitting half of the bucket (a bound that holds for every
    split size the bucket holds)."""
    rows = split.num_rows
    if split.row_buckets:
        return rows - rows // 2
    return min(tune_size_bound(strata, num_strata), rows - rows // 2)


def run(
    data: FeatureSet,
    config: ml_collections.ConfigDict,
    keys: jax.Array,
    *,
    loop: epoch_loop.Options = epoch_loop.PLAIN,
) -> MethodResult:
    """DFR rows for every seed key.

    Args:
      data: the feature set (train and val are used; test never).
      config: `default_config()`-shaped, checked and resolved by `check`.
      keys: (S,) PRNG keys, one per seed.
      loop: unused (no epoch loop).

    Returns:
      rows {row name: LinearHead with weight (S, C, d), bias (S, C)} over raw features, for each
      of ``config.variants`` ("dfr", "tr_dfr", "paper_dfr").
    """
    del loop
    num_classes, num_groups = data.num_classes, data.num_groups
    c_grid = to_device(config.c_grid, data.dtype)
    val_strata_np, num_strata = _strata(data.val, num_classes, num_groups, config.balance)
    settings = Settings(
        num_classes, num_groups, num_strata, config.selection_metric, _solver(config)
    )
    val = _fitting(data.val, config.balance)
    rows = {}

    if "dfr" in config.variants or "tr_dfr" in config.variants:
        if config.standardize:
            train_mean, train_scale = host_scaler(data.train.features)
        else:
            train_mean, train_scale = np.zeros(data.feature_dim), np.ones(data.feature_dim)
        train_scaler = (to_device(train_mean, data.dtype), to_device(train_scale, data.dtype))

    if "dfr" in config.variants:
        sizes = ValSizes(
            num_retrains=int(config.num_retrains),
            standardize=bool(config.standardize),
            tune_size=tune_size(data.val, val_strata_np, num_strata),
            refit_size=gather_size(balanced_size(val_strata_np, num_strata), data.val),
        )
        rows["dfr"], _ = dfr_val(keys, val, train_scaler, c_grid, settings=settings, sizes=sizes)

    if "tr_dfr" in config.variants:
        train_strata_np, _ = _strata(data.train, num_classes, num_groups, config.balance)
        sizes = TrainSizes(
            subsample_size=gather_size(balanced_size(train_strata_np, num_strata), data.train),
            num_retrains=int(config.tr_num_retrains),
        )
        train = _fitting(data.train, config.balance)
        rows["tr_dfr"], _ = tr_dfr(
            keys, train, val, train_scaler, c_grid, settings=settings, sizes=sizes
        )

    if "paper_dfr" in config.variants:
        paper = config.paper
        sizes = PaperSizes(
            subsample_size=gather_size(balanced_size(val_strata_np, num_strata), data.val),
            epochs=int(paper.epochs),
            balance=bool(paper.balance),
        )
        rates = erm.Rates(float(paper.learning_rate), float(paper.l2))
        rows["paper_dfr"] = paper_dfr(keys, val, rates, settings=settings, sizes=sizes)
    return MethodResult(rows=rows)


def streams_train(config: ml_collections.ConfigDict) -> bool:
    """Over the train memory budget (`hsfm_jax.methods`), DFR on val reads train only for its
    scaler, in host chunks (`host_scaler`); tr_dfr puts train on the device."""
    return "tr_dfr" not in config.variants


def check(config: ml_collections.ConfigDict, data: FeatureSet) -> dict:
    """Raises ValueError naming the first bad field; returns the resolved selection metric."""
    checks.check_subset("dfr", config, "variants", VARIANTS)
    checks.check_grid("dfr", config, "c_grid", "positive")
    checks.check_value("dfr", config, "num_retrains", "positive_int")
    checks.check_value("dfr", config, "tr_num_retrains", "positive_int")
    checks.check_bool("dfr", config, "standardize")
    checks.check_choice("dfr", config, "balance", ("auto", "groups", "classes"))
    checks.check_value("dfr.solver", config.solver, "tol", "positive")
    checks.check_value("dfr.solver", config.solver, "max_iters", "positive_int")
    checks.check_value("dfr.solver", config.solver, "check_every", "positive_int")
    checks.check_choice("dfr.solver", config.solver, "method", SOLVERS)
    if config.solver.method == "sklearn" and not sklearn_l1.available():
        raise ValueError("dfr.solver.method='sklearn' needs scikit-learn: pip install scikit-learn")
    checks.check_value("dfr.solver", config.solver, "newton_iters", "positive_int")
    checks.check_value("dfr.solver", config.solver, "cd_sweeps", "positive_int")
    checks.check_value("dfr.solver", config.solver, "working_set", "positive_int")
    if config.solver.working_set < 8:
        raise ValueError(f"dfr.solver.working_set must be >= 8, got {config.solver.working_set}")
    checks.check_value("dfr.paper", config.paper, "epochs", "positive_int")
    checks.check_value("dfr.paper", config.paper, "learning_rate", "positive")
    checks.check_value("dfr.paper", config.paper, "l2", "non_negative")
    selection_metric = checks.check_selection("dfr", config, data)
    balance = config.balance
    if balance == "auto":
        balance = "groups" if data.num_groups > 0 else "classes"
    if balance == "groups":
        if data.group_labels == "none":
            raise ValueError(
                "dfr.balance='groups' reads group labels, which group_labels='none' removes; "
                "use 'classes' or 'auto'"
            )
        for split in (data.train, data.val):
            if not split.has_groups:
                raise ValueError(
                    f"dfr: balance='groups' needs group labels on train and val ({data.path})"
                )
    return {"selection_metric": selection_metric, "balance": balance}


def group_use(config: ml_collections.ConfigDict) -> dict[str, dict[str, bool]]:
    """Which rows read train / val group labels, for a resolved config (`check`'s choices).

    dfr fits and selects on val; tr_dfr fits on train and selects on val; paper_dfr fits on val
    and selects nothing.
    """
    groups = config.balance == "groups"
    select = config.selection_metric == "wga"
    use = {
        "dfr": {"train": False, "val": groups or select},
        "tr_dfr": {"train": groups, "val": select},
        "paper_dfr": {"train": False, "val": groups and bool(config.paper.balance)},
    }
    return {row: use[row] for row in config.variants}
