"""The meta-gradient methods ("vjp", "gram", "auto") against plain autodiff, and float32 + SGD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hsfm_jax.core import heads
from hsfm_jax.methods.hsfm import meta, meta_cost

VARIANTS = ("vjp", "gram", "auto")


def _problem(seed, *, S, d, C, Qn, dtype=np.float64, weight_scale=1.0):
    rng = np.random.default_rng(seed)
    return dict(
        support=jnp.asarray(rng.normal(size=(S, d)), dtype),
        head=heads.LinearHead(
            jnp.asarray(weight_scale * rng.normal(size=(C, d)), dtype),
            jnp.asarray(rng.normal(size=C), dtype),
        ),
        support_labels=jnp.asarray(rng.integers(0, C, S), jnp.int32),
        query=jnp.asarray(rng.normal(size=(Qn, d)), dtype),
        query_labels=jnp.asarray(rng.integers(0, C, Qn), jnp.int32),
    )


def _all_grads(p, lr, *, methods, steps, remat=False):
    """{method: (value, grads w.r.t. support, head, query, inner_lr)}, one compiled program."""

    def one(method, support, head, query, inner_lr):
        return meta.outer_loss(
            support,
            head,
            p["support_labels"],
            (query, p["query_labels"]),
            inner_steps=steps,
            inner_lr=inner_lr,
            remat=remat,
            method=method,
        )

    @jax.jit
    def every(support, head, query, inner_lr):
        return {
            m: jax.value_and_grad(lambda *a, m=m: one(m, *a), argnums=(0, 1, 2, 3))(
                support, head, query, inner_lr
            )
            for m in methods
        }

    return every(p["support"], p["head"], p["query"], lr)


@pytest.mark.parametrize(
    "C, steps, remat", [(2, 1, False), (3, 4, False), (5, 6, True), (2, 15, True)]
)
def test_equals_autodiff_float64(C, steps, remat):
    with jax.enable_x64(True):
        p = _problem(C + steps, S=4 * C, d=7, C=C, Qn=3 * C + 1)
        lr = jnp.asarray(0.4, jnp.float64)
        out = _all_grads(p, lr, methods=("autodiff", *VARIANTS), steps=steps, remat=remat)
        ref_value, ref_grads = out["autodiff"]
        for method in VARIANTS:
            value, grads = out[method]
            np.testing.assert_allclose(value, ref_value, rtol=1e-13, err_msg=method)
            for got, want in zip(
                jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads), strict=True
            ):
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-13, err_msg=method)


def _meta_grads(p, methods, **kw):
    """{method: meta_value_and_grad(...)} of problem p, one compiled program."""
    every = jax.jit(
        lambda *args: {m: meta.meta_value_and_grad(*args, method=m, **kw) for m in methods}
    )
    return every(p["support"], p["head"], p["support_labels"], (p["query"], p["query_labels"]))


def test_meta_value_and_grad_float64():
    """The jitted entry point hsfm.py calls, at a Waterbirds-like shape (d > S, |Q| > S)."""
    with jax.enable_x64(True):
        p = _problem(0, S=16, d=96, C=2, Qn=40, weight_scale=0.1)
        out = _meta_grads(p, ("autodiff", *VARIANTS), inner_steps=15, inner_lr=0.05)
        ref_value, ref_grad = out["autodiff"]
        for method in VARIANTS:
            value, grad = out[method]
            np.testing.assert_allclose(value, ref_value, rtol=1e-12, err_msg=method)
            np.testing.assert_allclose(
                grad, ref_grad, rtol=1e-8, atol=1e-12 * np.abs(ref_grad).max(), err_msg=method
            )


def test_float32_close_to_float64():
    with jax.enable_x64(True):
        p64 = _problem(1, S=32, d=64, C=2, Qn=48, weight_scale=0.1)
        p32 = jax.tree_util.tree_map(
            lambda x: x.astype(jnp.float32) if x.dtype == jnp.float64 else x, p64
        )
        kw = dict(inner_steps=10, inner_lr=0.05)
        _, ref = _meta_grads(p64, ("autodiff",), **kw)["autodiff"]
        for method, (_, got) in _meta_grads(p32, ("autodiff", *VARIANTS), **kw).items():
            assert got.dtype == jnp.float32
            rel = np.linalg.norm(np.asarray(got, np.float64) - ref) / np.linalg.norm(ref)
            assert rel < 1e-5, (method, rel)


def test_vmapped_over_seeds():
    """run_seeds vmaps the meta-gradient: the custom VJP must batch like autodiff."""
    with jax.enable_x64(True):
        p = _problem(2, S=6, d=5, C=3, Qn=7)
        supports = jnp.stack([p["support"], 2.0 * p["support"], -p["support"]])

        @jax.jit
        def grads(supports):
            return {
                m: jax.vmap(
                    lambda s, m=m: meta.meta_value_and_grad(
                        s,
                        p["head"],
                        p["support_labels"],
                        (p["query"], p["query_labels"]),
                        inner_steps=3,
                        inner_lr=0.3,
                        method=m,
                    )[1]
                )(supports)
                for m in ("autodiff", *VARIANTS)
            }

        out = grads(supports)
        for method in VARIANTS:
            np.testing.assert_allclose(
                out[method], out["autodiff"], rtol=1e-9, atol=1e-13, err_msg=method
            )


@pytest.mark.parametrize(
    "sizes, expected",
    [
        # Waterbirds/ResNet (Table 11): S = 32 is small next to d and T C.
        (dict(support_size=32, query_size=128, num_classes=2, dim=2048, inner_steps=15), "gram"),
        # T = 1: the direct unroll is 3x cheaper.
        (dict(support_size=32, query_size=128, num_classes=2, dim=2048, inner_steps=1), "vjp"),
        # S = 128: 1.5x the flops, but small (overhead-bound): "gram" measured faster.
        (dict(support_size=128, query_size=128, num_classes=2, dim=2048, inner_steps=15), "gram"),
        # Waterbirds/ViT (Table 12): S = 256 makes K cost 4.5x the unroll.
        (dict(support_size=256, query_size=64, num_classes=2, dim=768, inner_steps=10), "vjp"),
        # CelebA/ResNet (Table 11).
        (dict(support_size=2048, query_size=512, num_classes=2, dim=2048, inner_steps=10), "vjp"),
        # Fine-grained (Sec. 8.2): C = 200; "gram" needs 1.17x the flops, compute-bound.
        (
            dict(support_size=3200, query_size=12800, num_classes=200, dim=2048, inner_steps=15),
            "vjp",
        ),
    ],
)
def test_auto_rule(sizes, expected):
    assert meta_cost.choose_method(**sizes) == expected


def test_unknown_method_names_the_choices():
    p = _problem(0, S=4, d=3, C=2, Qn=3, dtype=np.float32)
    with pytest.raises(ValueError, match="auto"):
        meta.outer_loss(
            p["support"],
            p["head"],
            p["support_labels"],
            (p["query"], p["query_labels"]),
            inner_steps=1,
            inner_lr=0.1,
            method="closed_form",
        )


def test_float32_swallows_plain_sgd_steps_at_celeba_scale():
    """Paper CelebA/ResNet settings (Table 11): |S| = 2048, T = 10, alpha = 5e-5, eta = 0.1.

    The meta-gradient is O(alpha / |S|) per entry, so one SGD step eta * g is ~1e-9 of H: in
    float32 almost every entry of H stays bit-identical (h + u == h), in float64 every entry
    moves. A meta lr rescaled by |S| / alpha makes the step visible in float32. (d is 64 here
    to keep the test fast; the relative step size does not depend on d.)
    """
    S, C, alpha, eta = 2048, 2, 5e-5, 0.1
    with jax.enable_x64(True):
        p = _problem(3, S=S, d=64, C=C, Qn=512, weight_scale=1 / 8)
        args = (p["support"], p["head"], p["support_labels"], (p["query"], p["query_labels"]))
        _, grad = meta.meta_value_and_grad(*args, inner_steps=10, inner_lr=alpha, method="vjp")
        H, g = np.asarray(p["support"]), np.asarray(grad)
    step = -eta * g
    assert np.median(np.abs(step) / np.abs(H)) < 1e-8
    H32 = H.astype(np.float32)
    unchanged32 = np.mean(H32 + step.astype(np.float32) == H32)
    unchanged64 = np.mean(H + step == H)
    assert unchanged32 > 0.9, unchanged32
    assert unchanged64 < 0.01, unchanged64
    rescaled = (-eta * S / alpha * g).astype(np.float32)
    assert np.mean(H32 + rescaled == H32) < 0.01


@pytest.mark.torch
def test_benchmark_smoke(tmp_path):
    """`python -m benchmarks.meta_gradient --quick` logic, on the smallest size, no whole run."""
    pytest.importorskip("torch")
    from benchmarks import meta_gradient

    out = tmp_path / "bench.json"
    results = meta_gradient.main(["--quick", "--sizes=smoke", "--no-whole-run", f"--out={out}"])
    assert out.exists()
    (row,) = results["meta_gradient"]
    assert set(row["seconds"]) == {"autodiff", "vjp", "gram", "auto", "torch"}
    assert max(row["float32_relative_error_vs_torch"].values()) < 1e-3
    assert all(check["ok"] for check in results["float64_check"])
    assert "smoke" in results["table"]
