"""The cost model behind meta_gradient="auto": flops of each method and the rule that picks one.

The rule was fitted to what `benchmarks/meta_gradient.py` measured on CPU
(`benchmarks/results/cpu.json`).
"""

from __future__ import annotations

# "auto" (`choose_method`): below _SMALL_FLOPS, "gram" may do up to _GRAM_MAX_RATIO x the flops.
_GRAM_MAX_RATIO = 2.0
_SMALL_FLOPS = 1e9


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
    kernels; large problems are compute-bound and the flop count decides (the measurements are
    in benchmarks/results/cpu.json). Else "vjp".
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
