"""Every GPU number the project reports, in one call: one JSON and one log into a directory.

    python -m benchmarks.gpu OUTDIR                # on a GPU (jax[cuda12] and torch with CUDA)
    python -m benchmarks.gpu OUTDIR --quick        # CPU dry run, small sizes, seconds
    bash benchmarks/gpu.sh OUTDIR [--quick]        # the same, with the repository on PYTHONPATH

Sections, each written to ``OUTDIR/gpu.json`` as soon as it ends (a run cut short keeps what it
measured) and logged to ``OUTDIR/gpu.log``:

1. ``environment``: the device, driver, CUDA and library versions, JAX's matmul precision, and
   the measured float32 matmul throughput at JAX's default precision and at ``"highest"``;
2. ``meta_gradient``: one meta-gradient at every paper size (`meta_gradient.PAPER_SIZES`),
   every `hsfm_jax.methods.hsfm.meta` method against `torch_reference.meta_gradient` on the same device:
   warm medians and the cold first call (JAX: trace + lower + compile + run);
3. ``whole_run``: one HSFM run at Waterbirds' size (Table 11, 40 epochs), JAX cold (first call
   in the process, compilation included) and warm, against `torch_reference.run` on the same
   device, cold and warm;
4. ``seeds``: the same run with 1, 10 and 100 seeds vmapped (`hsfm.run_seeds`), cold and warm;
5. ``dfr``: DFR on validation, one seed, at Waterbirds' size with d = 2048
   (`benchmarks.dfr.make_problem`), JAX on the device (cold and warm) against scikit-learn's
   liblinear on the host;
6. ``precision``: the 10-seed run and DFR at JAX's default matmul precision (TF32 or bf16
   passes on GPUs that have them) and at float32 ``"highest"``: the selected heads (HSFM's best
   epoch, DFR's chosen C), their test accuracies evaluated in float64 on the host, and whether
   any changed.

Sizes are fixed so that the whole script ends in under 6 minutes on an A100/H100-class GPU;
``--quick`` shrinks every problem (and defaults to the CPU) so CI runs it in seconds. No
compilation cache is used: every first call compiles. docs/gpu.md says what each number means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np

# Whole-run problem of `--quick`: Waterbirds' shape, shrunk.
QUICK_RUN_SIZES = dict(num_train=160, num_val=80, num_test=80, dim=24, num_classes=2, groups=4)
QUICK_RUN_TABLE = dict(
    support_per_class=4,
    inner_steps=3,
    inner_lr=5e-5,
    meta_lr=1.0,
    meta_steps=2,
    hard_set_size=8,
    epochs=2,
    head_lr=5e-5,
    clip=10.0,
)
SEEDS = (1, 10, 100)
QUICK_SEEDS = (1, 2)
PRECISION_SEEDS = 10  # a member of SEEDS: its default-precision program is already compiled
DFR_SIZE, QUICK_DFR_SIZE = "2048", "64"
WARM_REPEATS, QUICK_WARM_REPEATS = 3, 1


class Log:
    """Lines to stderr and to OUTDIR/gpu.log, each with the seconds since the start."""

    def __init__(self, path: Path):
        self.path, self.start = path, time.perf_counter()
        path.write_text("")

    def __call__(self, message: str) -> None:
        line = f"[{time.perf_counter() - self.start:7.1f} s] {message}"
        print(line, file=sys.stderr, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def cold_and_warm(fn, repeats: int) -> dict:
    """First call (cold) and median of `repeats` further calls (warm); fn blocks until done."""
    out, cold = _timed(fn)
    warm = [_timed(fn)[1] for _ in range(repeats)]
    return dict(cold_s=cold, warm_s=float(np.median(warm)), warm_times_s=warm), out


# ------------------------------------------------------------------------------ environment


def _nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm"
    try:
        out = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(jax, torch, device: str) -> dict:
    import flax
    import optax
    import sklearn

    from benchmarks import meta_gradient

    env = meta_gradient.environment(jax, torch, device)
    env.update(
        jax_devices=[f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in jax.devices()],
        jax_default_matmul_precision=str(jax.config.jax_default_matmul_precision),
        torch_cuda=torch.version.cuda,
        torch_allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
        flax=flax.__version__,
        optax=optax.__version__,
        sklearn=sklearn.__version__,
        platform=platform.platform(),
        nvidia_smi=_nvidia_smi(),
    )
    return env


def matmul_throughput(jax, jnp, quick: bool) -> dict:
    """Float32 matmul flop/s at JAX's default precision and at "highest" (best of repeats)."""
    n = 256 if quick else 8192
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
    out = {}
    for precision in ("default", "highest"):
        fn = jax.jit(lambda x, p=precision: jnp.matmul(x, x, precision=p))
        ref = jax.block_until_ready(fn(a))
        best = min(_timed(lambda fn=fn: jax.block_until_ready(fn(a)))[1] for _ in range(5))
        out[f"{precision}_flops_per_s"] = 2.0 * n**3 / best
        out[f"{precision}_result"] = ref
    exact = np.asarray(a, np.float64) @ np.asarray(a, np.float64)
    scale = np.abs(exact).max()
    return dict(
        n=n,
        default_flops_per_s=out["default_flops_per_s"],
        highest_flops_per_s=out["highest_flops_per_s"],
        # Largest error relative to max|A A|: ~1e-7 for float32 passes, ~1e-3 for TF32/bf16.
        default_max_relative_error=float(np.abs(out["default_result"] - exact).max() / scale),
        highest_max_relative_error=float(np.abs(out["highest_result"] - exact).max() / scale),
    )


