"""Time to first result: every method's compile and run time, cold and warm, on real jobs.

    python -m benchmarks.compile_time [--jobs=main,main_sklearn,mfd_pre,mfd_pre_dfr,...]
        [--methods=dfr,...] [--out=benchmarks/results/compile_time_cpu.json]
    python -m benchmarks.compile_time --from_json=benchmarks/results/compile_time_cpu.json

Jobs (each a config as `experiments.main` runs it; features prepared before any timing):

- ``main``: the main job, `experiments/configs/digit_dominoes.py` (README "Two commands"):
  every method, 5 seeds, d = 64;
- ``mfd_pre``: Fashion-MNIST dominoes on frozen MobileNetV2 features (d = 1280, about 10k train
  / 2.4k val), `experiments/configs/mnist_fashion_dominoes_mobilenet_v2_pretrained.py` read from
  ``--mfd_dir`` (never written);
- ``mfd_pre_dfr``: the same features, DFR on validation only, one seed, with scikit-learn's
  recipe (`benchmarks.dfr.sklearn_dfr`, liblinear on the host) timed in the same process;
- ``main_sklearn``, ``mfd_pre_dfr_sklearn``: ``main`` and ``mfd_pre_dfr`` with
  ``dfr.solver.method = "sklearn"`` (`hsfm_jax.solvers.sklearn_l1`), fresh cache only.

Each job runs in new processes, one after another, sharing one cache directory that starts
empty (JAX's persistent compilation cache and `hsfm_jax.runtime.program_cache`, as `experiments.main`
turns them on):

1. ``fresh``: the cache empty. Every method's first call (``cold``) and a second call in the
   same process (``warm``: its programs in memory, so it only runs);
2. ``cached``: a new process on the filled cache (what rerunning a command costs);
3. ``resized``: a new process on the same cache with every split cut to 90% of its rows (a
   second dataset of the same d and C, other split sizes): ``cold`` there against ``warm``.

A call's ``compile_s`` is the time inside the spans JAX records (`jax.monitoring`: tracing to
a jaxpr, lowering to MLIR, XLA compilation; overlapping spans counted once), split into
``trace_s``, ``lower_s`` and ``xla_s`` (and ``xla_by_program_s``: XLA seconds per program
name, summed over its compilations); ``run_s`` is the rest of the call (running, the host
work between programs, loading cached executables). ``programs`` counts XLA compilations
(persistent-cache hits included). The load average is recorded at each process's start and end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

MFD_DIR = "runs/mfd_mobilenet_v2_pretrained_features"  # the pretrained MFD config's
# job -> phases it runs
JOBS = {
    "main": ("fresh", "cached", "resized"),
    "main_sklearn": ("fresh",),
    "mfd_pre": ("fresh", "cached", "resized"),
    "mfd_pre_dfr": ("fresh", "resized"),
    "mfd_pre_dfr_sklearn": ("fresh",),
}
PHASES = ("fresh", "cached", "resized")
RESIZE_FRACTION = 0.9
_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_XLA = "/jax/core/compile/backend_compile_duration"


class Spans:
    """Collects JAX's compile spans (start, end) by kind while installed."""

    def __init__(self):
        import jax

        self.spans: list[tuple[str, float, float]] = []
        self._kinds = {_TRACE: "trace", _LOWER: "lower", _XLA: "xla"}
        jax.monitoring.register_event_time_span_listener(self._record)

    def _record(self, event: str, start: float, end: float, **kwargs) -> None:
        if event in self._kinds:
            self.spans.append((self._kinds[event], start, end, kwargs.get("fun_name", "?")))

    def close(self) -> None:
        import jax

        jax.monitoring.unregister_event_time_span_listener(self._record)

    def mark(self) -> int:
        return len(self.spans)

    def summary(self, since: int) -> dict:
        spans = self.spans[since:]
        out = {
            f"{kind}_s": _union([(s, e) for k, s, e, _ in spans if k == kind])
            for kind in self._kinds.values()
        }
        out["compile_s"] = _union([(s, e) for _, s, e, _ in spans])
        out["programs"] = sum(k == "xla" for k, *_ in spans)
        by_program: dict[str, float] = {}
        for kind, s, e, name in spans:
            if kind == "xla":
                by_program[name] = by_program.get(name, 0.0) + e - s
        out["xla_by_program_s"] = by_program
        return out


