"""Products of a tall matrix with the few class vectors of a linear head.

A head with C classes turns the (N, d) feature and gradient products into ``x @ w.T`` (N, C) and
``g.T @ x`` (C, d): for C = 2, matrix-vector work. XLA:CPU runs these faster as C separate
matrix-vector products than as one (N, d) x (d, C) matmul while x is small enough to stay in
cache (measured on the 2-core CPU of this project, d = 2048: ``g.T @ x`` 2.5x faster at N = 32,
1.7x at N = 512; ``x @ w.T`` 1.7x at N = 32, equal at N = 512), and slower past about a million
entries (N = 1199: 1.2x slower), so that is where the per-class form stops. Measured on XLA:CPU
only, so other backends keep the plain matmul. Same values up to the order of the float sums.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_PER_CLASS_MAX_C = 4
_PER_CLASS_MAX_ENTRIES = 2**20


def _per_class(x: jnp.ndarray, num_classes: int) -> bool:
    return (
        jax.default_backend() == "cpu"
        and num_classes <= _PER_CLASS_MAX_C
        and x.shape[-2] * x.shape[-1] <= _PER_CLASS_MAX_ENTRIES
    )


def matmul_nt(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """x (N, d) @ w (C, d)^T -> (N, C), e.g. logits from features and head weights."""
    C = w.shape[0]
    if not _per_class(x, C):
        return x @ w.T
    return jnp.stack([x @ w[c] for c in range(C)], axis=-1)


def low_rank(u: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    """u (N, C) @ v (C, d) -> (N, d): for small C, C broadcast outer products that XLA fuses with
    the elementwise work around them (a dot would be a kernel of its own)."""
    C = u.shape[-1]
    if C > _PER_CLASS_MAX_C:
        return u @ v
    return sum(u[:, c : c + 1] * v[c] for c in range(C))


def matmul_tn(g: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """g (N, C)^T @ x (N, d) -> (C, d), e.g. a head's weight gradient from per-row coefficients."""
    C = g.shape[-1]
    if not _per_class(x, C):
        return g.T @ x
    return jnp.stack([g[:, c] @ x for c in range(C)])