# ------------------------------------------------------------------------------ sections


def bench_meta_gradients(jax, jnp, torch, device: str, quick: bool, log: Log) -> dict:
    from benchmarks import meta_gradient

    sizes = (meta_gradient.SMOKE,) if quick else meta_gradient.PAPER_SIZES
    machine = meta_gradient.roofline(jax, jnp, torch, device, quick)
    rows = []
    for p in sizes:
        log(f"meta-gradient {p.name}")
        rows.append(
            meta_gradient.bench_meta_gradient(
                jax, jnp, torch, p, machine, device, budget=0.5 if quick else 3.0, min_repeats=3
            )
        )
        s = rows[-1]
        log(
            f"  PyTorch {s['seconds']['torch'] * 1e3:.2f} ms, auto {s['seconds']['auto'] * 1e3:.2f}"
            f" ms ({s['speedup_vs_torch']['auto']:.1f}x warm, "
            f"{s['cold_speedup_vs_torch']['auto']:.2f}x cold)"
        )
    return dict(machine=machine, sizes=rows)


def _run_problem(jax, jnp, quick: bool):
    from benchmarks import meta_gradient

    sizes = QUICK_RUN_SIZES if quick else meta_gradient.WATERBIRDS
    table = QUICK_RUN_TABLE if quick else meta_gradient.TABLE11_WATERBIRDS
    splits = meta_gradient.waterbirds_like(**sizes)
    data, init_head, rates, settings = meta_gradient._jax_run_inputs(
        jax, jnp, splits, jnp.float32, "auto", table["epochs"], sizes=sizes, table=table
    )
    return splits, sizes, table, data, init_head, rates, settings


