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

The solver minimizes scikit-learn's liblinear L1 objective ``||w||_1 + C * sum_i logloss_i`` with
the intercept as an extra constant feature (``intercept_scaling=1``) that is penalized too; more
than two classes are one-vs-rest (as ``OneVsRestClassifier``, the multi-class behaviour of
liblinear). It is FISTA with adaptive restart, run to a tolerance on the L1 optimality
conditions, ``vmap``ped over the C grid, classes and refits, so one DFR run is one jitted call
per seed axis. Binary heads are stored as logits ``(-z/2, z/2)``, so softmax gives the logistic
probability.

"Paper DFR" (row ``"paper_dfr"``, the setting the Hard-Spurious-ImageNet paper uses, taken from
DFR's ImageNet-9 notebook): scaler fitted on the (group-balanced) val data the head is trained on,
1000 full-batch SGD steps with learning rate 1 and cosine annealing, L2 with lambda=100 applied as
PyTorch ``weight_decay = 100 / n_train`` to weight and bias.

Datasets without groups (``num_groups == 0``, the fine-grained protocol) balance classes instead
and select C by accuracy (`evaluate.selection_metric_name`).

Deviations from the script: (a) the solver runs to tolerance; liblinear stops at ``tol=1e-4`` on
its own criterion, and the tr-DFR tuning fits used ``max_iter=20`` (an early-stopped solver),
which we do not reproduce; (b) if a group is absent from the fitting half, balancing uses the
smallest *present* group (the script would fit on an empty set); (c) random subsamples come from
``jax.random``, so they are not numerically the script's NumPy draws.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hsfm_jax import checks, evaluate, heads
from hsfm_jax.baselines import erm
from hsfm_jax.features import FeatureSet

VARIANTS = ("dfr", "tr_dfr", "paper_dfr")


def default_config() -> ml_collections.ConfigDict:
    """DFR settings of ``dfr_evaluate_spurious.py`` (Waterbirds block) and the IN-9 notebook."""
    config = ml_collections.ConfigDict()
    # Rows to produce: any of VARIANTS.
    config.variants = ("dfr", "tr_dfr")
    # C_OPTIONS of dfr_evaluate_spurious.py (Waterbirds; also the grid).
    config.c_grid = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
    # dfr_on_validation_eval(num_retrains=20); dfr_train_subset_eval(num_retrains=10).
    config.num_retrains = 20
    config.tr_num_retrains = 10
    # StandardScaler in every variant (preprocess=True in the script).
    config.standardize = True
    # "auto": groups when the dataset has them, else classes (fine-grained protocol).
    config.balance = "auto"
    # "auto": WGA with groups, else mean accuracy.
    config.selection_metric = "auto"
    # FISTA: stop when every L1 optimality violation is <= tol (the penalty's slope is 1).
    config.solver = ml_collections.ConfigDict()
    config.solver.tol = 1e-4
    config.solver.max_iters = 20000
    config.solver.check_every = 50
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
    rank = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n) - starts[strata[order]])
    present = counts[:num_strata] > 0
    smallest = jnp.min(jnp.where(present, counts[:num_strata], n))
    return valid & (rank < smallest)


def balanced_indices(
    key: jax.Array, strata: jnp.ndarray, num_strata: int, size: int
) -> jnp.ndarray:
    """(size,) indices of a stratum-balanced subsample; `size` = strata present x smallest count."""
    mask = balanced_mask(key, strata, jnp.ones(strata.shape, bool), num_strata)
    return jnp.nonzero(mask, size=size)[0]


def balanced_size(strata: np.ndarray, num_strata: int) -> int:
    """Host-side size of a balanced subsample of the whole array (static shape for jit)."""
    counts = np.bincount(np.asarray(strata), minlength=num_strata)
    present = counts[counts > 0]
    return int(present.size * present.min())


# ----------------------------------------------------------------------------- scaling


def fit_scaler(features: jnp.ndarray, weights: jnp.ndarray | None = None):
    """StandardScaler statistics (mean, scale) over rows with weight > 0 (ddof=0, scale 1 for
    constant columns, as scikit-learn). features (N, d) -> ((d,), (d,))."""
    if weights is None:
        weights = jnp.ones(features.shape[:1], features.dtype)
    weights = weights / jnp.sum(weights)
    mean = weights @ features
    var = weights @ jnp.square(features - mean)
    scale = jnp.sqrt(var)
    return mean, jnp.where(scale > 1e-12 * jnp.maximum(jnp.abs(mean), 1.0), scale, 1.0)


