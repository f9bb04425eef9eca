"""L1 logistic regression by scikit-learn's liblinear on the host, from inside a jitted program.

DFR's ``solver.method = "sklearn"`` (`hsfm_jax.methods.dfr`): the same binary problem as its
JAX solvers, liblinear's ``||w||_1 + |b| + sum_i cw_i log(1 + exp(-t_i (w.x_i + b)))`` with the
intercept penalized (``intercept_scaling=1``), solved by ``LogisticRegression(solver=
"liblinear", l1_ratio=1)`` (the L1 penalty without sklearn 1.8's deprecated ``penalty=``) through
`jax.pure_callback`. Everything around the fits (subsamples, scalers, C selection, averaging)
stays the JAX program it is with the other solvers, so the draws and the protocol are the same
and only the fits differ, within the solvers' tolerances (tests/solvers/test_sklearn_l1.py).

Why: compiling the JAX solvers is most of a cold DFR call on a CPU (benchmarks/compile_time.py,
docs/compile_time.md), while liblinear needs no compilation; a one-off CPU run finishes sooner
with this. Warm, and on accelerators, the JAX solvers are faster: the callback runs the fits one
after another on the host (`vmap_method="sequential"`), and every call copies the features to
the host.

More than two classes are one-vs-rest in the caller (`dfr.fit_l1_logreg` maps the binary solve
over the classes), which is what scikit-learn's ``OneVsRestClassifier`` around liblinear does.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def available() -> bool:
    """Whether scikit-learn can be imported (it is an optional dependency of hsfm_jax)."""
    try:
        import sklearn.linear_model  # noqa: F401
    except ImportError:
        return False
    return True


def liblinear(
    aug: np.ndarray, targets: np.ndarray, cw: np.ndarray, *, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One binary L1 problem on the host.

    Args:
      aug: (N, p) features with a trailing column of ones (the intercept's column; liblinear
        adds its own, so it is dropped here).
      targets: (N,) in {-1, +1}; cw: (N,) C times the sample weight (rows with 0 are left out).
      tol, max_iter: liblinear's stopping tolerance and iteration cap.

    Returns:
      (beta (p,) coefficients then intercept, iterations (), violation ()) in aug's dtype; the
      violation is the largest L1 optimality violation at beta (the JAX solvers' criterion).
      With one class present liblinear cannot fit; beta is then 0 and the violation says how
      far that is from optimal.
    """
    from sklearn.linear_model import LogisticRegression

    aug, targets, cw = np.asarray(aug), np.asarray(targets), np.asarray(cw)
    dtype = aug.dtype
    keep = cw > 0
    x, positive, weight = aug[keep, :-1], targets[keep] > 0, cw[keep]
    beta = np.zeros(aug.shape[1], np.float64)
    iterations = 0
    if positive.any() and not positive.all():
        model = LogisticRegression(
            C=1.0,  # cw already holds C: liblinear's per-row cost is C * sample_weight
            solver="liblinear",
            l1_ratio=1,
            tol=tol,
            max_iter=max_iter,
            intercept_scaling=1.0,
            random_state=0,
        )
        model.fit(x.astype(np.float64), positive, sample_weight=weight.astype(np.float64))
        beta = np.concatenate([model.coef_[0], model.intercept_])
        iterations = int(np.max(model.n_iter_))
    return beta.astype(dtype), np.asarray(iterations, np.int32), _violation(aug, targets, cw, beta)


def _violation(aug, targets, cw, beta) -> np.ndarray:
    """Largest L1 optimality violation (minimum-norm subgradient) at beta, float64 on the host."""
    aug, beta = np.asarray(aug, np.float64), np.asarray(beta, np.float64)
    margins = targets * (aug @ beta)
    grad = aug.T @ (-cw * targets / (1.0 + np.exp(margins)))
    soft = np.sign(grad) * np.maximum(np.abs(grad) - 1.0, 0.0)
    violation = np.where(beta != 0, grad + np.sign(beta), soft)
    return np.asarray(np.max(np.abs(violation)), np.float32)


def solve(
    aug: jnp.ndarray,
    targets: jnp.ndarray,
    cw: jnp.ndarray,
    beta0: jnp.ndarray,
    rows: jnp.ndarray | None,
    *,
    solver: Any,
    batch_axes: tuple[str, ...] = (),
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """`liblinear` as a traced call, with the signature of DFR's JAX solvers.

    ``solver.tol`` and ``solver.newton_iters`` are liblinear's ``tol`` and ``max_iter`` (both
    default to the released DFR script's 1e-4 and 100). liblinear starts from zero, so the warm
    start `beta0` is not used; `rows` is not needed (rows with ``cw == 0`` are dropped on the
    host); `batch_axes` is for the JAX solvers' loop bounds.
    """
    del beta0, rows, batch_axes
    p = aug.shape[1]
    shapes = (
        jax.ShapeDtypeStruct((p,), aug.dtype),
        jax.ShapeDtypeStruct((), jnp.int32),
        jax.ShapeDtypeStruct((), jnp.float32),
    )
    host = functools.partial(liblinear, tol=float(solver.tol), max_iter=int(solver.newton_iters))
    beta, iterations, violation = jax.pure_callback(
        host, shapes, aug, targets, cw, vmap_method="sequential"
    )
    return beta, iterations, violation.astype(aug.dtype)