def bench_whole_run(jax, jnp, torch, device: str, quick: bool, log: Log) -> dict:
    """One seed, JAX (hsfm.run_seeds, one key) against the PyTorch recipe, cold and warm."""
    from benchmarks import meta_gradient
    from hsfm_jax.methods.hsfm import algorithm as hsfm

    splits, sizes, table, data, init_head, rates, settings = _run_problem(jax, jnp, quick)
    keys = jax.random.split(jax.random.key(0), 1)
    repeats = QUICK_WARM_REPEATS if quick else WARM_REPEATS
    run = lambda: jax.block_until_ready(
        hsfm.run_seeds(data, init_head, rates, keys, settings=settings)
    )
    log("whole run: JAX, cold then warm")
    jax_times, result = cold_and_warm(run, repeats)
    support = np.asarray(result.support_indices[0])
    torch_fn = meta_gradient._torch_run(
        torch,
        splits,
        init_head,
        support,
        table["epochs"],
        torch.float32,
        device,
        sizes=sizes,
        table=table,
    )
    log("whole run: PyTorch, cold then warm")
    torch_times, _ = cold_and_warm(torch_fn, repeats)
    out = dict(
        sizes=sizes,
        settings=dict(table, meta_gradient="auto"),
        jax=jax_times,
        torch=torch_times,
        jax_compile_s=max(jax_times["cold_s"] - jax_times["warm_s"], 0.0),
        speedup_vs_torch_warm=torch_times["warm_s"] / jax_times["warm_s"],
        speedup_vs_torch_cold=torch_times["cold_s"] / jax_times["cold_s"],
    )
    log(
        f"  JAX cold {jax_times['cold_s']:.2f} s, warm {jax_times['warm_s']:.3f} s; PyTorch cold "
        f"{torch_times['cold_s']:.2f} s, warm {torch_times['warm_s']:.2f} s"
    )
    return out


def bench_seeds(jax, jnp, quick: bool, log: Log, one_seed: dict) -> dict:
    """The whole run with N seeds vmapped, cold and warm, for each N; one seed is `whole_run`'s
    JAX timing (`one_seed`), whose program this section would only find compiled."""
    from hsfm_jax.methods.hsfm import algorithm as hsfm

    _, _, _, data, init_head, rates, settings = _run_problem(jax, jnp, quick)
    repeats = QUICK_WARM_REPEATS if quick else WARM_REPEATS
    rows = [dict(num_seeds=1, **one_seed)]
    for n in (QUICK_SEEDS if quick else SEEDS)[1:]:
        log(f"seeds: {n} vmapped")
        keys = jax.random.split(jax.random.key(0), n)
        times, _ = cold_and_warm(
            lambda keys=keys: jax.block_until_ready(
                hsfm.run_seeds(data, init_head, rates, keys, settings=settings)
            ),
            repeats,
        )
        rows.append(dict(num_seeds=n, **times))
        log(f"  cold {times['cold_s']:.2f} s, warm {times['warm_s']:.3f} s")
    one = rows[0]["warm_s"]
    for r in rows:
        r["warm_over_one_seed"] = r["warm_s"] / one
    return dict(rows=rows)


def _dfr_head(jax, data, config, seed: int):
    from hsfm_jax.methods import dfr

    heads = dfr.run(data, config, jax.random.key(seed)[None]).rows["dfr"]
    return jax.block_until_ready(jax.tree_util.tree_map(lambda x: x[0], heads))


def bench_dfr(jax, quick: bool, log: Log) -> dict:
    """DFR on val, one seed: JAX on the device (cold, warm) and scikit-learn on the host."""
    from benchmarks import dfr as dfr_bench
    from hsfm_jax.methods import dfr

    size = QUICK_DFR_SIZE if quick else DFR_SIZE
    data = dfr_bench.make_problem(size)
    config = dfr.default_config()
    config.variants = ("dfr",)
    config.update(dfr.check(config, data))
    repeats = QUICK_WARM_REPEATS if quick else WARM_REPEATS
    log(f"DFR d={data.feature_dim}: JAX cold then warm")
    seeds = iter(range(100))
    jax_times, head = cold_and_warm(lambda: _dfr_head(jax, data, config, next(seeds)), repeats)
    log("DFR: scikit-learn")
    sk = []
    for r in range(max(repeats, 2)):
        (coef, intercept, scaler, c), t = _timed(
            lambda r=r: dfr_bench.sklearn_dfr(data, config.c_grid, config.num_retrains, r)
        )
        sk.append(t)
    sk_wga = dfr_bench.sklearn_test_wga(data, coef, intercept, scaler)
    out = dict(
        size=size,
        feature_dim=data.feature_dim,
        n_train=data.train.features.shape[0],
        n_val=data.val.features.shape[0],
        jax=jax_times,
        jax_compile_s=max(jax_times["cold_s"] - jax_times["warm_s"], 0.0),
        # scikit-learn compiles nothing: its first call is one of its runs.
        sklearn=dict(cold_s=sk[0], warm_s=float(np.median(sk)), times_s=sk),
        jax_test_wga=_host_metrics(head, data.test)["wga"],
        sklearn_test_wga=sk_wga,
    )
    out["sklearn_over_jax_warm"] = out["sklearn"]["warm_s"] / jax_times["warm_s"]
    out["sklearn_over_jax_cold"] = out["sklearn"]["cold_s"] / jax_times["cold_s"]
    log(
        f"  JAX cold {jax_times['cold_s']:.2f} s, warm {jax_times['warm_s']:.3f} s; "
        f"scikit-learn {out['sklearn']['warm_s']:.2f} s"
    )
    return out