def host_scaler(features: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """`fit_scaler` for a (possibly memory-mapped, large) host array, in float64 chunks."""
    n = features.shape[0]
    total = np.zeros(features.shape[1])
    for s in range(0, n, chunk):
        total += np.asarray(features[s : s + chunk], np.float64).sum(0)
    mean = total / n
    sq = np.zeros_like(mean)
    for s in range(0, n, chunk):
        sq += np.square(np.asarray(features[s : s + chunk], np.float64) - mean).sum(0)
    scale = np.sqrt(sq / n)
    scale = np.where(scale > 1e-12 * np.maximum(np.abs(mean), 1.0), scale, 1.0)
    return mean.astype(np.float32), scale.astype(np.float32)


def fold_scaler(head: heads.LinearHead, mean: jnp.ndarray, scale: jnp.ndarray) -> heads.LinearHead:
    """A head on standardized features -> the same head on raw features.

    W z + b with z = (x - mean) / scale equals (W / scale) x + (b - (W / scale) mean).
    """
    weight = head.weight / scale
    return heads.LinearHead(weight, head.bias - weight @ mean)


# ----------------------------------------------------------------------------- solver


def l1_logreg_objective(
    weight: jnp.ndarray,
    bias: jnp.ndarray,
    features: jnp.ndarray,
    targets: jnp.ndarray,
    sample_weight: jnp.ndarray,
    c: jnp.ndarray,
) -> jnp.ndarray:
    """liblinear's L1 logistic objective ``|w|_1 + |b| + C sum_i s_i log(1 + exp(-t_i (w.x_i + b)))``.

    Args:
      weight: (d,); bias: (); features: (N, d); targets: (N,) in {-1, +1};
      sample_weight: (N,) (0 drops a row); c: () inverse regularization strength.
    """
    margins = targets * (features @ weight + bias)
    data = jnp.sum(sample_weight * jax.nn.softplus(-margins))
    return jnp.sum(jnp.abs(weight)) + jnp.abs(bias) + c * data


def _soft_threshold(x, t):
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - t, 0.0)


def _lipschitz(features, sample_weight, iters=50):
    """Largest eigenvalue of [X 1]^T S [X 1] by power iteration (times a safety margin)."""
    aug = jnp.concatenate([features, jnp.ones_like(features[:, :1])], axis=1)
    v = jnp.ones((aug.shape[1],), aug.dtype) / jnp.sqrt(aug.shape[1])

    def body(_, v):
        u = aug.T @ (sample_weight * (aug @ v))
        return u / jnp.maximum(jnp.linalg.norm(u), 1e-30)

    v = jax.lax.fori_loop(0, iters, body, v)
    return 1.1 * jnp.maximum(v @ (aug.T @ (sample_weight * (aug @ v))), 1e-12)


