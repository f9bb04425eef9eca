"""Inner unroll and meta-gradient with respect to the support embeddings (paper Eqs. 12-17).

The inner loop is T plain gradient-descent steps of the linear head on the (learnable) support
embeddings H (Eq. 13); the outer loss is the mean cross-entropy of the adapted head on the hard
set Q (Eq. 16); the meta-gradient is its gradient with respect to H, through the unroll.

Three exact ways to compute that gradient, selected by `method` (all equal at float64, see
tests/test_meta_variants.py), plus "auto":

- "autodiff": `jax.grad` through the `lax.scan` of the unroll (`remat` wraps each step in
  `jax.checkpoint`; the other methods keep only O(T (S + d) C) per step and ignore it). The
  reference the others are tested against.
- "vjp": a hand-written backward pass (`jax.custom_vjp`). The forward pass keeps W^(t) and the
  softmax P^(t) of each step; the backward pass reads H twice per step (H dW^T and dZ^T H) and
  never touches dL/dH inside the loop: dL/dH is the sum over steps of rank-C terms
  (-alpha G_t dW_{t+1} + dZ_t W_t), assembled at the end by one (S, 2TC) @ (2TC, d) matmul.
  Autodiff instead read-modify-writes the (S, d) gradient twice per step.
- "gram": the closed-form unroll. After t steps W^(t) = W^(0) + A_t H with A_t (C, S), so
  the support logits follow Z_{t+1} = Z_t - alpha (K + 1 1^T) G_t with K = H H^T (S, S): the
  loop carries only Z (S, C), without d, and its reverse pass is hand-written too. The d-sized
  work is K and Z_0 = H W^(0)T, W^(T) = W^(0) + A_T H once at the end for the hard-set logits,
  and in the backward pass dW_T = dZ_Q^T Q, dA_T = dW_T H^T and
  dL/dH = (dK + dK^T) H + dZ_0 W^(0) + A_T^T dW_T. 2 S^2 d + 5 S C d + 3 T S^2 C
  multiply-adds against the direct unroll's 6 T S C d: a win when S is small next to 3 T C and d (Waterbirds/ResNet:
  S = 32), a loss when S is large (CelebA: S = 2048 makes K cost S^2 d).
- "auto": `choose_method`: "gram" when it needs no more flops (`flops`) than the direct
  unroll, or at most 2x as many on small problems (< 1 GFLOP, overhead-bound); else "vjp".
  The rule matches every size benchmarks/meta_gradient.py measured on CPU.

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
and visible in float32). tests/test_meta_variants.py shows all three.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from hsfm_jax import heads, linalg, losses

META_GRADIENTS = ("autodiff", "vjp", "gram", "auto")

# "auto" (`choose_method`): below _SMALL_FLOPS, "gram" may do up to _GRAM_MAX_RATIO x the flops.
_GRAM_MAX_RATIO = 2.0
_SMALL_FLOPS = 1e9


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


def _autodiff_outer_loss(support, head, support_labels, query, query_labels, inner_lr, *, T, remat):
    adapted = inner_unroll(
        head, support, support_labels, inner_steps=T, inner_lr=inner_lr, remat=remat
    )
    return losses.head_loss(adapted, query, query_labels)


# ------------------------------------------------------------------ "vjp": hand-written backward


# Row reductions over the C classes inside the unrolled loops: for small C, written as C - 1
# elementwise maximum/add ops on column slices, which XLA fuses with the exp and the divide into
# one kernel (a reduce is a separate kernel on XLA:CPU, and the loops are bound by per-kernel
# overhead: S x C is tiny). Same result; for larger C the usual reduction.
_UNROLLED_ROW_REDUCE_MAX_C = 8


def _row_reduce(op, x, reduce_fn):
    """op-reduction of x (..., C) over its last axis, keeping it: (..., 1)."""
    C = x.shape[-1]
    if C > _UNROLLED_ROW_REDUCE_MAX_C:
        return reduce_fn(x, axis=-1, keepdims=True)
    return functools.reduce(op, [x[..., c : c + 1] for c in range(C)])


def _row_sum(x):
    return _row_reduce(jnp.add, x, jnp.sum)


# (S, S) @ (S, C) inside the loops: as a broadcast multiply and sum when S is small, so that XLA
# fuses it with the elementwise work around it (a dot is a kernel of its own). Same result.
_FUSED_MATMUL_MAX_S = 64


def _loop_matmul(K, X):
    """K (S, S) @ X (S, C)."""
    if K.shape[0] > _FUSED_MATMUL_MAX_S:
        return K @ X
    return jnp.sum(K[:, :, None] * X[None], axis=1)


def _softmax(logits):
    e = jnp.exp(logits - _row_reduce(jnp.maximum, logits, jnp.max))
    return e / _row_sum(e)


def _softmax_grad_coeff(logits, onehot, n):
    """(softmax(logits), (softmax - onehot) / n): P and the CE gradient w.r.t. the logits."""
    p = _softmax(logits)
    return p, (p - onehot) / n


def _vjp_forward(H, W0, b0, Y, alpha, T, remat):
    """Unroll keeping what the backward pass needs: W_t (T, C, d) and P_t (T, S, C)."""
    S = H.shape[0]

    def step(carry, _):
        W, b = carry
        P, G = _softmax_grad_coeff(linalg.matmul_nt(H, W) + b, Y, S)
        return (W - alpha * linalg.matmul_tn(G, H), b - alpha * G.sum(0)), (W, P)

    if remat:
        step = jax.checkpoint(step)
    (WT, bT), (Ws, Ps) = jax.lax.scan(step, (W0, b0), None, length=T)
    return WT, bT, Ws, Ps


def _outer_ce(Q, WT, bT, YQ):
    logits = linalg.matmul_nt(Q, WT) + bT
    return -jnp.mean(jnp.sum(YQ * jax.nn.log_softmax(logits, axis=-1), axis=-1)), logits


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _vjp_outer_loss(H, W0, b0, Y, Q, YQ, T, remat, alpha):
    WT, bT, _, _ = _vjp_forward(H, W0, b0, Y, alpha, T, remat)
    return _outer_ce(Q, WT, bT, YQ)[0]


def _vjp_fwd(H, W0, b0, Y, Q, YQ, T, remat, alpha):
    WT, bT, Ws, Ps = _vjp_forward(H, W0, b0, Y, alpha, T, remat)
    loss, logits_q = _outer_ce(Q, WT, bT, YQ)
    return loss, (H, Y, Q, YQ, alpha, WT, Ws, Ps, logits_q)


def _vjp_bwd(T, remat, res, g):
    H, Y, Q, YQ, alpha, WT, Ws, Ps, logits_q = res
    S, nq = H.shape[0], Q.shape[0]
    _, dZq = _softmax_grad_coeff(logits_q, YQ, nq)
    dZq = g * dZq
    dW, db = linalg.matmul_tn(dZq, Q), dZq.sum(0)  # cotangent of (W_T, b_T)
    dQ = dZq @ WT

    def step(carry, xs):
        dW, db, dalpha = carry  # cotangent of (W_{t+1}, b_{t+1})
        W, P = xs
        G = (P - Y) / S
        # W_{t+1} = W_t - alpha G^T H,  b_{t+1} = b_t - alpha 1^T G
        U = linalg.matmul_nt(H, dW)  # (S, C): one read of H
        dG = -alpha * (U + db)
        dalpha = dalpha - jnp.sum(G * U) - jnp.dot(db, G.sum(0))
        # G = (softmax(Z) - Y) / S
        dZ = P * (dG - _row_sum(dG * P)) / S
        # Z = H W_t^T + b_t; the dH terms (-alpha G dW_{t+1} + dZ W_t) are assembled after the loop
        new = (dW + linalg.matmul_tn(dZ, H), db + dZ.sum(0), dalpha)  # the second read of H
        return new, (-alpha * G, dW, dZ)

    if remat:
        step = jax.checkpoint(step)
    zero = jnp.zeros((), H.dtype)
    (dW0, db0, dalpha), (aG, dWs, dZs) = jax.lax.scan(step, (dW, db, zero), (Ws, Ps), reverse=True)
    # dH = sum_t (-alpha G_t) dW_{t+1} + dZ_t W_t: one (S, 2TC) @ (2TC, d) matmul.
    C, d = Ws.shape[1], Ws.shape[2]
    left = jnp.concatenate([aG, dZs], axis=0).transpose(1, 0, 2).reshape(S, 2 * T * C)
    right = jnp.concatenate([dWs, Ws], axis=0).reshape(2 * T * C, d)
    dH = left @ right
    return dH, dW0, db0, None, dQ, None, dalpha.astype(jnp.result_type(alpha))


_vjp_outer_loss.defvjp(_vjp_fwd, _vjp_bwd)


def _onehot(labels, num_classes, dtype):
    return jax.nn.one_hot(labels, num_classes, dtype=dtype)


def _vjp_entry(support, head, support_labels, query, query_labels, inner_lr, *, T, remat):
    C = head.weight.shape[0]
    dtype = support.dtype
    alpha = jnp.asarray(inner_lr, dtype)
    return _vjp_outer_loss(
        support,
        head.weight,
        head.bias,
        _onehot(support_labels, C, dtype),
        query,
        _onehot(query_labels, C, dtype),
        T,
        remat,
        alpha,
    )


# --------------------------------------------------------------- "gram": closed-form unroll


def _gram_unroll(K1, Z0, b0, Y, alpha, T):
    """The inner loop on the support logits, from K1 = H H^T + 1 1^T (S, S) and Z0 = H W_0^T (S, C).

    W_t = W_0 + A_t H with A_{t+1} = A_t - alpha G_t^T, so the support logits
    Z_t = H W_t^T + b_t follow Z_{t+1} = Z_t - alpha K1 G_t (the 1 1^T is the bias step). The
    loop carries only Z (S, C): one (S, S) @ (S, C) product and a softmax.

    Returns:
      A_T (C, S), b_T (C,), and P_t (T, S, C) for the backward pass.
    """
    S = Z0.shape[0]

    def step(Z, _):
        P, G = _softmax_grad_coeff(Z, Y, S)
        return Z - alpha * _loop_matmul(K1, G), P

    _, Ps = jax.lax.scan(step, Z0 + b0, None, length=T)
    sum_G = (Ps.sum(0) - T * Y) / S  # (S, C)
    return -alpha * sum_G.T, b0 - alpha * sum_G.sum(0), Ps


def _gram_unroll_bwd(K1, Y, alpha, Ps, dAT, dbT):
    """Hand-written reverse pass of `_gram_unroll`: (dK1, dZ0, db0, dalpha) from (dA_T, db_T).

    Every G_t receives R = -alpha (dA_T^T + 1 db_T^T) through A_T and b_T, plus
    -alpha K1 dZ_{t+1} through Z_{t+1}; dZ_t = dZ_{t+1} + P_t * (dG_t - rowsum(P_t dG_t)) / S.
    dK1 = -alpha sum_t dZ_{t+1} G_t^T is one (S, TC) @ (TC, S) matmul after the loop.
    """
    S, C = Y.shape
    T = Ps.shape[0]
    R = -alpha * (dAT.T + dbT)

    def step(dZ, P):  # dZ: cotangent of Z_{t+1}
        dG = R - alpha * _loop_matmul(K1, dZ)
        return dZ + P * (dG - _row_sum(dG * P)) / S, dZ

    dZ0, dZs = jax.lax.scan(step, jnp.zeros((S, C), K1.dtype), Ps, reverse=True)
    Gs = (Ps - Y) / S  # (T, S, C)
    dZs_flat = dZs.transpose(1, 0, 2).reshape(S, T * C)
    dK1 = -alpha * (dZs_flat @ Gs.transpose(0, 2, 1).reshape(T * C, S))
    # alpha enters through every step and through A_T, b_T.
    sum_G = Gs.sum(0)
    dalpha = -jnp.sum(dAT.T * sum_G) - jnp.dot(dbT, sum_G.sum(0))
    dalpha = dalpha - jnp.sum(dZs * jnp.einsum("st,ktc->ksc", K1, Gs))
    return dK1, dZ0, dbT + dZ0.sum(0), dalpha


def _gram_forward(H, W0, b0, Y, Q, YQ, T, remat, alpha):
    K1, Z0 = H @ H.T + 1.0, linalg.matmul_nt(H, W0)
    AT, bT, Ps = _gram_unroll(K1, Z0, b0, Y, alpha, T)
    # W_T, formed once: cheaper than M = Q H^T whenever C < |Q| S / (S + |Q|).
    WT = W0 + linalg.matmul_tn(AT.T, H)
    loss, logits_q = _outer_ce(Q, WT, bT, YQ)
    return loss, (K1, AT, Ps, WT, logits_q)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _gram_outer_loss_core(H, W0, b0, Y, Q, YQ, T, remat, alpha):
    return _gram_forward(H, W0, b0, Y, Q, YQ, T, remat, alpha)[0]


def _gram_fwd(H, W0, b0, Y, Q, YQ, T, remat, alpha):
    loss, res = _gram_forward(H, W0, b0, Y, Q, YQ, T, remat, alpha)
    return loss, (H, W0, Y, Q, YQ, alpha, *res)


def _gram_bwd(T, remat, res, g):
    """d-sized work: dW_T = dZ_Q^T Q, dA_T = dW_T H^T, and dH = (dK + dK^T) H + rank-2C terms."""
    H, W0, Y, Q, YQ, alpha, K1, AT, Ps, WT, logits_q = res
    _, dZq = _softmax_grad_coeff(logits_q, YQ, Q.shape[0])
    dZq = g * dZq
    dWT, dbT = linalg.matmul_tn(dZq, Q), dZq.sum(0)
    dQ = dZq @ WT
    dAT = linalg.matmul_nt(H, dWT).T
    dK, dZ0, db0, dalpha = _gram_unroll_bwd(K1, Y, alpha, Ps, dAT, dbT)  # dK = dK1
    # dH = (dK + dK^T) H + dZ0 W_0 + A_T^T dW_T, and dW_0 = dW_T + dZ0^T H. dK + dK^T is
    # symmetric and contracted over its first axis: on XLA:CPU measured ~1.4x faster than M @ H.
    dH = jax.lax.dot_general(dK + dK.T, H, (((0,), (0,)), ((), ())))
    dH = dH + linalg.low_rank(dZ0, W0) + linalg.low_rank(AT.T, dWT)
    dW0 = dWT + linalg.matmul_tn(dZ0, H)
    return dH, dW0, db0, None, dQ, None, dalpha


_gram_outer_loss_core.defvjp(_gram_fwd, _gram_bwd)


def _gram_outer_loss(support, head, support_labels, query, query_labels, inner_lr, *, T, remat):
    """The closed-form unroll on K = H H^T (module docstring), with a hand-written d-sized VJP."""
    C = head.weight.shape[0]
    dtype = support.dtype
    return _gram_outer_loss_core(
        support,
        head.weight,
        head.bias,
        _onehot(support_labels, C, dtype),
        query,
        _onehot(query_labels, C, dtype),
        T,
        remat,
        jnp.asarray(inner_lr, dtype),
    )


# ----------------------------------------------------------------------------- dispatch


def flops(
    method: str, *, support_size: int, query_size: int, num_classes: int, dim: int, inner_steps: int
) -> float:
    """Multiply-adds x 2 of one value-and-meta-gradient by `method` (matmuls only).

    "autodiff" and "vjp" do the same matmuls: per step 2 S C d forward (H W^T, G^T H) and
    2 S C d backward, plus 2 T S C d for the dH terms. "gram" forms K and its backward
    (2 S^2 d), H W_0^T and W_T (5 S C d with their backward), and its loop costs 3 T S^2 C.
    Both add 2 |Q| C d for the hard-set logits and dW_T.
    """
    S, Qn, C, d, T = support_size, query_size, num_classes, dim, inner_steps
    outer = 2 * Qn * C * d  # Q W_T^T, and dW_T = dZ^T Q
    if method in ("autodiff", "vjp"):
        return 2.0 * (6 * T * S * C * d + outer)
    if method == "gram":
        # K and (dK + dK^T) H; H W_0^T, W_T = W_0 + A_T H and their backward; the (S, S) loop.
        return 2.0 * (2 * S * S * d + 5 * S * C * d + 3 * T * S * S * C + outer)
    raise ValueError(f"no flop count for {method!r}")


def choose_method(
    *, support_size: int, query_size: int, num_classes: int, dim: int, inner_steps: int
) -> str:
    """The rule behind "auto", from what benchmarks/meta_gradient.py measured on CPU.

    "gram" if its flops are at most those of the direct unroll ("vjp"), or at most
    `_GRAM_MAX_RATIO` (2) times as many while the direct unroll is under `_SMALL_FLOPS` (1e9):
    small problems are bound by per-kernel overhead, and the Gram loop runs fewer, larger
    kernels (benchmarks/results/cpu.json: 1.2x faster at 1.5x the flops, S = 128; a tie at
    1.2x, T = 5; 2.4x slower at 3.2x, T = 1; at 4.5x, the ViT size, 2.4x slower when last
    timed). Large problems are compute-bound and the flop count decides (fine-grained: "gram"
    at 1.17x the flops is 1.2x slower). Else "vjp".
    """
    sizes = dict(
        support_size=support_size,
        query_size=query_size,
        num_classes=num_classes,
        dim=dim,
        inner_steps=inner_steps,
    )
    direct, gram = flops("vjp", **sizes), flops("gram", **sizes)
    if gram <= direct or (direct < _SMALL_FLOPS and gram <= _GRAM_MAX_RATIO * direct):
        return "gram"
    return "vjp"


def resolve_method(method: str, support: jnp.ndarray, query: jnp.ndarray, head, inner_steps: int):
    """`method`, with "auto" replaced by `choose_method` for these shapes."""
    if method not in META_GRADIENTS:
        raise ValueError(f"meta_gradient must be one of {META_GRADIENTS}, got {method!r}")
    if method != "auto":
        return method
    return choose_method(
        support_size=support.shape[-2],
        query_size=query.shape[-2],
        num_classes=head.weight.shape[-2],
        dim=support.shape[-1],
        inner_steps=inner_steps,
    )


_IMPLEMENTATIONS = {
    "autodiff": _autodiff_outer_loss,
    "vjp": _vjp_entry,
    "gram": _gram_outer_loss,
}


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
    method: str = "autodiff",
) -> jnp.ndarray:
    """L_out(H; Q) (Eq. 16): CE on the hard set of the head adapted on (H, y_S).

    Every `method` gives the same value and (under `jax.grad`) the same gradient with respect
    to support, head, query and inner_lr; they differ in speed and memory.

    Args:
      support: (S, d) H, the argument the meta-gradient is taken with respect to.
      head: (W^(0), b^(0)), weight (C, d), bias (C,).
      support_labels: (S,) int.
      query: (Q, d) hard-set features.
      query_labels: (Q,) int.
      inner_steps: T.
      inner_lr: alpha.
      remat: `jax.checkpoint` each step of the loop (long T; used by "autodiff" only).
      method: one of META_GRADIENTS.
    """
    method = resolve_method(method, support, query, head, inner_steps)
    return _IMPLEMENTATIONS[method](
        support, head, support_labels, query, query_labels, inner_lr, T=inner_steps, remat=remat
    )


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
    """(L_out, dL_out/dH): the outer loss and its meta-gradient (S, d) w.r.t. the support.

    Shapes as in `outer_loss`; `method` picks the algorithm (module docstring).
    """
    return jax.value_and_grad(
        functools.partial(
            outer_loss, inner_steps=inner_steps, remat=remat, method=method, inner_lr=inner_lr
        )
    )(support, head, support_labels, query, query_labels)