def _host_metrics(head, split) -> dict:
    """Test accuracy of a head in float64 on the host (the evaluation adds no rounding)."""
    x = np.asarray(split.features, np.float64)
    logits = x @ np.asarray(head.weight, np.float64).T + np.asarray(head.bias, np.float64)
    correct = logits.argmax(-1) == np.asarray(split.labels)
    groups = np.asarray(split.groups)
    group_acc = [float(correct[groups == g].mean()) for g in np.unique(groups)]
    return dict(wga=min(group_acc), mean_acc=float(correct.mean()), group_acc=group_acc)


def bench_precision(jax, jnp, quick: bool, log: Log) -> dict:
    """Selected heads at JAX's default matmul precision against float32 "highest"."""
    from benchmarks import dfr as dfr_bench
    from hsfm_jax.data.features import Split
    from hsfm_jax.methods import dfr
    from hsfm_jax.methods.hsfm import algorithm as hsfm

    splits, _, _, data, init_head, rates, settings = _run_problem(jax, jnp, quick)
    num_seeds = QUICK_SEEDS[-1] if quick else PRECISION_SEEDS
    keys = jax.random.split(jax.random.key(0), num_seeds)
    test = Split(*splits[2])
    dfr_data = dfr_bench.make_problem(QUICK_DFR_SIZE if quick else DFR_SIZE)
    config = dfr.default_config()
    config.variants = ("dfr",)
    config.update(dfr.check(config, dfr_data))

    out = {}
    for precision in ("default", "highest"):
        log(f"precision {precision}: HSFM {num_seeds} seeds, DFR")
        scope = jax.default_matmul_precision(precision) if precision == "highest" else nullcontext()
        with scope:
            result, hsfm_s = _timed(
                lambda: jax.block_until_ready(
                    hsfm.run_seeds(data, init_head, rates, keys, settings=settings)
                )
            )
            dfr_head, dfr_s = _timed(lambda: _dfr_head(jax, dfr_data, config, 0))
        seeds = []
        for s in range(num_seeds):
            head = jax.tree_util.tree_map(lambda x, s=s: x[s], result.best_head)
            seeds.append(
                dict(
                    best_epoch=int(result.best_epoch[s]),
                    val_score=float(result.best_score[s]),
                    test=_host_metrics(head, test),
                    best_weight=np.asarray(head.weight, np.float64),
                )
            )
        out[precision] = dict(
            hsfm_first_call_s=hsfm_s,
            dfr_first_call_s=dfr_s,
            hsfm_seeds=seeds,
            dfr=dict(
                test=_host_metrics(dfr_head, dfr_data.test), weight=np.asarray(dfr_head.weight)
            ),
        )

    lo, hi = out["default"], out["highest"]
    changed_epochs = [
        s
        for s in range(num_seeds)
        if lo["hsfm_seeds"][s]["best_epoch"] != hi["hsfm_seeds"][s]["best_epoch"]
    ]
    changed_acc = [
        s for s in range(num_seeds) if lo["hsfm_seeds"][s]["test"] != hi["hsfm_seeds"][s]["test"]
    ]
    weight_gap = max(
        _relative(lo["hsfm_seeds"][s]["best_weight"], hi["hsfm_seeds"][s]["best_weight"])
        for s in range(num_seeds)
    )
    dfr_changed = lo["dfr"]["test"] != hi["dfr"]["test"]
    summary = dict(
        num_seeds=num_seeds,
        hsfm_seeds_with_other_best_epoch=changed_epochs,
        hsfm_seeds_with_other_test_accuracy=changed_acc,
        hsfm_best_weight_max_relative_difference=weight_gap,
        hsfm_test_wga_mean={
            p: float(np.mean([s["test"]["wga"] for s in out[p]["hsfm_seeds"]])) for p in out
        },
        dfr_test={p: out[p]["dfr"]["test"] for p in out},
        dfr_weight_relative_difference=_relative(lo["dfr"]["weight"], hi["dfr"]["weight"]),
        any_selected_head_accuracy_changed=bool(changed_acc or dfr_changed),
    )
    for p in out:  # the weights were for the comparison; the JSON keeps the metrics
        for s in out[p]["hsfm_seeds"]:
            del s["best_weight"]
        del out[p]["dfr"]["weight"]
    log(
        f"  any selected head's test accuracy changed: {summary['any_selected_head_accuracy_changed']}"
        f" (HSFM seeds {changed_acc}, DFR {dfr_changed}); best-head weights differ by "
        f"{weight_gap:.1e} (relative)"
    )
    return dict(summary=summary, **out)


