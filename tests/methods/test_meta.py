"""Meta-gradient through the unrolled inner loop: finite differences and a NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hsfm_jax.core import heads
from hsfm_jax.methods.hsfm import meta


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def numpy_meta_gradient(W0, b0, H, y, Q, yq, *, steps, lr):
    """Independent reference: forward unroll, then hand-written reverse mode.

    Inner step: G_t = (softmax(H W_t^T + b_t) - Y) / S; W_{t+1} = W_t - lr G_t^T H;
    b_{t+1} = b_t - lr 1^T G_t. Outer: mean CE of (W_T, b_T) on (Q, yq).
    """
    S, C = H.shape[0], W0.shape[0]
    Y = np.eye(C)[y]
    Ws, bs, Ps = [W0], [b0], []
    for _ in range(steps):
        P = _softmax(H @ Ws[-1].T + bs[-1])
        Ps.append(P)
        G = (P - Y) / S
        Ws.append(Ws[-1] - lr * G.T @ H)
        bs.append(bs[-1] - lr * G.sum(axis=0))
    PQ = _softmax(Q @ Ws[-1].T + bs[-1])
    YQ = np.eye(C)[yq]
    loss = -np.mean(np.log(PQ[np.arange(len(yq)), yq]))
    GQ = (PQ - YQ) / len(yq)
    W_bar, b_bar = GQ.T @ Q, GQ.sum(axis=0)
    H_bar = np.zeros_like(H)
    for t in reversed(range(steps)):
        P, W = Ps[t], Ws[t]
        G = (P - Y) / S
        G_bar = -lr * (H @ W_bar.T + b_bar[None, :])
        H_bar += -lr * G @ W_bar
        dP = G_bar / S
        Z_bar = P * (dP - (P * dP).sum(axis=1, keepdims=True))
        W_bar = W_bar + Z_bar.T @ H
        b_bar = b_bar + Z_bar.sum(axis=0)
        H_bar += Z_bar @ W
    return loss, H_bar


def _problem(seed, S=6, d=5, C=3, Qn=7):
    rng = np.random.default_rng(seed)
    return dict(
        W0=rng.normal(size=(C, d)),
        b0=rng.normal(size=C),
        H=rng.normal(size=(S, d)),
        y=rng.integers(0, C, S),
        Q=rng.normal(size=(Qn, d)),
        yq=rng.integers(0, C, Qn),
    )


def _jax_value_and_grad(p, steps, lr, remat=False):
    head = heads.LinearHead(jnp.asarray(p["W0"]), jnp.asarray(p["b0"]))
    return meta.meta_value_and_grad(
        jnp.asarray(p["H"]),
        head,
        jnp.asarray(p["y"]),
        (jnp.asarray(p["Q"]), jnp.asarray(p["yq"])),
        inner_steps=steps,
        inner_lr=lr,
        remat=remat,
    )


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("remat", [False, True])
def test_matches_numpy_reference(steps, remat):
    with jax.enable_x64(True):
        p = _problem(steps)
        loss, grad = _jax_value_and_grad(p, steps, 0.5, remat)
        ref_loss, ref_grad = numpy_meta_gradient(**p, steps=steps, lr=0.5)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-12)


def test_matches_central_finite_differences():
    with jax.enable_x64(True):
        p = _problem(7, S=4, d=3, C=2, Qn=5)
        _, grad = _jax_value_and_grad(p, 3, 0.8)
        eps = 1e-6
        fd = np.zeros_like(p["H"])
        for i in np.ndindex(p["H"].shape):
            plus, minus = dict(p, H=p["H"].copy()), dict(p, H=p["H"].copy())
            plus["H"][i] += eps
            minus["H"][i] -= eps
            fd[i] = (
                _jax_value_and_grad(plus, 3, 0.8)[0] - _jax_value_and_grad(minus, 3, 0.8)[0]
            ) / (2 * eps)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)


def test_inner_unroll_is_gradient_descent():
    with jax.enable_x64(True):
        p = _problem(3)
        head = heads.LinearHead(jnp.asarray(p["W0"]), jnp.asarray(p["b0"]))
        adapted = meta.inner_unroll(
            head, jnp.asarray(p["H"]), jnp.asarray(p["y"]), inner_steps=1, inner_lr=0.1
        )
        P = _softmax(p["H"] @ p["W0"].T + p["b0"])
        G = (P - np.eye(3)[p["y"]]) / p["H"].shape[0]
        np.testing.assert_allclose(adapted.weight, p["W0"] - 0.1 * G.T @ p["H"], rtol=1e-12)
        np.testing.assert_allclose(adapted.bias, p["b0"] - 0.1 * G.sum(0), rtol=1e-12)


def test_unknown_method_is_an_error():
    p = _problem(0)
    head = heads.LinearHead(jnp.asarray(p["W0"], jnp.float32), jnp.asarray(p["b0"], jnp.float32))
    with pytest.raises(ValueError, match="meta_gradient must be one of"):
        meta.meta_value_and_grad(
            jnp.asarray(p["H"], jnp.float32),
            head,
            jnp.asarray(p["y"]),
            (jnp.asarray(p["Q"], jnp.float32), jnp.asarray(p["yq"])),
            inner_steps=1,
            inner_lr=0.1,
            method="magic",
        )
