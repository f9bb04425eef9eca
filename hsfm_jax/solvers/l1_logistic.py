"""L1-penalized logistic regression as scikit-learn's liblinear defines it, in JAX.

`fit_l1_logreg` minimizes liblinear's L1 objective ``||w||_1 + C * sum_i s_i logloss_i``
(`l1_logreg_objective`) with the intercept as an extra constant feature (``intercept_scaling=1``)
that is penalized too; more than two classes are one-vs-rest (as ``OneVsRestClassifier``, the
multi-class behaviour of liblinear). The default method is liblinear's own, a working-set
proximal Newton method with coordinate descent on each quadratic model (newGLMNET; Yuan, Ho &
Lin, JMLR 2012, `_newton_one`), run to a tolerance on the L1 optimality conditions; FISTA with
adaptive restart (``Solver(method="fista")``, `_fista_one`) is the alternative. Binary heads are
stored as logits ``(-z/2, z/2)``, so softmax gives the logistic probability.

Everything is one jitted, vmappable function of arrays (sample weights of 0 leave rows out at
fixed shapes; warm starts through ``init``); DFR (`hsfm_jax.methods.dfr`) solves its C grid
as a regularization path with it. tests/solvers/test_l1_logistic.py checks it against scikit-learn.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from hsfm_jax.core import heads
from hsfm_jax.runtime import program_cache
from hsfm_jax.solvers import sklearn_l1


class Solver(NamedTuple):
    """Static settings of the L1 solver (hashable: a jit static argument); ``config.solver``."""

    method: str = "newton"  # one of SOLVERS
    tol: float = 1e-4  # on the largest L1 optimality violation
    max_iters: int = 20000  # FISTA iterations
    check_every: int = 50  # FISTA iterations between convergence checks
    newton_iters: int = 100  # proximal Newton steps
    working_set: int = 256  # coordinates per Newton step, at most (beyond: greedy block steps)
    cd_sweeps: int = 50  # coordinate-descent sweeps per Newton step, at most
    # Names of the `jax.vmap` axes a fit runs under, if any: the Newton solver's loops then run
    # as far as the batch's largest active set needs, unbatched (an unnamed vmap works too,
    # with batched loop bounds, which are slower).
    batch_axes: tuple[str, ...] = ()


SOLVERS = ("newton", "fista", "sklearn")
DEFAULT_SOLVER = Solver()


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


def _violation(beta, grad):
    """(p,) L1 optimality violation of each coordinate (the minimum-norm subgradient)."""
    return jnp.where(beta != 0, grad + jnp.sign(beta), _soft_threshold(grad, 1.0))


def _lipschitz(aug, sample_weight, iters=50):
    """Largest eigenvalue of A^T S A (A = [X 1]) by power iteration (times a safety margin)."""
    v = jnp.ones((aug.shape[1],), aug.dtype) / jnp.sqrt(aug.shape[1])

    def body(_, v):
        u = aug.T @ (sample_weight * (aug @ v))
        return u / jnp.maximum(jnp.linalg.norm(u), 1e-30)

    v = jax.lax.fori_loop(0, iters, body, v)
    return 1.1 * jnp.maximum(v @ (aug.T @ (sample_weight * (aug @ v))), 1e-12)


def _fista_one(aug, targets, cw, beta0, rows, *, solver: Solver, batch_axes=()):
    """FISTA with gradient-based adaptive restart for one binary problem.

    Stops when the largest L1 optimality violation is <= `tol` or, since float32 cannot resolve
    the violation of large problems below ~1e-4, when the objective moved by less than 1e-7
    (relative) over the last `check_every` iterations (a stall at float32 resolution).

    Args: as `_newton_one` (`rows` and `batch_axes` are not used). Returns (beta (p,),
    iterations, violation).
    """
    del rows, batch_axes
    step = 4.0 / _lipschitz(aug, cw)

    def smooth_and_grad(beta):
        m = targets * (aug @ beta)
        r = -cw * targets * jax.nn.sigmoid(-m)
        return jnp.sum(cw * jax.nn.softplus(-m)), aug.T @ r

    def check(beta):  # (objective, max violation of the L1 optimality conditions)
        value, g = smooth_and_grad(beta)
        return value + jnp.sum(jnp.abs(beta)), jnp.max(jnp.abs(_violation(beta, g)))

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
        state, _ = jax.lax.scan(fista_step, state, None, length=solver.check_every)
        new_objective, viol = check(state[0])
        stalled = jnp.abs(objective - new_objective) <= 1e-7 * jnp.abs(new_objective)
        return state, it + solver.check_every, new_objective, viol, stalled

    def not_done(carry):
        _, it, _, viol, stalled = carry
        return (viol > solver.tol) & ~stalled & (it < solver.max_iters)

    state0 = (beta0, beta0, jnp.asarray(1.0, aug.dtype))
    objective0, viol0 = check(beta0)
    (beta, _, _), iters, _, viol, _ = jax.lax.while_loop(
        not_done, chunk, (state0, jnp.asarray(0), objective0, viol0, jnp.asarray(False))
    )
    return beta, iters, viol


def _cd_subproblem(hessian, grad, beta, num_active, max_sweeps, inner_tol):
    """Cyclic coordinate descent on the proximal Newton model (GLMNET, Friedman et al. 2010).

    Minimizes ``grad.u + u^T hessian u / 2 + |beta + u|_1`` over the first `num_active`
    coordinates (the others stay 0), sweeping until no coordinate moves by more than `inner_tol`
    (in gradient units, ``H_jj |du_j|``) or `max_sweeps` sweeps.

    Args:
      hessian: (k, k) symmetric PSD; only its first `num_active` rows and columns are read.
      grad, beta: (k,); num_active: () int <= k.

    Returns:
      (u (k,), sweeps ()).
    """
    curvature = jnp.maximum(jnp.diagonal(hessian), 1e-12)  # liblinear's guard for empty columns

    def coordinate(j, carry):
        u, hu, moved = carry
        value = beta[j] + u[j]
        new = _soft_threshold(value - (grad[j] + hu[j]) / curvature[j], 1.0 / curvature[j])
        step = new - value
        # hessian[j] is row j (= column j): contiguous, unlike a column of a batched array.
        return (
            u.at[j].add(step),
            hu + step * hessian[j],
            jnp.maximum(moved, curvature[j] * jnp.abs(step)),
        )

    def sweep(carry):
        u, hu, _, sweeps = carry
        zero = jnp.zeros((), grad.dtype)
        u, hu, moved = jax.lax.fori_loop(0, num_active, coordinate, (u, hu, zero))
        return u, hu, moved, sweeps + 1

    def not_done(carry):
        _, _, moved, sweeps = carry
        return (sweeps < max_sweeps) & (moved > inner_tol)

    zero = jnp.zeros_like(grad)
    u, _, _, sweeps = jax.lax.while_loop(
        not_done, sweep, (zero, zero, jnp.asarray(jnp.inf, grad.dtype), jnp.asarray(0))
    )
    return u, sweeps


def _gram(block, curvature, num_columns, smallest=32):
    """(k, k) ``block^T diag(curvature) block`` with (at least) its first `num_columns` rows and
    columns filled in, the rest zero: the product is formed for the first s columns only, s the
    smallest of k, k/2, k/4, ... (down to `smallest`) that covers `num_columns`, so its cost
    follows the active set, not the working set's static size k. block: (M, k)."""
    k = block.shape[1]
    sizes = [k]
    while sizes[-1] // 2 >= smallest:
        sizes.append(sizes[-1] // 2)
    sizes = sizes[::-1]  # ascending

    def product(s):
        def fn(block, curvature):
            part = block[:, :s]
            hessian = part.T @ (curvature[:, None] * part)
            return jnp.pad(hessian, ((0, k - s), (0, k - s)))

        return fn

    index = jnp.searchsorted(jnp.asarray(sizes), num_columns)
    return jax.lax.switch(index, [product(s) for s in sizes], block, curvature)


def _working_set(beta, violation, size, batch_axes=()):
    """The next Newton step's coordinates.

    Active coordinates are the nonzero and the violating ones. The step uses ``used`` of them:
    all, but at most ``max(_GROWTH_FLOOR, _GROWTH_FACTOR * nonzeros)`` and at most `size`, so a
    cold start or a new C does not spend a full-size step on the many coordinates that violate
    at first and are zero at the optimum (a screening, checked by the next step's gradient).
    Of those, a quarter are the largest violations, then nonzero coordinates, then the other
    violators; so once the working set holds the support, the step is a full Newton step.

    Args:
      beta, violation: (p,); size: static maximum; batch_axes: vmap axes to take ``used`` as
        the largest over (so the caller's loop bounds are unbatched).

    Returns:
      (coords (size,) with the ``used`` chosen ones first, used (), whether every active
      coordinate is among them ()).
    """
    active = (beta != 0) | (violation != 0)
    num_active = jnp.sum(active)
    limit = jnp.maximum(_GROWTH_FLOOR, _GROWTH_FACTOR * jnp.sum(beta != 0))
    used = jnp.minimum(jnp.minimum(num_active, limit), size)
    if batch_axes:
        used = jax.lax.pmax(used, batch_axes)
    _, top = jax.lax.top_k(jnp.abs(violation), size // 4)  # largest violations first
    squashed = jnp.abs(violation) / (1.0 + jnp.abs(violation))  # in [0, 1)
    priority = jnp.where(beta != 0, 2.0 + squashed, jnp.where(active, squashed, -1.0))
    quota = (jnp.arange(size // 4) < used // 4) & active[top]
    priority = priority.at[top].set(jnp.where(quota, 4.0, priority[top]))
    _, coords = jax.lax.top_k(priority, size)
    return coords, used, num_active <= used


_GROWTH_FLOOR = 32
_GROWTH_FACTOR = 2
# Up to this many coordinates every Newton step takes them all: choosing a working set costs
# more than it saves (measured at p = 65 against p = 257, benchmarks/dfr.py).
_EVERY_COORDINATE = 128

# Stall tests of the Newton solver (relative decrease of the objective in one step). A full
# Newton step (every active coordinate in the working set, unit step, model solved) converges
# superlinearly, so a decrease of 1e-5 leaves ~1e-7 to gain; a greedy block step converges only
# linearly and stops at float32 resolution instead.
_NEWTON_STALL = 1e-5
_BLOCK_STALL = 1e-7


def _newton_one(
    aug, targets, cw, beta0, rows, *, solver: Solver, batch_axes=(), line_search_steps=12
):
    """Working-set proximal Newton (newGLMNET; Yuan, Ho & Lin 2012) for one binary problem.

    Each step: gradient and the L1 optimality violation on all coordinates; a working set of at
    most `solver.working_set` active coordinates (`_working_set`; all coordinates when there are
    at most `_EVERY_COORDINATE`); the Hessian of the data term on it (``A_W^T diag(C s sigma
    (1 - sigma)) A_W``, `_gram`); the model minimized by coordinate descent (`_cd_subproblem`, to
    a tenth of the current violation); an Armijo line search over step sizes 1, 1/2, ..., all
    tried at once (sufficient decrease 0.01 of the model's, as liblinear). Coordinates outside
    the working set stay fixed, so with fewer nonzeros than the working set the local phase is
    Newton's (superlinear) and otherwise a greedy block method.

    The Hessian and the coordinate descent cost what the working set in use needs, not its
    static maximum. Under `jax.vmap` over `batch_axes` (axis names) that size is the largest
    over the batch (`lax.pmax`), so loop bounds and the Hessian's size stay unbatched.

    Stops when the largest violation is <= `solver.tol`, when a step lowers the objective by
    less than `_NEWTON_STALL` (full Newton step) or `_BLOCK_STALL` (otherwise) of it, or after
    `solver.newton_iters` steps. float32 cannot resolve the violation of large problems down to
    1e-4; the objective is then at its optimum to ~1e-7 (tests/methods/test_dfr.py, benchmarks/dfr.py).

    Args:
      aug: (N, p) features with a trailing column of ones (the penalized intercept).
      targets: (N,) in {-1, +1}; cw: (N,) C times the sample weight.
      beta0: (p,) starting point (a warm start or zeros).
      rows: (M,) int indices of the rows with cw > 0, or None for all rows. Only these rows
        enter the model, the line search and the margins carried between steps; the gradient
        is one product with all of `aug` (shared by every vmapped problem, so a matrix product).

    Returns:
      (beta (p,), iterations (), violation ()).
    """
    n, p = aug.shape
    if solver.working_set < 8:
        raise ValueError(f"solver.working_set must be >= 8, got {solver.working_set}")
    size = min(solver.working_set, p)
    every_coordinate = p <= min(solver.working_set, _EVERY_COORDINATE)
    steps = 0.5 ** jnp.arange(line_search_steps, dtype=aug.dtype)
    cw_rows = cw if rows is None else cw[rows]
    targets = targets if rows is None else targets[rows]

    def derivatives(beta, margins):
        m = targets * margins
        sig = jax.nn.sigmoid(-m)
        residual = -cw_rows * targets * sig
        if rows is not None:  # the other rows carry no weight
            residual = jnp.zeros((n,), aug.dtype).at[rows].add(residual)
        grad = aug.T @ residual
        return grad, cw_rows * sig * (1.0 - sig), jnp.max(jnp.abs(_violation(beta, grad)))

    def newton_step(state):
        beta, margins, grad, curvature, viol, it, _ = state
        if every_coordinate:
            coords, batch_active, complete = jnp.arange(p), p, jnp.asarray(True)
            block = aug if rows is None else aug[rows]
            hessian = block.T @ (curvature[:, None] * block)
        else:
            coords, batch_active, complete = _working_set(
                beta, _violation(beta, grad), size, batch_axes
            )
            if rows is None:
                block = aug[:, coords]
            else:  # (M, size) in one gather, not aug[rows] first
                block = aug[rows[:, None], coords[None, :]]
            hessian = _gram(block, curvature, batch_active)
        grad_w, beta_w = grad[coords], beta[coords]
        u, sweeps = _cd_subproblem(
            hessian, grad_w, beta_w, batch_active, solver.cd_sweeps, 0.1 * viol
        )

        # Armijo (Tseng & Yun 2009) on every step size at once; differences are taken per row,
        # so float32 resolves decreases far below the objective's own rounding.
        l1 = jnp.sum(jnp.abs(beta_w))
        model_decrease = grad_w @ u + jnp.sum(jnp.abs(beta_w + u)) - l1
        direction = block @ u
        m0 = targets * margins
        mt = m0 + steps[:, None] * (targets * direction)
        change = jnp.sum(cw_rows * (jax.nn.softplus(-mt) - jax.nn.softplus(-m0)), axis=1)
        change += jnp.sum(jnp.abs(beta_w + steps[:, None] * u), axis=1) - l1
        accepted = change <= 0.01 * steps * model_decrease
        first = jnp.argmax(accepted)
        t = jnp.where(accepted[first], steps[first], 0.0)
        objective = jnp.sum(cw_rows * jax.nn.softplus(-m0)) + jnp.sum(jnp.abs(beta))
        newton = complete & (first == 0) & (sweeps < solver.cd_sweeps)
        stall = jnp.where(newton, _NEWTON_STALL, _BLOCK_STALL)
        stalled = ~accepted[first] | (-change[first] <= stall * objective)

        beta = beta.at[coords].add(t * u)
        margins = margins + t * direction
        grad, curvature, viol = derivatives(beta, margins)
        return beta, margins, grad, curvature, viol, it + 1, stalled

    def not_done(state):
        viol, it, stalled = state[4:]
        return (viol > solver.tol) & ~stalled & (it < solver.newton_iters)

    margins0 = aug @ beta0 if rows is None else (aug @ beta0)[rows]
    state0 = (beta0, margins0, *derivatives(beta0, margins0), jnp.asarray(0), jnp.asarray(False))
    beta, _, _, _, viol, iters, _ = jax.lax.while_loop(not_done, newton_step, state0)
    return beta, iters, viol


def _solve(features, targets, cw, beta0, rows, solver: Solver, batch_axes):
    """One binary problem: (N, d) features, (N,) targets and cw, (d + 1,) beta0 -> beta etc."""
    aug = jnp.concatenate([features, jnp.ones_like(features[:, :1])], axis=1)
    solve = {"newton": _newton_one, "fista": _fista_one, "sklearn": sklearn_l1.solve}[solver.method]
    return solve(aug, targets, cw, beta0, rows, solver=solver, batch_axes=batch_axes)


_OVR_AXIS = "one_vs_rest"  # fit_l1_logreg's vmap over the binary problems


def _ovr_targets(labels, num_classes, dtype):
    """(K, N) in {-1, +1}: K = 1 (positive class 1) for binary, else one row per class."""
    positives = jnp.arange(1, 2) if num_classes == 2 else jnp.arange(num_classes)
    return jnp.where(labels[None, :] == positives[:, None], 1.0, -1.0).astype(dtype)


@program_cache.jit(static_argnames=("num_classes", "solver"))
def fit_l1_logreg(
    features: jnp.ndarray,
    labels: jnp.ndarray,
    sample_weight: jnp.ndarray,
    c: jnp.ndarray,
    *,
    num_classes: int,
    solver: Solver = DEFAULT_SOLVER,
    init: jnp.ndarray | None = None,
    rows: jnp.ndarray | None = None,
) -> tuple[heads.LinearHead, dict[str, jnp.ndarray]]:
    """L1 logistic regression as scikit-learn's liblinear defines it, binary or one-vs-rest.

    Args:
      features: (N, d) float.
      labels: (N,) int in [0, C).
      sample_weight: (N,) float, 0 for rows left out (fixed shapes for subsets).
      c: () float, inverse regularization strength C.
      num_classes: C. With C == 2 one problem is solved (positive class 1, as liblinear);
        otherwise one problem per class (one-vs-rest).
      solver: `Solver` settings (method, tolerance, caps).
      init: optional (K, d + 1) warm start (coefficients, then intercept), as ``info["beta"]``.
      rows: optional (M,) int indices of the rows with sample_weight > 0 (padding rows of
        weight 0 may be listed; rows not listed must have weight 0): the Newton model and line
        search then read only these rows (ignored by FISTA).

    Returns:
      (head, info): the head (weight (C, d), bias (C,)); binary problems give logits
      (-z/2, z/2). ``info`` has ``coef`` (K, d) and ``intercept`` (K,) as scikit-learn reports
      them (K = 1 for binary, else C), ``beta`` (K, d + 1) both together, ``objective`` (K,),
      ``iterations`` (K,), ``violation`` (K,).
    """
    targets = _ovr_targets(labels, num_classes, features.dtype)
    cw = jnp.asarray(c, features.dtype) * jnp.asarray(sample_weight, features.dtype)
    if init is None:
        init = jnp.zeros((targets.shape[0], features.shape[1] + 1), features.dtype)
    solve = functools.partial(_solve, solver=solver, batch_axes=(*solver.batch_axes, _OVR_AXIS))
    beta, iters, viol = jax.vmap(solve, in_axes=(None, 0, None, 0, None), axis_name=_OVR_AXIS)(
        features, targets, cw, init, rows
    )
    coef, intercept = beta[:, :-1], beta[:, -1]
    objective = jax.vmap(l1_logreg_objective, in_axes=(0, 0, None, 0, None, None))(
        coef, intercept, features, targets, sample_weight, jnp.asarray(c, features.dtype)
    )
    info = dict(
        coef=coef,
        intercept=intercept,
        beta=beta,
        objective=objective,
        iterations=iters,
        violation=viol,
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