def _relative(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# ------------------------------------------------------------------------------ report


def table(results: dict) -> str:
    """Markdown summary of whatever sections finished."""
    env = results["environment"]
    lines = [
        f"Device: {env['jax_device']} (PyTorch: {env['torch_device']}); host {env['cpu']}, "
        f"{env['cpu_count']} cores. jax {env['jax']}, jaxlib {env['jaxlib']}, torch "
        f"{env['torch']} (CUDA {env['torch_cuda']}), scikit-learn {env['sklearn']}.",
    ]
    m = results.get("matmul")
    if m:
        lines.append(
            f"Float32 matmul ({m['n']}^2): default precision {m['default_flops_per_s'] / 1e12:.2f} "
            f"TFLOP/s (max rel. error {m['default_max_relative_error']:.1e}), highest "
            f"{m['highest_flops_per_s'] / 1e12:.2f} TFLOP/s ({m['highest_max_relative_error']:.1e})."
        )
    mg = results.get("meta_gradient")
    if mg:
        lines += [
            "",
            "| size (C, d, S, Q, T) | PyTorch | JAX auto (method) | warm PyTorch / JAX "
            "| cold PyTorch / JAX |",
            "|---|---|---|---|---|",
        ]
        for r in mg["sizes"]:
            p, t = r["problem"], r["seconds"]
            lines.append(
                f"| {p['name']} ({p['num_classes']}, {p['dim']}, {r['support_size']}, "
                f"{r['query_size']}, {p['inner_steps']}) | {t['torch'] * 1e3:.2f} ms "
                f"| {t['auto'] * 1e3:.2f} ms ({r['lower_bound']['auto']}) "
                f"| {r['speedup_vs_torch']['auto']:.1f}x | {r['cold_speedup_vs_torch']['auto']:.2f}x |"
            )
    w = results.get("whole_run")
    if w:
        lines += [
            "",
            f"Whole run ({w['sizes']['num_train']} train, d = {w['sizes']['dim']}, "
            f"{w['settings']['epochs']} epochs, one seed): JAX cold {w['jax']['cold_s']:.2f} s, "
            f"warm {w['jax']['warm_s']:.3f} s; PyTorch cold {w['torch']['cold_s']:.2f} s, warm "
            f"{w['torch']['warm_s']:.2f} s ({w['speedup_vs_torch_warm']:.1f}x warm, "
            f"{w['speedup_vs_torch_cold']:.2f}x cold).",
        ]
    s = results.get("seeds")
    if s:
        lines.append(
            "Seeds vmapped: "
            + "; ".join(
                f"{r['num_seeds']}: cold {r['cold_s']:.2f} s, warm {r['warm_s']:.3f} s "
                f"({r['warm_over_one_seed']:.2f}x one seed)"
                for r in s["rows"]
            )
            + "."
        )
    d = results.get("dfr")
    if d:
        lines.append(
            f"DFR (d = {d['feature_dim']}, val {d['n_val']}, one seed): JAX cold "
            f"{d['jax']['cold_s']:.2f} s, warm {d['jax']['warm_s']:.3f} s; scikit-learn on the "
            f"host {d['sklearn']['warm_s']:.2f} s ({d['sklearn_over_jax_warm']:.1f}x warm, "
            f"{d['sklearn_over_jax_cold']:.2f}x cold); test WGA JAX {d['jax_test_wga']:.3f}, "
            f"scikit-learn {d['sklearn_test_wga']:.3f}."
        )
    p = results.get("precision")
    if p:
        q = p["summary"]
        lines.append(
            f"Matmul precision, default vs highest: any selected head's test accuracy changed: "
            f"{'yes' if q['any_selected_head_accuracy_changed'] else 'no'} (HSFM, {q['num_seeds']} "
            f"seeds: other best epoch in seeds {q['hsfm_seeds_with_other_best_epoch']}, other test "
            f"accuracy in seeds {q['hsfm_seeds_with_other_test_accuracy']}, mean test WGA "
            f"{q['hsfm_test_wga_mean']['default']:.4f} vs {q['hsfm_test_wga_mean']['highest']:.4f}; "
            f"DFR test WGA {q['dfr_test']['default']['wga']:.4f} vs "
            f"{q['dfr_test']['highest']['wga']:.4f})."
        )
    lines.append(f"Total {results.get('total_s', 0.0):.1f} s.")
    return "\n".join(lines)


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0]
    )
    parser.add_argument("outdir", help="directory for gpu.json and gpu.log (created)")
    parser.add_argument("--quick", action="store_true", help="small sizes; CPU unless --device")
    parser.add_argument("--device", choices=("cpu", "gpu"), default=None)
    return parser.parse_args(argv)


