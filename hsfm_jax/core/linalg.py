"""CPU kernel shaping: products with the few class vectors of a linear head, and the small
reductions and (S, S) products inside the hand-written meta-gradient loops.

Everything here is the plain operation (same values up to the order of float sums) written in
the form XLA:CPU runs fastest; on other backends each is the plain operation.

Products of a tall matrix with the few class vectors of a linear head, ``x @ w.T`` (N, C) and
``g.T @ x`` (C, d): for C = 2, matrix-vector work, which XLA:CPU runs faster as C separate
matrix-vector products while x is small enough to stay in cache, and slower past about a million
entries (the whole-run and meta-gradient timings of benchmarks/results/cpu.json were measured
with these thresholds).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_PER_CLASS_MAX_C = 4
_PER_CLASS_MAX_ENTRIES = 2**20
# Row reductions over the C classes inside the unrolled loops: for small C, written as C - 1
# elementwise maximum/add ops on column slices, which XLA fuses with the exp and the divide into
# one kernel (a reduce is a separate kernel on XLA:CPU, and the loops are bound by per-kernel
# overhead: S x C is tiny).
_UNROLLED_ROW_REDUCE_MAX_C = 8
# (S, S) @ (S, C) inside the loops: as a broadcast multiply and sum when S is small, so that XLA
# fuses it with the elementwise work around it (a dot is a kernel of its own).
_FUSED_MATMUL_MAX_S = 64


def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def _per_class(x: jnp.ndarray, num_classes: int) -> bool:
    return (
        _on_cpu()
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
    if C > _PER_CLASS_MAX_C or not _on_cpu():
        return u @ v
    return sum(u[:, c : c + 1] * v[c] for c in range(C))


def matmul_tn(g: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """g (N, C)^T @ x (N, d) -> (C, d), e.g. a head's weight gradient from per-row coefficients."""
    C = g.shape[-1]
    if not _per_class(x, C):
        return g.T @ x
    return jnp.stack([g[:, c] @ x for c in range(C)])


def _row_reduce(op, x, reduce_fn):
    """op-reduction of x (..., C) over its last axis, keeping it: (..., 1)."""
    C = x.shape[-1]
    if C > _UNROLLED_ROW_REDUCE_MAX_C or not _on_cpu():
        return reduce_fn(x, axis=-1, keepdims=True)
    return functools.reduce(op, [x[..., c : c + 1] for c in range(C)])


def row_max(x: jnp.ndarray) -> jnp.ndarray:
    """max over the last axis, kept: (..., C) -> (..., 1)."""
    return _row_reduce(jnp.maximum, x, jnp.max)


def row_sum(x: jnp.ndarray) -> jnp.ndarray:
    """sum over the last axis, kept: (..., C) -> (..., 1)."""
    return _row_reduce(jnp.add, x, jnp.sum)


def square_matmul(K: jnp.ndarray, X: jnp.ndarray) -> jnp.ndarray:
    """K (S, S) @ X (S, C)."""
    if K.shape[0] > _FUSED_MATMUL_MAX_S or not _on_cpu():
        return K @ X
    return jnp.sum(K[:, :, None] * X[None], axis=1)