def _solve_one(features, targets, sample_weight, c, lipschitz, tol, max_iters, check_every):
    """FISTA with gradient-based adaptive restart for one binary problem.

    Stops when the largest L1 optimality violation is <= `tol` or, since float32 cannot resolve
    the violation of large problems below ~1e-4, when the objective moved by less than 1e-7
    (relative) over the last `check_every` iterations (a stall at float32 resolution).

    Returns (weight (d,), bias (), iterations, max optimality violation)."""
    d = features.shape[1]
    step = 1.0 / (c * 0.25 * lipschitz)
    sw = sample_weight * c

    def smooth_and_grad(beta):
        z = features @ beta[:d] + beta[d]
        m = targets * z
        value = jnp.sum(sw * jax.nn.softplus(-m))
        r = -sw * targets * jax.nn.sigmoid(-m)
        return value, jnp.concatenate([features.T @ r, jnp.sum(r)[None]])

    def check(beta):  # (objective, max violation of the L1 optimality conditions)
        value, g = smooth_and_grad(beta)
        viol = jnp.max(
            jnp.where(beta != 0, jnp.abs(g + jnp.sign(beta)), jnp.maximum(jnp.abs(g) - 1.0, 0.0))
        )
        return value + jnp.sum(jnp.abs(beta)), viol

    def fista_step(state, _):
        x, y, t = state
        _, g = smooth_and_grad(y)
        x_new = _soft_threshold(y - step * g, step)
        # Gradient-based adaptive restart (O'Donoghue & Candes, 2015): robust to float32
        # rounding, unlike comparing objective values.
        restart = jnp.vdot(y - x_new, x_new - x) > 0
        t_new = jnp.where(restart, 1.0, 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t)))
        y_new = x_new + jnp.where(restart, 0.0, (t - 1.0) / t_new) * (x_new - x)
        return (x_new, y_new, t_new), None

    def chunk(carry):
        state, it, objective, _, _ = carry
        state, _ = jax.lax.scan(fista_step, state, None, length=check_every)
        new_objective, viol = check(state[0])
        stalled = jnp.abs(objective - new_objective) <= 1e-7 * jnp.abs(new_objective)
        return state, it + check_every, new_objective, viol, stalled

    def not_done(carry):
        _, it, _, viol, stalled = carry
        return (viol > tol) & ~stalled & (it < max_iters)

    beta0 = jnp.zeros((d + 1,), features.dtype)
    state0 = (beta0, beta0, jnp.asarray(1.0, features.dtype))
    objective0, viol0 = check(beta0)
    (beta, _, _), iters, _, viol, _ = jax.lax.while_loop(
        not_done, chunk, (state0, jnp.asarray(0), objective0, viol0, jnp.asarray(False))
    )
    return beta[:d], beta[d], iters, viol


@functools.partial(jax.jit, static_argnames=("num_classes", "max_iters", "check_every"))
def fit_l1_logreg(
    features: jnp.ndarray,
    labels: jnp.ndarray,
    sample_weight: jnp.ndarray,
    c: jnp.ndarray,
    *,
    num_classes: int,
    tol: float = 1e-4,
    max_iters: int = 20000,
    check_every: int = 50,
) -> tuple[heads.LinearHead, dict[str, jnp.ndarray]]:
    """L1 logistic regression as scikit-learn's liblinear defines it, binary or one-vs-rest.

    Args:
      features: (N, d) float.
      labels: (N,) int in [0, C).
      sample_weight: (N,) float, 0 for rows left out (fixed shapes for subsets).
      c: () float, inverse regularization strength C.
      num_classes: C. With C == 2 one problem is solved (positive class 1, as liblinear);
        otherwise one problem per class (one-vs-rest).
      tol: stop when max_j of the L1 optimality violation is <= tol.
      max_iters: FISTA iteration cap; check_every: iterations between convergence checks.

    Returns:
      (head, info): the head (weight (C, d), bias (C,)); binary problems give logits
      (-z/2, z/2). ``info`` has ``coef`` (K, d) and ``intercept`` (K,) as scikit-learn reports
      them (K = 1 for binary, else C), ``objective`` (K,), ``iterations`` (K,), ``violation`` (K,).
    """
    positives = jnp.arange(1, 2) if num_classes == 2 else jnp.arange(num_classes)
    targets = jnp.where(labels[None, :] == positives[:, None], 1.0, -1.0).astype(features.dtype)
    c = jnp.asarray(c, features.dtype)
    sample_weight = jnp.asarray(sample_weight, features.dtype)
    lipschitz = _lipschitz(features, sample_weight)
    solve = functools.partial(_solve_one, tol=tol, max_iters=max_iters, check_every=check_every)
    coef, intercept, iters, viol = jax.vmap(solve, in_axes=(None, 0, None, None, None))(
        features, targets, sample_weight, c, lipschitz
    )
    objective = jax.vmap(l1_logreg_objective, in_axes=(0, 0, None, 0, None, None))(
        coef, intercept, features, targets, sample_weight, c
    )
    info = dict(
        coef=coef, intercept=intercept, objective=objective, iterations=iters, violation=viol
    )
    return ovr_to_head(coef, intercept, num_classes), info