def _union(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of intervals (nested spans, e.g. an inner jit traced inside an
    outer one, are counted once)."""
    total, end = 0.0, -np.inf
    for s, e in sorted(intervals):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


# ------------------------------------------------------------------------------ one process


def _config(job: str, mfd_dir: str):
    if job.startswith("main"):
        from experiments.configs import digit_dominoes

        config = digit_dominoes.get_config()
    else:
        from experiments.configs import mnist_fashion_dominoes_mobilenet_v2_pretrained as mfd

        config = mfd.get_config()
        config.features_dir = mfd_dir
        config.prepare = ""
    if job.endswith("_sklearn"):
        config.dfr.solver.method = "sklearn"
    if job.startswith("mfd_pre_dfr"):
        config.methods = "dfr"
        config.num_seeds = 1
        config.dfr.variants = ("dfr",)
    return config


def _resized(data, fraction: float, seed: int = 0):
    """`data` with every split cut to `fraction` of its rows (a random subset, order kept)."""
    from hsfm_jax.data import features

    rng = np.random.default_rng(seed)
    cut = {}
    for name, split in data.splits.items():
        n = split.features.shape[0]
        rows = np.sort(rng.choice(n, size=int(n * fraction), replace=False))
        cut[name] = dataclasses.replace(
            split,
            features=np.asarray(split.features[rows]),
            labels=split.labels[rows],
            groups=split.groups[rows],
            ids=None,
        )
    return features.with_splits(data, **cut)


def _enable_caches(cache_dir: Path) -> None:
    """The caches `experiments.cli.enable_compilation_cache` turns on, in `cache_dir`."""
    import jax

    from hsfm_jax.runtime import program_cache

    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    program_cache.enable(cache_dir / "programs")


def child(spec: dict) -> dict:
    """One process of one phase: every method twice (cold, then warm), timed."""
    load_start = list(os.getloadavg())
    t_import = time.perf_counter()
    import jax

    from hsfm_jax import methods
    from hsfm_jax.data import inputs

    spans = Spans()
    _enable_caches(Path(spec["cache_dir"]))
    config = _config(spec["job"], spec["mfd_dir"])
    if spec.get("methods"):
        config.methods = spec["methods"]
    jax.config.update("jax_enable_x64", bool(config.float64))
    data = inputs.load(config)
    if spec["fraction"] < 1.0:
        data = _resized(data, spec["fraction"])
    names = methods.parse(config.methods)
    given = inputs.method_data(config, data)
    import_s = time.perf_counter() - t_import
    resolved = methods.check(config, names, given)
    keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
    rows = {}
    for name in names:
        method_config = methods.resolve(config, name, resolved[name])
        rows[name] = {}
        for call in ("cold", "warm"):
            mark, start = spans.mark(), time.perf_counter()
            jax.block_until_ready(methods.run(name, given, method_config, keys).rows)
            total = time.perf_counter() - start
            timing = dict(total_s=total, **spans.summary(mark))
            timing["run_s"] = total - timing["compile_s"]
            rows[name][call] = timing
    result = dict(
        spec=spec,
        sizes={k: int(v.features.shape[0]) for k, v in data.splits.items()},
        rows_on_device={k: int(v.num_rows) for k, v in given.splits.items()},
        feature_dim=int(data.feature_dim),
        num_seeds=int(config.num_seeds),
        import_and_load_s=import_s,
        methods=rows,
        load_average=[load_start, list(os.getloadavg())],
    )
    if spec["job"].startswith("mfd_pre_dfr"):
        result["sklearn"] = _sklearn_dfr(data, config)
    return result


def _sklearn_dfr(data, config) -> dict:
    """scikit-learn's DFR-on-val recipe on the same data, first and second call."""
    from sklearn.exceptions import ConvergenceWarning

    from benchmarks import dfr as dfr_bench

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    times = []
    for seed in (0, 1):
        start = time.perf_counter()
        dfr_bench.sklearn_dfr(data, tuple(config.dfr.c_grid), int(config.dfr.num_retrains), seed)
        times.append(time.perf_counter() - start)
    return dict(first_s=times[0], second_s=times[1])


# ------------------------------------------------------------------------------ orchestration


def _run_child(spec: dict) -> dict:
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.compile_time",
            "--child",
            json.dumps(spec),
            "--child_out",
            out.name,
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"error: {spec['job']} {spec['phase']} failed:\n{proc.stderr[-4000:]}")
        return json.loads(Path(out.name).read_text())


def _environment() -> dict:
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return dict(
        cpu=cpu,
        cpu_count=os.cpu_count(),
        jax=jax.__version__,
        jax_device=str(jax.devices()[0]),
        python=sys.version.split()[0],
        load_average_start=list(os.getloadavg()),
    )


def totals(phase: dict) -> dict:
    """Sums over methods of one phase's cold and warm calls."""
    out = {}
    for call in ("cold", "warm"):
        for field in ("total_s", "compile_s", "run_s"):
            out[f"{call}_{field}"] = sum(m[call][field] for m in phase["methods"].values())
    return out


def _biggest_programs(fresh: dict, count: int = 6) -> str:
    """One line: the fresh cold calls' programs with the most XLA seconds (method: program)."""
    programs = [
        (seconds, f"{method}: {name}")
        for method, row in fresh["methods"].items()
        for name, seconds in row["cold"].get("xla_by_program_s", {}).items()
    ]
    if not programs:
        return ""
    top = sorted(programs, reverse=True)[:count]
    xla = sum(row["cold"]["xla_s"] for row in fresh["methods"].values())
    return (
        f"\nXLA compilation, fresh cold: {xla:.2f} s in all; the largest programs: "
        + ", ".join(f"{label} {seconds:.2f} s" for seconds, label in top)
        + "."
    )


