"""Inner unroll and meta-gradient with respect to the support embeddings (paper Eqs. 12-17).

The inner loop is T plain gradient-descent steps of the linear head on the (learnable) support
embeddings H, as a `lax.scan`; the outer loss is the mean cross-entropy of the adapted head on the
hard set Q; the meta-gradient is `jax.grad` of the outer loss with respect to H, through the unroll.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from hsfm_jax import heads, losses

META_GRADIENTS = ("autodiff",)


def inner_unroll(
    head: heads.LinearHead,
    support: jnp.ndarray,
    support_labels: jnp.ndarray,
    *,
    inner_steps: int,
    inner_lr: float | jnp.ndarray,
    remat: bool = False,
) -> heads.LinearHead:
    """T steps of gradient descent on the mean CE over the support set (Eq. 13).

    Args:
      head: starting head, weight (C, d), bias (C,).
      support: (S, d) support embeddings H.
      support_labels: (S,) int.
      inner_steps: T.
      inner_lr: alpha.
      remat: wrap each step in `jax.checkpoint` (recompute in the backward pass, for long T).

    Returns:
      The adapted head (W^(T), b^(T)) (Eq. 14).
    """
    grad_fn = jax.grad(losses.head_loss)

    def step(h, _):
        g = grad_fn(h, support, support_labels)
        return jax.tree_util.tree_map(lambda p, gp: p - inner_lr * gp, h, g), None

    if remat:
        step = jax.checkpoint(step)
    adapted, _ = jax.lax.scan(step, head, None, length=inner_steps)
    return adapted


def outer_loss(
    support: jnp.ndarray,
    head: heads.LinearHead,
    support_labels: jnp.ndarray,
    query: jnp.ndarray,
    query_labels: jnp.ndarray,
    *,
    inner_steps: int,
    inner_lr: float | jnp.ndarray,
    remat: bool = False,
) -> jnp.ndarray:
    """L_out(H; Q) (Eq. 16): CE on the hard set of the head adapted on (H, y_S).

    Args:
      support: (S, d) H, the argument the meta-gradient is taken with respect to.
      head: (W^(0), b^(0)).
      support_labels: (S,).
      query: (Q, d) hard-set features.
      query_labels: (Q,).
    """
    adapted = inner_unroll(
        head, support, support_labels, inner_steps=inner_steps, inner_lr=inner_lr, remat=remat
    )
    return losses.head_loss(adapted, query, query_labels)


@functools.partial(jax.jit, static_argnames=("inner_steps", "remat", "method"))
def meta_value_and_grad(
    support: jnp.ndarray,
    head: heads.LinearHead,
    support_labels: jnp.ndarray,
    query: jnp.ndarray,
    query_labels: jnp.ndarray,
    *,
    inner_steps: int,
    inner_lr: float | jnp.ndarray,
    remat: bool = False,
    method: str = "autodiff",
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(L_out, dL_out/dH): the outer loss and its meta-gradient (S, d) w.r.t. the support."""
    if method not in META_GRADIENTS:
        raise ValueError(f"meta_gradient must be one of {META_GRADIENTS}, got {method!r}")
    return jax.value_and_grad(outer_loss)(
        support,
        head,
        support_labels,
        query,
        query_labels,
        inner_steps=inner_steps,
        inner_lr=inner_lr,
        remat=remat,
    )