def ovr_to_head(coef: jnp.ndarray, intercept: jnp.ndarray, num_classes: int) -> heads.LinearHead:
    """scikit-learn style (K, d), (K,) coefficients -> LinearHead (C, d), (C,)."""
    if num_classes == 2:
        return heads.LinearHead(
            jnp.concatenate([-0.5 * coef, 0.5 * coef]),
            jnp.concatenate([-0.5 * intercept, 0.5 * intercept]),
        )
    return heads.LinearHead(coef, intercept)


# ----------------------------------------------------------------------------- DFR


def _metric(head, features, labels, groups, num_classes, num_groups, metric):
    correct = heads.predict(head, features) == labels
    return evaluate.accuracy_metrics(
        correct, labels, groups, num_classes=num_classes, num_groups=num_groups
    )[metric]


def _solver_kwargs(config) -> tuple:
    """Hashable (tol, max_iters, check_every), so it can be a static jit argument."""
    return (
        float(config.solver.tol),
        int(config.solver.max_iters),
        int(config.solver.check_every),
    )


def _solver_dict(solver: tuple) -> dict:
    return dict(zip(("tol", "max_iters", "check_every"), solver, strict=True))


def _fit_grid(features, labels, weights, c_grid, num_classes, solver):
    """Heads (K, C, d) for every C of the grid (vmapped; shared features)."""
    fit = functools.partial(fit_l1_logreg, num_classes=num_classes, **_solver_dict(solver))
    return jax.vmap(lambda c: fit(features, labels, weights, c)[0])(c_grid)


def _fit_refits(features, labels, weight_sets, c, num_classes, solver):
    """Average of the heads fitted on each row of weight_sets (R, N) (vmapped; shared features)."""
    fit = functools.partial(fit_l1_logreg, num_classes=num_classes, **_solver_dict(solver))
    stack = jax.vmap(lambda w: fit(features, labels, w, c)[0])(weight_sets)
    return jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), stack)


def dfr_val_single(
    key: jax.Array,
    val_features: jnp.ndarray,
    val_labels: jnp.ndarray,
    val_groups: jnp.ndarray,
    val_strata: jnp.ndarray,
    train_mean: jnp.ndarray,
    train_scale: jnp.ndarray,
    c_grid: jnp.ndarray,
    *,
    num_classes: int,
    num_groups: int,
    num_strata: int,
    num_retrains: int,
    metric: str,
    standardize: bool,
    solver: tuple,
) -> tuple[heads.LinearHead, jnp.ndarray]:
    """DFR on validation for one seed (see module docstring). Returns (raw-feature head, C index)."""
    n = val_features.shape[0]
    n_half = n // 2
    k_perm, k_tune, k_final = jax.random.split(key, 3)
    perm = jax.random.permutation(k_perm, n)
    held, fit_rows = perm[:n_half], perm[n_half:]

    fit_x, fit_y = val_features[fit_rows], val_labels[fit_rows]
    fit_w = balanced_mask(
        k_tune, val_strata[fit_rows], jnp.ones(fit_rows.shape, bool), num_strata
    ).astype(val_features.dtype)
    if standardize:  # the script fits the tuning scaler on the balanced fitting subset
        mean, scale = fit_scaler(fit_x, fit_w)
    else:
        mean, scale = jnp.zeros_like(train_mean), jnp.ones_like(train_scale)
    z_fit = (fit_x - mean) / scale
    z_held = (val_features[held] - mean) / scale
    grid = _fit_grid(z_fit, fit_y, fit_w, c_grid, num_classes, solver)
    scores = jax.vmap(
        lambda h: _metric(
            h, z_held, val_labels[held], val_groups[held], num_classes, num_groups, metric
        )
    )(grid)
    best = jnp.argmax(scores)

    refit_keys = jax.random.split(k_final, num_retrains)
    weight_sets = jax.vmap(
        lambda k: balanced_mask(k, val_strata, jnp.ones((n,), bool), num_strata)
    )(refit_keys).astype(val_features.dtype)
    z_val = (val_features - train_mean) / train_scale
    head = _fit_refits(z_val, val_labels, weight_sets, c_grid[best], num_classes, solver)
    return fold_scaler(head, train_mean, train_scale), best


