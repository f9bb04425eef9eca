"""The "vjp" meta-gradient: the direct unroll with a hand-written backward pass (`jax.custom_vjp`).

The forward pass keeps W^(t) and the softmax P^(t) of each step; the backward pass reads H twice
per step (H dW^T and dZ^T H) and never touches dL/dH inside the loop: dL/dH is the sum over steps
of rank-C terms (-alpha G_t dW_{t+1} + dZ_t W_t), assembled at the end by one
(S, 2TC) @ (2TC, d) matmul. Autodiff instead read-modify-writes the (S, d) gradient twice per
step. Memory: O(T (S + d) C), so it needs no remat.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from hsfm_jax.core import linalg, losses


def _forward(H, W0, b0, Y, alpha, T):
    """Unroll keeping what the backward pass needs: W_t (T, C, d) and P_t (T, S, C)."""
    S = H.shape[0]

    def step(carry, _):
        W, b = carry
        P, G = losses.softmax_ce_grad(linalg.matmul_nt(H, W) + b, Y, S)
        return (W - alpha * linalg.matmul_tn(G, H), b - alpha * G.sum(0)), (W, P)

    (WT, bT), (Ws, Ps) = jax.lax.scan(step, (W0, b0), None, length=T)
    return WT, bT, Ws, Ps


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def outer_loss(H, W0, b0, Y, Q, YQ, T, alpha):
    """L_out on arrays: H (S, d), head W0 (C, d), b0 (C,), one-hot Y (S, C), Q (|Q|, d), one-hot
    YQ (|Q|, C), T inner steps (static), alpha."""
    WT, bT, _, _ = _forward(H, W0, b0, Y, alpha, T)
    return losses.onehot_cross_entropy(Q, WT, bT, YQ)[0]


def _fwd(H, W0, b0, Y, Q, YQ, T, alpha):
    WT, bT, Ws, Ps = _forward(H, W0, b0, Y, alpha, T)
    loss, logits_q = losses.onehot_cross_entropy(Q, WT, bT, YQ)
    return loss, (H, Y, Q, YQ, alpha, WT, Ws, Ps, logits_q)


def _bwd(T, res, g):
    H, Y, Q, YQ, alpha, WT, Ws, Ps, logits_q = res
    S, nq = H.shape[0], Q.shape[0]
    _, dZq = losses.softmax_ce_grad(logits_q, YQ, nq)
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
        dZ = P * (dG - linalg.row_sum(dG * P)) / S
        # Z = H W_t^T + b_t; the dH terms (-alpha G dW_{t+1} + dZ W_t) are assembled after the loop
        new = (dW + linalg.matmul_tn(dZ, H), db + dZ.sum(0), dalpha)  # the second read of H
        return new, (-alpha * G, dW, dZ)

    zero = jnp.zeros((), H.dtype)
    (dW0, db0, dalpha), (aG, dWs, dZs) = jax.lax.scan(step, (dW, db, zero), (Ws, Ps), reverse=True)
    # dH = sum_t (-alpha G_t) dW_{t+1} + dZ_t W_t: one (S, 2TC) @ (2TC, d) matmul.
    C, d = Ws.shape[1], Ws.shape[2]
    left = jnp.concatenate([aG, dZs], axis=0).transpose(1, 0, 2).reshape(S, 2 * T * C)
    right = jnp.concatenate([dWs, Ws], axis=0).reshape(2 * T * C, d)
    dH = left @ right
    return dH, dW0, db0, None, dQ, None, dalpha.astype(jnp.result_type(alpha))


outer_loss.defvjp(_fwd, _bwd)