def table(results: dict) -> str:
    env = results["environment"]
    lines = [
        f"CPU: {env['cpu']}, {env['cpu_count']} cores; jax {env['jax']}; load average "
        f"{env['load_average_start'][0]:.1f} at the start, {env['load_average_end'][0]:.1f} at "
        "the end.",
    ]
    for job, phases in results["jobs"].items():
        if "fresh" not in phases:
            continue
        fresh = phases["fresh"]
        sizes = f"splits {fresh['sizes']}"
        if "resized" in phases:
            sizes += f" (resized: {phases['resized']['sizes']})"
        if "rows_on_device" in fresh:
            sizes += f", padded to {fresh['rows_on_device']} rows"
        lines += [
            "",
            f"{job}: d = {fresh['feature_dim']}, {sizes}, {fresh['num_seeds']} "
            "seed(s). Seconds: compile + run = total.",
            "",
            "| method | fresh cold | fresh warm | cached cold | resized cold | resized warm "
            "| programs (fresh) |",
            "|---|---|---|---|---|---|---|",
        ]
        cell = lambda t: f"{t['compile_s']:.2f} + {t['run_s']:.2f} = {t['total_s']:.2f}"
        columns = (("fresh", "cold"), ("fresh", "warm"), ("cached", "cold"))
        columns += (("resized", "cold"), ("resized", "warm"))
        for name, row in fresh["methods"].items():
            cells = [
                cell(phases[p]["methods"][name][c]) if p in phases else "-" for p, c in columns
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['cold']['programs']} |")
        sums = {p: totals(phases[p]) for p in phases}
        lines.append(
            "| **all** | "
            + " | ".join(f"{sums[p][f'{c}_total_s']:.2f}" if p in sums else "-" for p, c in columns)
            + " | |"
        )
        if biggest := _biggest_programs(fresh):
            lines.append(biggest)
        if "sklearn" in fresh:
            sk = fresh["sklearn"]
            jax_cold = fresh["methods"]["dfr"]["cold"]["total_s"]
            lines.append(
                f"\nscikit-learn's DFR recipe in the same process: {sk['first_s']:.2f} s "
                f"(second call {sk['second_s']:.2f} s); JAX cold / scikit-learn = "
                f"{jax_cold / sk['first_s']:.2f}x, JAX warm / scikit-learn = "
                f"{fresh['methods']['dfr']['warm']['total_s'] / sk['second_s']:.2f}x."
            )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default=",".join(JOBS))
    parser.add_argument("--phases", default=",".join(PHASES), help="at most each job's own")
    parser.add_argument("--mfd_dir", default=MFD_DIR)
    parser.add_argument("--methods", default="", help="only these (comma-separated)")
    parser.add_argument("--out", default="")
    parser.add_argument("--from_json", default="", help="print the table of a results JSON")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--child_out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.from_json:
        print(table(json.loads(Path(args.from_json).read_text())))
        return {}
    if args.child:
        Path(args.child_out).write_text(json.dumps(child(json.loads(args.child))))
        return {}
    jobs = [j for j in args.jobs.split(",") if j]
    phases = [p for p in args.phases.split(",") if p]
    bad = [j for j in jobs if j not in JOBS] + [p for p in phases if p not in PHASES]
    if bad:
        raise SystemExit(f"error: unknown job/phase {bad}; jobs {tuple(JOBS)}, phases {PHASES}")
    if any(j.startswith("mfd") for j in jobs) and not Path(args.mfd_dir, "meta.json").exists():
        raise SystemExit(f"error: --mfd_dir={args.mfd_dir}: no meta.json (features not exported)")
    results = dict(
        command=" ".join(
            ["python -m benchmarks.compile_time", *(argv if argv is not None else sys.argv[1:])]
        ),
        environment=_environment(),
        jobs={},
    )
    for job in jobs:
        with tempfile.TemporaryDirectory(prefix=f"compile_time_{job}_") as cache:
            results["jobs"][job] = {}
            for phase in (p for p in phases if p in JOBS[job]):
                spec = dict(
                    job=job,
                    phase=phase,
                    cache_dir=cache,
                    mfd_dir=args.mfd_dir,
                    fraction=RESIZE_FRACTION if phase == "resized" else 1.0,
                    methods=args.methods,
                )
                print(f"{job} {phase} ...", file=sys.stderr, flush=True)
                results["jobs"][job][phase] = _run_child(spec)
                _save(results, args.out)  # after every phase: a long run cut short keeps them
    print(results["table"])
    return results


def _save(results: dict, out: str) -> None:
    results["environment"]["load_average_end"] = list(os.getloadavg())
    results["table"] = table(results)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