def tr_dfr_single(
    key: jax.Array,
    train_features: jnp.ndarray,
    train_labels: jnp.ndarray,
    train_strata: jnp.ndarray,
    val_features: jnp.ndarray,
    val_labels: jnp.ndarray,
    val_groups: jnp.ndarray,
    train_mean: jnp.ndarray,
    train_scale: jnp.ndarray,
    c_grid: jnp.ndarray,
    *,
    num_classes: int,
    num_groups: int,
    num_strata: int,
    subsample_size: int,
    num_retrains: int,
    metric: str,
    solver: tuple,
) -> tuple[heads.LinearHead, jnp.ndarray]:
    """tr-DFR for one seed: tune C on a balanced train subsample by val metric, average refits."""
    k_tune, k_final = jax.random.split(key)
    z_val = (val_features - train_mean) / train_scale

    def subsample(k):
        idx = balanced_indices(k, train_strata, num_strata, subsample_size)
        return (train_features[idx] - train_mean) / train_scale, train_labels[idx]

    x_tune, y_tune = subsample(k_tune)
    ones = jnp.ones((subsample_size,), train_features.dtype)
    grid = _fit_grid(x_tune, y_tune, ones, c_grid, num_classes, solver)
    scores = jax.vmap(
        lambda h: _metric(h, z_val, val_labels, val_groups, num_classes, num_groups, metric)
    )(grid)
    best = jnp.argmax(scores)

    fit = functools.partial(fit_l1_logreg, num_classes=num_classes, **_solver_dict(solver))

    def one_refit(k):
        x, y = subsample(k)
        return fit(x, y, ones, c_grid[best])[0]

    stack = jax.vmap(one_refit)(jax.random.split(k_final, num_retrains))
    head = jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), stack)
    return fold_scaler(head, train_mean, train_scale), best


def paper_dfr_single(
    key: jax.Array,
    val_features: jnp.ndarray,
    val_labels: jnp.ndarray,
    val_strata: jnp.ndarray,
    *,
    num_classes: int,
    num_strata: int,
    subsample_size: int,
    epochs: int,
    learning_rate: float,
    l2: float,
    balance: bool,
) -> heads.LinearHead:
    """ "Paper DFR" for one seed: scaler on the training (val) data, full-batch SGD, cosine lr."""
    if balance:
        idx = balanced_indices(key, val_strata, num_strata, subsample_size)
        x, y = val_features[idx], val_labels[idx]
    else:
        x, y = val_features, val_labels
    mean, scale = fit_scaler(x)
    head = erm.fit(
        (x - mean) / scale,
        y,
        key,
        num_classes=num_classes,
        optimizer="sgd",
        learning_rate=learning_rate,
        steps=epochs,
        l2=l2 / x.shape[0],
        lr_schedule="cosine",
        l2_bias=True,
    )
    return fold_scaler(head, mean, scale)


_DFR_STATIC = (
    "num_classes",
    "num_groups",
    "num_strata",
    "num_retrains",
    "metric",
    "standardize",
    "solver",
)
_TR_STATIC = (
    "num_classes",
    "num_groups",
    "num_strata",
    "subsample_size",
    "num_retrains",
    "metric",
    "solver",
)
_PAPER_STATIC = ("num_classes", "num_strata", "subsample_size", "epochs", "balance")


@functools.partial(jax.jit, static_argnames=_DFR_STATIC)
def dfr_val(keys: jax.Array, *args, **static) -> tuple[heads.LinearHead, jnp.ndarray]:
    """`dfr_val_single` vmapped over keys (S,): heads (S, C, d), chosen C index (S,)."""
    return jax.vmap(lambda k: dfr_val_single(k, *args, **static))(keys)


@functools.partial(jax.jit, static_argnames=_TR_STATIC)
def tr_dfr(keys: jax.Array, *args, **static) -> tuple[heads.LinearHead, jnp.ndarray]:
    """`tr_dfr_single` vmapped over keys (S,): heads (S, C, d), chosen C index (S,)."""
    return jax.vmap(lambda k: tr_dfr_single(k, *args, **static))(keys)


@functools.partial(jax.jit, static_argnames=_PAPER_STATIC)
def paper_dfr(keys: jax.Array, *args, **kwargs) -> heads.LinearHead:
    """`paper_dfr_single` vmapped over keys (S,): heads (S, C, d)."""
    return jax.vmap(lambda k: paper_dfr_single(k, *args, **kwargs))(keys)


