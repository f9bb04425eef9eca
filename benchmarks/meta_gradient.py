"""Meta-gradient and whole-run benchmark: hsfm_jax against a PyTorch reference of the released recipe.

    python -m benchmarks.meta_gradient [--quick] [--out=benchmarks/results/cpu.json] [--device=cpu]

In one process, after warm-up, medians of repeats interleaved across implementations (so that
load from other processes hits all of them alike):

1. one meta-gradient (value and dL/dH, float32) at the paper's problem sizes (Tables 11-12 and
   the fine-grained setting of Sec. 8.2) and a sweep of T and of the support size: every
   `hsfm_jax.methods.hsfm.meta` method against `benchmarks.torch_reference.meta_gradient`, with the ratio
   PyTorch / JAX, a lower bound for the size (below) and our ratio to it, and XLA's
   `memory_analysis()` of the compiled program; and the cold first call of each (JAX: trace,
   lower, compile and one run; PyTorch: one run) with the ratio PyTorch / JAX of those;
2. correctness in the same process: float64 gradients of every method against PyTorch float64
   (rtol 1e-8), and the float32 relative error at every timed size (stated tolerance 1e-3 of the
   gradient's norm: the unroll is a chain of T softmaxes in float32);
3. one whole HSFM run (one seed, Waterbirds size, Table 11: 40 epochs, KH = 15, T = 15) JAX
   against `torch_reference.run`, and N seeds vmapped (`hsfm.run_seeds`) against N sequential.

Lower bound of a size: max(F / P, B / M), where F is the fewest flops of the exact algorithms
we know (`meta.flops`, min over the direct unroll and the Gram unroll), B the bytes that must
move at least once (read H, Q and the head, write dL/dH), and P, M this machine's matmul
throughput and memory bandwidth, both measured here (a large float32 matmul; a streaming
`2 * x` over an array far larger than the caches; the fastest of repeats, measured at the start
and again at the end of the run, the best of both). It is a floor, not an estimate: a C = 2
matmul cannot reach P, and the unroll reads H once per step (2T passes) whenever H does not
stay in cache; the JSON also holds the streaming bound 2T |H| / M for those cases.

`--device` picks the JAX platform (cpu, gpu); the PyTorch reference runs on the same kind of
device (cuda for gpu). Results: a printed markdown table and `--out` JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from experiments.configs import finegrained, paper
from hsfm_jax.methods.hsfm import meta_cost
from hsfm_jax.methods.hsfm import method as hsfm_method


class Problem(NamedTuple):
    """One meta-gradient size: C classes, d dims, S = C * support_per_class, |Q| = C * k, T."""

    name: str
    num_classes: int
    dim: int
    support_per_class: int
    query_per_class: int
    inner_steps: int

    @property
    def support_size(self) -> int:
        return self.num_classes * self.support_per_class

    @property
    def query_size(self) -> int:
        return self.num_classes * self.query_per_class


# Paper configs: Table 11 (ResNet-50, d = 2048), Table 12 (ViT-B, d = 768), Sec. 8.2 (C = 200),
# read from experiments/configs (paper.py, finegrained.py).
def _paper_problem(name: str, num_classes: int, dim: int, values: dict) -> Problem:
    return Problem(
        name,
        num_classes,
        dim,
        values["support_per_class"],
        values["hard_set_size"],
        values["inner_steps"],
    )


_TABLE = {key: values for key, (_, values) in paper.HYPERPARAMETERS.items()}
PAPER_SIZES = (
    _paper_problem("waterbirds_resnet", 2, 2048, _TABLE[("waterbirds", "resnet50")]),
    _paper_problem("waterbirds_vit", 2, 768, _TABLE[("waterbirds", "vit_b16")]),
    _paper_problem("celeba_resnet", 2, 2048, _TABLE[("celeba", "resnet50")]),
    _paper_problem("finegrained_resnet", 200, 2048, finegrained.PAPER),
)
T_SWEEP = tuple(Problem(f"sweep_T{t}", 2, 2048, 16, 64, t) for t in (1, 5, 30, 60))
SUPPORT_SWEEP = tuple(Problem(f"sweep_S{s}", 2, 2048, s, 64, 15) for s in (64, 256))
QUICK_SIZES = (PAPER_SIZES[0],)
SMOKE = Problem("smoke", 3, 40, 4, 3, 3)  # for tests: `--sizes=smoke`
METHODS = ("autodiff", "vjp", "gram", "auto")
INNER_LR = 5e-5  # Table 11; the timing does not depend on it

# Whole run, Waterbirds size (train/val/test as the dataset; ResNet-50 features; Table 11).
WATERBIRDS = dict(num_train=4795, num_val=1199, num_test=5794, dim=2048, num_classes=2, groups=4)
TABLE11_WATERBIRDS = dict(
    _TABLE[("waterbirds", "resnet50")],
    head_lr=_TABLE[("waterbirds", "resnet50")]["inner_lr"],  # the head's lr is alpha (Sec. 8.1)
    clip=hsfm_method.default_config().meta_grad_clip,
)


def _median_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each fn, calls interleaved round-robin; fns must block until done."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def _best_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Fastest of repeats: the machine's capability, for a lower bound (load only slows)."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.min(v)) for k, v in times.items()}


def _repeats_for(seconds: float, budget: float, lo: int, hi: int) -> int:
    return int(np.clip(budget / max(seconds, 1e-6), lo, hi))


# ------------------------------------------------------------------------------ environment


def environment(jax, torch, device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    jax_device = jax.devices()[0]
    return dict(
        device=device,
        jax_device=f"{jax_device.platform}:{getattr(jax_device, 'device_kind', '')}",
        torch_device=(torch.cuda.get_device_name() if device == "gpu" else "cpu"),
        cpu=cpu,
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        load_average=list(os.getloadavg()),
        python=sys.version.split()[0],
        jax=jax.__version__,
        jaxlib=__import__("jaxlib").__version__,
        torch=torch.__version__,
        numpy=np.__version__,
    )


def roofline(jax, jnp, torch, device: str, quick: bool) -> dict:
    """Measured matmul throughput (flop/s, float32) and memory bandwidth (bytes/s)."""
    n = 1024 if quick else (2048 if device == "cpu" else 8192)
    a = jnp.ones((n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    jax.block_until_ready(mm(a))
    ta = torch.ones((n, n), device=_torch_device(device))
    _torch_sync(device, ta @ ta)
    t = _best_times(
        {
            "jax": lambda: jax.block_until_ready(mm(a)),
            "torch": lambda: _torch_sync(device, ta @ ta),
        },
        3 if quick else 20,
    )
    flops = 2.0 * n**3
    words = (32 if quick else 128) * 2**20 // 4  # 128 MiB, far past any CPU cache
    x = jnp.ones((words,), jnp.float32)
    scale = jax.jit(lambda v: 2.0 * v)
    jax.block_until_ready(scale(x))
    tb = _best_times({"jax": lambda: jax.block_until_ready(scale(x))}, 3 if quick else 20)
    return dict(
        matmul_n=n,
        matmul_flops_per_s=max(flops / t["jax"], flops / t["torch"]),
        matmul_flops_per_s_jax=flops / t["jax"],
        matmul_flops_per_s_torch=flops / t["torch"],
        bandwidth_bytes_per_s=2 * 4 * words / tb["jax"],  # one read and one write per word
    )


def _torch_device(device: str) -> str:
    return "cuda" if device == "gpu" else "cpu"


def _torch_sync(device: str, out=None):
    if device == "gpu":
        import torch

        torch.cuda.synchronize()
    return out


# ---------------------------------------------------------------------------- meta-gradient


def make_problem(p: Problem, dtype, seed: int = 0):
    """Host arrays: H (S, d), W (C, d), b (C,), y_S (S,), Q (|Q|, d), y_Q (|Q|,)."""
    rng = np.random.default_rng(seed)
    support = rng.normal(size=(p.support_size, p.dim)).astype(dtype)
    query = rng.normal(size=(p.query_size, p.dim)).astype(dtype)
    weight = (rng.normal(size=(p.num_classes, p.dim)) / np.sqrt(p.dim)).astype(dtype)
    bias = (0.1 * rng.normal(size=(p.num_classes,))).astype(dtype)
    support_labels = np.repeat(np.arange(p.num_classes), p.support_per_class)
    query_labels = np.repeat(np.arange(p.num_classes), p.query_per_class)
    return support, weight, bias, support_labels, query, query_labels


def lower_bound(p: Problem, machine: dict, itemsize: int = 4) -> dict:

    sizes = dict(
        support_size=p.support_size,
        query_size=p.query_size,
        num_classes=p.num_classes,
        dim=p.dim,
        inner_steps=p.inner_steps,
    )
    flops = min(meta_cost.flops(m, **sizes) for m in ("vjp", "gram"))
    h_bytes = itemsize * p.support_size * p.dim
    bytes_ = 2 * h_bytes + itemsize * (p.query_size + p.num_classes) * p.dim
    compute = flops / machine["matmul_flops_per_s"]
    memory = bytes_ / machine["bandwidth_bytes_per_s"]
    return dict(
        flops=flops,
        bytes=bytes_,
        compute_s=compute,
        memory_s=memory,
        bound_s=max(compute, memory),
        bound_by="compute" if compute >= memory else "memory",
        streaming_s=2 * p.inner_steps * h_bytes / machine["bandwidth_bytes_per_s"],
        method_flops={m: meta_cost.flops(m, **sizes) for m in ("vjp", "gram")},
        auto=meta_cost.choose_method(**sizes),
    )


def _jax_fns(jax, jnp, p: Problem, arrays, methods, dtype):
    from hsfm_jax.core import heads
    from hsfm_jax.methods.hsfm import meta

    support, weight, bias, ys, query, yq = arrays
    args = (
        jnp.asarray(support, dtype),
        heads.LinearHead(jnp.asarray(weight, dtype), jnp.asarray(bias, dtype)),
        jnp.asarray(ys, jnp.int32),
        (jnp.asarray(query, dtype), jnp.asarray(yq, jnp.int32)),
    )
    out = {}
    for m in methods:
        fn = jax.jit(
            lambda *a, m=m: meta.meta_value_and_grad(
                *a, inner_steps=p.inner_steps, inner_lr=INNER_LR, method=m
            )
        )
        out[m] = (fn, args)
    return out


def _torch_fn(torch, p: Problem, arrays, dtype, device: str):
    from benchmarks import torch_reference

    dev = _torch_device(device)
    tdtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    support, weight, bias, ys, query, yq = arrays
    t = dict(
        support=torch.tensor(support, dtype=tdtype, device=dev),
        weight=torch.tensor(weight, dtype=tdtype, device=dev),
        bias=torch.tensor(bias, dtype=tdtype, device=dev),
        support_labels=torch.tensor(ys, dtype=torch.int64, device=dev),
        query=torch.tensor(query, dtype=tdtype, device=dev),
        query_labels=torch.tensor(yq, dtype=torch.int64, device=dev),
    )

    def fn():
        out = torch_reference.meta_gradient(**t, inner_steps=p.inner_steps, inner_lr=INNER_LR)
        return _torch_sync(device, out)

    return fn


def _memory(jax, fn, args) -> dict | None:
    try:
        stats = fn.lower(*args).compile().memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if stats is None:
        return None
    return {
        k: int(getattr(stats, k))
        for k in (
            "temp_size_in_bytes",
            "argument_size_in_bytes",
            "output_size_in_bytes",
            "generated_code_size_in_bytes",
        )
        if hasattr(stats, k)
    }


def _relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def bench_meta_gradient(
    jax, jnp, torch, p: Problem, machine: dict, device: str, budget: float, min_repeats: int = 5
):
    """Times every method and the PyTorch reference on one size; float32."""
    from hsfm_jax.methods.hsfm import meta

    arrays = make_problem(p, np.float32)
    bound = lower_bound(p, machine)
    methods = [m for m in METHODS if not _too_slow(m, bound)]
    fns = _jax_fns(jax, jnp, p, arrays, methods, jnp.float32)
    calls = {m: (lambda f=f, a=a: jax.block_until_ready(f(*a))) for m, (f, a) in fns.items()}
    calls["torch"] = _torch_fn(torch, p, arrays, np.float32, device)
    outputs, cold = {}, {}
    for k, fn in calls.items():  # warm-up: JAX traces, lowers and compiles here
        t0 = time.perf_counter()
        outputs[k] = fn()
        cold[k] = time.perf_counter() - t0
    first = _median_times(calls, 1)
    repeats = _repeats_for(max(first.values()), budget / max(len(calls), 1), min_repeats, 30)
    times = _median_times(calls, repeats)
    torch_grad = outputs["torch"][1].detach().cpu().numpy()
    errors = {m: _relative_error(outputs[m][1], torch_grad) for m in fns}
    memory = {m: _memory(jax, f, a) for m, (f, a) in fns.items()}
    del meta
    return dict(
        problem=p._asdict(),
        support_size=p.support_size,
        query_size=p.query_size,
        repeats=repeats,
        seconds=times,
        speedup_vs_torch={m: times["torch"] / times[m] for m in fns},
        # First call in the process: JAX's trace + lower + compile + one run; PyTorch's run.
        cold_seconds=cold,
        cold_speedup_vs_torch={m: cold["torch"] / cold[m] for m in fns},
        ratio_to_bound={m: times[m] / bound["bound_s"] for m in fns},
        lower_bound=bound,
        float32_relative_error_vs_torch=errors,
        memory=memory,
    )


def _too_slow(method: str, bound: dict) -> bool:
    # The Gram unroll at sizes where it does > 4x the direct unroll's flops is only slower.
    return method == "gram" and bound["method_flops"]["gram"] > 4 * bound["method_flops"]["vjp"]


def check_float64(jax, jnp, torch, problems) -> list[dict]:
    """Every method against PyTorch at float64: |g - g_ref| <= 1e-8 |g_ref| + 1e-8 max|g_ref|."""
    rows = []
    for p in problems:
        arrays = make_problem(p, np.float64, seed=1)
        ref_loss, ref_grad = _torch_fn(torch, p, arrays, np.float64, "cpu")()
        ref_grad = ref_grad.numpy()
        fns = _jax_fns(jax, jnp, p, arrays, METHODS, jnp.float64)
        for m, (fn, args) in fns.items():
            loss, grad = fn(*args)
            grad = np.asarray(grad)
            atol = 1e-8 * np.abs(ref_grad).max()
            ok = bool(np.allclose(grad, ref_grad, rtol=1e-8, atol=atol)) and bool(
                np.isclose(float(loss), float(ref_loss), rtol=1e-10)
            )
            rows.append(
                dict(
                    problem=p.name,
                    method=m,
                    ok=ok,
                    max_abs_error=float(np.abs(grad - ref_grad).max()),
                    relative_error=_relative_error(grad, ref_grad),
                )
            )
    return rows


# --------------------------------------------------------------------------------- whole run


def waterbirds_like(
    num_train, num_val, num_test, dim, num_classes, groups, seed=0, dtype=np.float32
):
    """Random features with Waterbirds' split sizes and 4 groups (timing does not need images)."""
    rng = np.random.default_rng(seed)
    core = rng.normal(size=(num_classes, dim)) / np.sqrt(dim)
    spur = rng.normal(size=(groups // num_classes, dim)) / np.sqrt(dim)

    def split(n, agree):
        y = rng.integers(0, num_classes, n)
        a = np.where(rng.random(n) < agree, y, rng.integers(0, groups // num_classes, n))
        x = 3 * core[y] + 5 * spur[a] + rng.normal(size=(n, dim)) / np.sqrt(dim) * 4
        return (
            x.astype(dtype),
            y.astype(np.int32),
            (y * (groups // num_classes) + a).astype(np.int32),
        )

    return split(num_train, 0.95), split(num_val, 0.5), split(num_test, 0.5)


def _jax_run_inputs(
    jax, jnp, splits, dtype, method: str, epochs: int, sizes=WATERBIRDS, table=TABLE11_WATERBIRDS
):
    from hsfm_jax.core import heads
    from hsfm_jax.data.features import SplitArrays
    from hsfm_jax.methods.hsfm import algorithm as hsfm
    from hsfm_jax.reporting import evaluate

    (xtr, ytr, gtr), (xva, yva, gva), (xte, yte, gte) = splits
    c = sizes
    arrays = lambda x, y, g: SplitArrays(jnp.asarray(x, dtype), jnp.asarray(y), jnp.asarray(g))
    data = hsfm.Data(
        train=arrays(xtr, ytr, gtr),
        val=arrays(xva, yva, gva),
        test=arrays(xte, yte, gte),
        train_group_counts=jnp.asarray(np.bincount(gtr, minlength=c["groups"]), jnp.float32),
    )
    t = table
    settings = hsfm.Settings(
        num_classes=c["num_classes"],
        num_groups=c["groups"],
        support_per_class=t["support_per_class"],
        hard_set_size=t["hard_set_size"],
        inner_steps=t["inner_steps"],
        meta_steps=t["meta_steps"],
        epochs=epochs,
        meta_gradient=method,
        selection_metric=evaluate.selection_metric_name(c["groups"]),
    )
    rates = hsfm.make_rates(
        inner_lr=t["inner_lr"],
        meta_lr=t["meta_lr"],
        head_lr=t["head_lr"],
        meta_grad_clip=t["clip"],
        dtype=dtype,
    )
    rng = np.random.default_rng(0)
    init_head = heads.LinearHead(
        jnp.asarray(rng.normal(size=(c["num_classes"], c["dim"])) / np.sqrt(c["dim"]), dtype),
        jnp.zeros((c["num_classes"],), dtype),
    )
    return data, init_head, rates, settings


def _torch_run(
    torch,
    splits,
    init_head,
    support_indices,
    epochs,
    dtype,
    device,
    sizes=WATERBIRDS,
    table=TABLE11_WATERBIRDS,
):
    from benchmarks import torch_reference

    dev = _torch_device(device)
    (xtr, ytr, _), (xva, yva, gva), (xte, yte, gte) = splits
    f = lambda x: torch.tensor(np.asarray(x), dtype=dtype, device=dev)
    i = lambda x: torch.tensor(np.asarray(x), dtype=torch.int64, device=dev)
    t = table
    args = (f(xtr), i(ytr), f(xva), i(yva), i(gva), f(xte), i(yte), i(gte))
    head = (f(init_head.weight), f(init_head.bias))
    support_indices = i(support_indices)

    def fn():
        out = torch_reference.run(
            *args,
            *head,
            support_indices,
            num_classes=sizes["num_classes"],
            num_groups=sizes["groups"],
            hard_set_size=t["hard_set_size"],
            inner_steps=t["inner_steps"],
            meta_steps=t["meta_steps"],
            epochs=epochs,
            inner_lr=t["inner_lr"],
            meta_lr=t["meta_lr"],
            head_lr=t["head_lr"],
            clip=t["clip"],
        )
        return _torch_sync(device, out)

    return fn


def bench_whole_run(
    jax, jnp, torch, device: str, epochs: int, num_seeds: int, repeats: int, budget: float
):
    """One seed JAX vs PyTorch (float32), N seeds vmapped vs sequential, and float64 agreement."""
    from hsfm_jax.methods.hsfm import algorithm as hsfm

    splits = waterbirds_like(**WATERBIRDS)
    data, init_head, rates, settings = _jax_run_inputs(
        jax, jnp, splits, jnp.float32, "auto", epochs
    )
    run_one = jax.jit(lambda k: hsfm.run(data, init_head, rates, k, settings=settings))
    key = jax.random.key(0)
    keys = jax.random.split(jax.random.key(1), num_seeds)
    t0 = time.perf_counter()
    result = jax.block_until_ready(run_one(key))
    jax_cold = time.perf_counter() - t0  # trace, lower, compile and one run
    jax.block_until_ready(hsfm.run_seeds(data, init_head, rates, keys, settings=settings))
    torch_fn = _torch_run(
        torch, splits, init_head, result.support_indices, epochs, torch.float32, device
    )
    calls = {
        "jax_one_seed": lambda: jax.block_until_ready(run_one(key)),
        "torch_one_seed": torch_fn,
        "jax_seeds_vmapped": lambda: jax.block_until_ready(
            hsfm.run_seeds(data, init_head, rates, keys, settings=settings)
        ),
        "jax_seeds_sequential": lambda: [jax.block_until_ready(run_one(k)) for k in keys],
    }
    # PyTorch needs no warm-up beyond the meta-gradient benchmarks that ran before; the first
    # round counts, and later rounds run while the total stays within the budget.
    times = {k: [] for k in calls}
    start = time.perf_counter()
    for _ in range(repeats):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget:
            break
    rounds = len(times["jax_one_seed"])
    times = {k: float(np.median(v)) for k, v in times.items()}
    return dict(
        settings=dict(TABLE11_WATERBIRDS, epochs=epochs, meta_gradient="auto"),
        sizes=WATERBIRDS,
        num_seeds=num_seeds,
        repeats=rounds,
        seconds=times,
        speedup_vs_torch=times["torch_one_seed"] / times["jax_one_seed"],
        jax_one_seed_cold_s=jax_cold,
        cold_total_speedup_vs_torch=times["torch_one_seed"] / jax_cold,
        vmapped_over_one_seed=times["jax_seeds_vmapped"] / times["jax_one_seed"],
        sequential_over_vmapped=times["jax_seeds_sequential"] / times["jax_seeds_vmapped"],
    )


def check_whole_run_float64(jax, jnp, torch, epochs: int) -> dict:
    """The JAX run and the PyTorch run agree at float64 from the same support rows."""
    from hsfm_jax.methods.hsfm import algorithm as hsfm

    splits = waterbirds_like(**WATERBIRDS, dtype=np.float64)
    data, init_head, rates, settings = _jax_run_inputs(
        jax, jnp, splits, jnp.float64, "auto", epochs
    )
    result = jax.jit(lambda k: hsfm.run(data, init_head, rates, k, settings=settings))(
        jax.random.key(0)
    )
    ref = _torch_run(
        torch, splits, init_head, result.support_indices, epochs, torch.float64, "cpu"
    )()
    support_err = _relative_error(result.support, ref["support"].numpy())
    weight_err = _relative_error(result.last_head.weight, ref["weight"].numpy())
    wga = np.asarray(result.history["val_wga"])
    return dict(
        epochs=epochs,
        support_relative_error=support_err,
        last_weight_relative_error=weight_err,
        best_epoch=(int(result.best_epoch), int(ref["best_epoch"])),
        val_wga_max_abs_diff=float(np.abs(wga - np.asarray(ref["val_wga"])).max()),
        # clip_grad_norm_ divides by (norm + 1e-6), optax by norm: ~1e-6 relative per clipped step
        ok=bool(support_err < 1e-5 and weight_err < 1e-5),
    )


# ------------------------------------------------------------------------------------ report


def table(results: dict) -> str:
    env, machine = results["environment"], results["machine"]
    lines = [
        f"Device: {env['device']} ({env['jax_device']}; {env['cpu']}, {env['cpu_count']} cores; "
        f"load average {env['load_average'][0]:.1f}). jax {env['jax']}, torch {env['torch']}.",
        f"Measured: matmul {machine['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s, "
        f"memory {machine['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s.",
        "",
        "| size (C, d, S, Q, T) | PyTorch | autodiff | vjp | gram | auto (picks) "
        "| PyTorch / auto | bound (by) | auto / bound | cold total PyTorch / auto |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ms = lambda s: f"{s * 1e3:.2f} ms" if s is not None else "-"
    for r in results["meta_gradient"]:
        p, t, b = r["problem"], r["seconds"], r["lower_bound"]
        lines.append(
            f"| {p['name']} ({p['num_classes']}, {p['dim']}, {r['support_size']}, "
            f"{r['query_size']}, {p['inner_steps']}) | {ms(t['torch'])} | {ms(t['autodiff'])} "
            f"| {ms(t['vjp'])} | {ms(t.get('gram'))} | {ms(t['auto'])} ({b['auto']}) "
            f"| {r['speedup_vs_torch']['auto']:.1f}x | {ms(b['bound_s'])} ({b['bound_by']}) "
            f"| {r['ratio_to_bound']['auto']:.1f}x | {r['cold_speedup_vs_torch']['auto']:.2f}x "
            f"({ms(r['cold_seconds']['torch'])} / {ms(r['cold_seconds']['auto'])}) |"
        )
    w = results.get("whole_run")
    if w:
        s = w["seconds"]
        lines += [
            "",
            f"Whole run (Waterbirds size, Table 11, {w['settings']['epochs']} epochs, one seed): "
            f"JAX {s['jax_one_seed']:.2f} s, PyTorch {s['torch_one_seed']:.2f} s "
            f"({w['speedup_vs_torch']:.1f}x); cold total (JAX compiling included) "
            f"{w['jax_one_seed_cold_s']:.2f} s ({w['cold_total_speedup_vs_torch']:.2f}x). "
            f"{w['num_seeds']} seeds: vmapped "
            f"{s['jax_seeds_vmapped']:.2f} s ({w['vmapped_over_one_seed']:.1f}x one seed), "
            f"sequential {s['jax_seeds_sequential']:.2f} s. (Paper, Table 14: 1.43 min on an A100.)",
        ]
    checks = results["float64_check"]
    lines.append(
        f"float64 vs PyTorch (rtol 1e-8): {sum(c['ok'] for c in checks)}/{len(checks)} agree "
        f"(max relative error {max(c['relative_error'] for c in checks):.1e}); float32 max "
        "relative error "
        + f"{max(max(r['float32_relative_error_vs_torch'].values()) for r in results['meta_gradient']):.1e}"
        + " (tolerance 1e-3)."
    )
    if results.get("whole_run_float64"):
        c = results["whole_run_float64"]
        lines.append(
            f"Whole run float64 vs PyTorch ({c['epochs']} epochs): support rel. error "
            f"{c['support_relative_error']:.1e}, best epoch {c['best_epoch']}."
        )
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.meta_gradient")
    parser.add_argument("--quick", action="store_true", help="smoke run, < 60 s on CPU")
    parser.add_argument("--out", default="", help="JSON path (default: none)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--seeds", type=int, default=10, help="N for vmapped vs sequential")
    parser.add_argument("--sizes", default="", help="comma-separated size names (default: all)")
    parser.add_argument("--no-whole-run", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("JAX_PLATFORMS", args.device if args.device == "cpu" else "cuda")
    import jax
    import jax.numpy as jnp
    import torch

    sizes = QUICK_SIZES if args.quick else PAPER_SIZES + T_SWEEP + SUPPORT_SWEEP
    if args.sizes:
        known = {p.name: p for p in PAPER_SIZES + T_SWEEP + SUPPORT_SWEEP + (SMOKE,)}
        sizes = tuple(known[n] for n in args.sizes.split(","))
    results = dict(
        command="python -m benchmarks.meta_gradient "
        + " ".join(sys.argv[1:] if argv is None else argv),
        environment=environment(jax, torch, args.device),
    )
    results["machine"] = roofline(jax, jnp, torch, args.device, args.quick)
    budget = 1.0 if args.quick else 8.0
    results["meta_gradient"] = []
    for p in sizes:
        print(f"meta-gradient {p.name} ...", file=sys.stderr, flush=True)
        results["meta_gradient"].append(
            bench_meta_gradient(
                jax, jnp, torch, p, results["machine"], args.device, budget, 2 if args.quick else 5
            )
        )
    small = Problem("check", 3, 40, 5, 4, 4)
    with jax.enable_x64(True):
        checks = (small,) if args.quick else (small, PAPER_SIZES[0], PAPER_SIZES[1])
        results["float64_check"] = check_float64(jax, jnp, torch, checks)
    if not args.no_whole_run:
        epochs = 2 if args.quick else TABLE11_WATERBIRDS["epochs"]
        seeds = 2 if args.quick else args.seeds
        print("whole run ...", file=sys.stderr, flush=True)
        results["whole_run"] = bench_whole_run(
            jax,
            jnp,
            torch,
            args.device,
            epochs,
            seeds,
            repeats=1 if args.quick else 5,
            budget=budget * 30,
        )
        with jax.enable_x64(True):
            results["whole_run_float64"] = check_whole_run_float64(
                jax, jnp, torch, epochs=2 if args.quick else 10
            )
    # Measured again at the end: under load from other processes the best of both is nearer to
    # what the machine can do, which keeps the bound a bound.
    again = results["machine"] if args.quick else roofline(jax, jnp, torch, args.device, False)
    for k in ("matmul_flops_per_s", "bandwidth_bytes_per_s"):
        results["machine"][k] = max(results["machine"][k], again[k])
    for row in results["meta_gradient"]:
        p = Problem(**row["problem"])
        row["lower_bound"] = lower_bound(p, results["machine"])
        row["ratio_to_bound"] = {
            m: t / row["lower_bound"]["bound_s"] for m, t in row["seconds"].items() if m != "torch"
        }
    results["table"] = table(results)
    print(results["table"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1, default=_json_default))
    return results


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(type(x))


if __name__ == "__main__":
    main()
