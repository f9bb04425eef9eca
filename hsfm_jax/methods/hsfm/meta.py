"""Inner unroll and meta-gradient with respect to the support embeddings (paper Eqs. 12-17).

The inner loop is T plain gradient-descent steps of the linear head on the (learnable) support
embeddings H (Eq. 13); the outer loss is the mean cross-entropy of the adapted head on the hard
set Q (Eq. 16); the meta-gradient is its gradient with respect to H, through the unroll.

Three exact ways to compute that gradient, selected by `method` (all equal at float64, see
tests/methods/test_meta_variants.py), plus "auto":

- "autodiff": `jax.grad` through the `lax.scan` of the unroll (`inner_unroll`); with `remat` each
  step is wrapped in `jax.checkpoint`. The reference the others are tested against.
- "vjp" (`meta_vjp`): the same unroll with a hand-written backward pass.
- "gram" (`meta_gram`): the closed-form unroll on K = H H^T, whose loop carries no d-sized array.
- "auto": `meta_cost.choose_method` by the flop counts of the problem's shapes.

float32 and the "sgd" meta-optimizer: the meta-gradient reaches H through
alpha * (softmax - onehot) / |S| in every inner step, so its entries are O(alpha / |S|) of H.
With the paper's CelebA/ResNet settings (Table 11: alpha = 5e-5, |S| = 2048, T = 10, outer
lr eta = 0.1) a plain SGD step eta * g is ~1e-9 of |h| for the median entry (~1e-5 for the
largest), far below float32's half-ulp (6e-8): in float32 ~99% of the entries of H do not move
at all (h + u == h), so "sgd" silently does (almost) nothing. Adam (the released code's
meta-optimizer, our default) divides by the gradient's RMS, takes steps of ~eta, and is not
affected. For "sgd" at such settings either run in float64 (`config.float64 = True`; the steps
are then kept, though still ~1e-9 relative, as in the paper's Eq. 17 with these rates) or
rescale the meta lr by |S| / alpha (eta' = eta * |S| / alpha makes the step O(eta) relative
and visible in float32). tests/methods/test_meta_variants.py shows all three.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from hsfm_jax.core import heads, losses
from hsfm_jax.methods.hsfm import meta_cost, meta_gram, meta_vjp

META_GRADIENTS = ("autodiff", "vjp", "gram", "auto")


def inner_unroll(
    head: heads.LinearHead,
    support: jnp.ndarray,
    support_labels: jnp.ndarray,
    *,
    inner_steps: int,
    inner_lr: float | jnp.ndarray,
    wrap_step: Callable | None = None,
) -> heads.LinearHead:
    """T steps of gradient descent on the mean CE over the support set (Eq. 13).

    Args:
      head: starting head, weight (C, d), bias (C,).
      support: (S, d) support embeddings H.
      support_labels: (S,) int.
      inner_steps: T.
      inner_lr: alpha.
      wrap_step: applied to the scan step, e.g. `jax.checkpoint` (recompute each step in the
        backward pass, for long T).

    Returns:
      The adapted head (W^(T), b^(T)) (Eq. 14).
    """
    grad_fn = jax.grad(losses.head_loss)

    def step(h, _):
        g = grad_fn(h, support, support_labels)
        return jax.tree_util.tree_map(lambda p, gp: p - inner_lr * gp, h, g), None

    if wrap_step is not None:
        step = wrap_step(step)
    adapted, _ = jax.lax.scan(step, head, None, length=inner_steps)
    return adapted


def _autodiff_outer_loss(
    support, head, support_labels, query, query_labels, inner_lr, *, inner_steps, wrap_step=None
):
    adapted = inner_unroll(
        head,
        support,
        support_labels,
        inner_steps=inner_steps,
        inner_lr=inner_lr,
        wrap_step=wrap_step,
    )
    return losses.head_loss(adapted, query, query_labels)


def resolve_method(method: str, support: jnp.ndarray, query: jnp.ndarray, head, inner_steps: int):
    """`method`, with "auto" replaced by `meta_cost.choose_method` for these shapes."""
    if method not in META_GRADIENTS:
        raise ValueError(f"meta_gradient must be one of {META_GRADIENTS}, got {method!r}")
    if method != "auto":
        return method
    return meta_cost.choose_method(
        support_size=support.shape[-2],
        query_size=query.shape[-2],
        num_classes=head.weight.shape[-2],
        dim=support.shape[-1],
        inner_steps=inner_steps,
    )


def outer_loss(
    support: jnp.ndarray,
    head: heads.LinearHead,
    support_labels: jnp.ndarray,
    hard_set: tuple[jnp.ndarray, jnp.ndarray],
    *,
    inner_steps: int,
    inner_lr: float | jnp.ndarray,
    remat: bool = False,
    method: str = "autodiff",
) -> jnp.ndarray:
    """L_out(H; Q) (Eq. 16): CE on the hard set of the head adapted on (H, y_S).

    Every `method` gives the same value and (under `jax.grad`) the same gradient with respect
    to support, head, the hard set's features and inner_lr; they differ in speed and memory.

    Args:
      support: (S, d) H, the argument the meta-gradient is taken with respect to.
      head: (W^(0), b^(0)), weight (C, d), bias (C,).
      support_labels: (S,) int.
      hard_set: Q as (features (Q, d), labels (Q,) int).
      inner_steps: T.
      inner_lr: alpha.
      remat: `jax.checkpoint` each step of the autodiff unroll (long T). The hand-written
        methods keep O(T (S + d) C) and have nothing to recompute.
      method: one of META_GRADIENTS.
    """
    query, query_labels = hard_set
    method = resolve_method(method, support, query, head, inner_steps)
    if method in ("vjp", "gram"):
        C, dtype = head.weight.shape[0], support.dtype
        implementation = meta_vjp if method == "vjp" else meta_gram
        return implementation.outer_loss(
            support,
            head.weight,
            head.bias,
            jax.nn.one_hot(support_labels, C, dtype=dtype),
            query,
            jax.nn.one_hot(query_labels, C, dtype=dtype),
            inner_steps,
            jnp.asarray(inner_lr, dtype),
        )
    wrap_step = jax.checkpoint if remat else None
    args = (support, head, support_labels, query, query_labels, inner_lr)
    return _autodiff_outer_loss(*args, inner_steps=inner_steps, wrap_step=wrap_step)


@functools.partial(jax.jit, static_argnames=("inner_steps", "remat", "method"))
def meta_value_and_grad(
    support: jnp.ndarray,
    head: heads.LinearHead,
    support_labels: jnp.ndarray,
    hard_set: tuple[jnp.ndarray, jnp.ndarray],
    *,
    inner_steps: int,
    inner_lr: float | jnp.ndarray,
    remat: bool = False,
    method: str = "autodiff",
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(L_out, dL_out/dH): the outer loss and its meta-gradient (S, d) w.r.t. the support.

    Shapes as in `outer_loss`; `method` picks the algorithm (module docstring).
    """
    return jax.value_and_grad(
        functools.partial(
            outer_loss, inner_steps=inner_steps, remat=remat, method=method, inner_lr=inner_lr
        )
    )(support, head, support_labels, hard_set)