def _strata(split, num_classes: int, num_groups: int, balance: str) -> tuple[np.ndarray, int]:
    """(strata (N,), number of strata) that balanced subsampling equalizes."""
    if balance == "auto":
        balance = "groups" if num_groups > 0 else "classes"
    if balance == "groups":
        if num_groups == 0 or not split.has_groups:
            raise ValueError("dfr: balance='groups' needs group labels on train and val")
        return np.asarray(split.groups), num_groups
    if balance == "classes":
        return np.asarray(split.labels), num_classes
    raise ValueError(f"dfr: balance must be 'auto', 'groups' or 'classes', got {balance!r}")


def run(
    data: FeatureSet, config: ml_collections.ConfigDict, keys: jax.Array
) -> dict[str, heads.LinearHead]:
    """DFR rows for every seed key.

    Args:
      data: the feature set (train and val are used; test never).
      config: `default_config()`-shaped.
      keys: (S,) PRNG keys, one per seed.

    Returns:
      {row name: LinearHead with weight (S, C, d), bias (S, C)} over raw features, for each of
      ``config.variants`` ("dfr", "tr_dfr", "paper_dfr").
    """
    unknown = [v for v in config.variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"dfr: unknown variant(s) {unknown}; choose from {VARIANTS}")
    num_classes, num_groups = data.num_classes, data.num_groups
    metric = evaluate.selection_metric_name(num_groups, config.selection_metric)
    solver = _solver_kwargs(config)
    c_grid = jnp.asarray(config.c_grid, jnp.float32)
    val = data.val.to_arrays()
    val_strata_np, num_strata = _strata(data.val, num_classes, num_groups, config.balance)
    val_strata = jnp.asarray(val_strata_np, jnp.int32)
    rows = {}

    if "dfr" in config.variants or "tr_dfr" in config.variants:
        if config.standardize:
            train_mean, train_scale = map(jnp.asarray, host_scaler(data.train.features))
        else:
            train_mean = jnp.zeros((data.feature_dim,), jnp.float32)
            train_scale = jnp.ones((data.feature_dim,), jnp.float32)

    if "dfr" in config.variants:
        rows["dfr"], _ = dfr_val(
            keys,
            val.features,
            val.labels,
            val.groups,
            val_strata,
            train_mean,
            train_scale,
            c_grid,
            num_classes=num_classes,
            num_groups=num_groups,
            num_strata=num_strata,
            num_retrains=int(config.num_retrains),
            metric=metric,
            standardize=bool(config.standardize),
            solver=solver,
        )

    if "tr_dfr" in config.variants:
        train = data.train.to_arrays()
        train_strata_np, _ = _strata(data.train, num_classes, num_groups, config.balance)
        rows["tr_dfr"], _ = tr_dfr(
            keys,
            train.features,
            train.labels,
            jnp.asarray(train_strata_np, jnp.int32),
            val.features,
            val.labels,
            val.groups,
            train_mean,
            train_scale,
            c_grid,
            num_classes=num_classes,
            num_groups=num_groups,
            num_strata=num_strata,
            subsample_size=balanced_size(train_strata_np, num_strata),
            num_retrains=int(config.tr_num_retrains),
            metric=metric,
            solver=solver,
        )

    if "paper_dfr" in config.variants:
        paper = config.paper
        rows["paper_dfr"] = paper_dfr(
            keys,
            val.features,
            val.labels,
            val_strata,
            num_classes=num_classes,
            num_strata=num_strata,
            subsample_size=balanced_size(val_strata_np, num_strata),
            epochs=int(paper.epochs),
            learning_rate=float(paper.learning_rate),
            l2=float(paper.l2),
            balance=bool(paper.balance),
        )
    return rows


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
    checks.check_value("dfr.paper", config.paper, "epochs", "positive_int")
    checks.check_value("dfr.paper", config.paper, "learning_rate", "positive")
    checks.check_value("dfr.paper", config.paper, "l2", "non_negative")
    selection_metric = checks.check_selection("dfr", config, data)
    if config.balance == "groups" or (config.balance == "auto" and data.num_groups > 0):
        for split in (data.train, data.val):
            if not split.has_groups:
                raise ValueError(
                    f"dfr: balance='groups' needs group labels on train and val ({data.path})"
                )
    return {"selection_metric": selection_metric}