SECTIONS = ("meta_gradient", "whole_run", "seeds", "dfr", "precision")


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    device = args.device or ("cpu" if args.quick else "gpu")
    outdir = Path(args.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise SystemExit(f"error: {outdir}: exists and is not a directory")
    outdir.mkdir(parents=True, exist_ok=True)
    log = Log(outdir / "gpu.log")
    os.environ.setdefault("JAX_PLATFORMS", "cpu" if device == "cpu" else "cuda")
    import jax
    import jax.numpy as jnp
    import torch
    from sklearn.exceptions import ConvergenceWarning

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    # Every first call compiles: cold numbers are cold whatever the environment says.
    jax.config.update("jax_enable_compilation_cache", False)
    if device == "gpu" and jax.devices()[0].platform != "gpu":
        raise SystemExit(
            f"error: --device=gpu but JAX sees {jax.devices()[0]}; install jax[cuda12]"
        )
    if device == "gpu" and not torch.cuda.is_available():
        raise SystemExit("error: --device=gpu but torch.cuda.is_available() is False")

    argv_list = sys.argv[1:] if argv is None else list(argv)
    results = dict(
        command="python -m benchmarks.gpu " + " ".join(argv_list),
        quick=args.quick,
        environment=environment(jax, torch, device),
        complete=False,
    )
    path = outdir / "gpu.json"

    def save():
        results["total_s"] = log.elapsed
        results["table"] = table(results)
        path.write_text(json.dumps(results, indent=1, default=_json_default))

    log(f"device {results['environment']['jax_device']}; writing {path}")
    results["matmul"] = matmul_throughput(jax, jnp, args.quick)
    save()
    runs = dict(
        meta_gradient=lambda: bench_meta_gradients(jax, jnp, torch, device, args.quick, log),
        whole_run=lambda: bench_whole_run(jax, jnp, torch, device, args.quick, log),
        seeds=lambda: bench_seeds(jax, jnp, args.quick, log, results["whole_run"]["jax"]),
        dfr=lambda: bench_dfr(jax, args.quick, log),
        precision=lambda: bench_precision(jax, jnp, args.quick, log),
    )
    for name in SECTIONS:
        results[name], results[f"{name}_s"] = _timed(runs[name])
        save()
    results["complete"] = True
    results["environment"]["load_average_end"] = list(os.getloadavg())
    save()
    log("done\n" + results["table"])
    return results


if __name__ == "__main__":
    main()
