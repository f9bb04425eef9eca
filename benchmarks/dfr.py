"""DFR wall time: hsfm_jax against scikit-learn's liblinear, same problem, same process.

    python -m benchmarks.dfr [--quick] [--repeats=5] [--sizes=64,1280,2048] [--device=cpu]
        [--out=benchmarks/results/dfr_cpu.json]

Both sides run the DFR-on-val protocol of `hsfm_jax.methods.dfr` end to end for one seed:
val halves, a group-balanced subsample of the fitting half, 7 values of C scored by held-out
WGA, then 20 group-balanced refits on all of val with the chosen C, averaged; the scalers
included. The scikit-learn side is the released script's loop (``LogisticRegression(C,
solver="liblinear")`` with the L1 penalty, its default tol=1e-4 and max_iter=100), written here
with our own NumPy subsampling.

Problems (`make_problem`) are backbone-like features: nonnegative (a ReLU of a low-rank latent
with decaying scales plus noise, so columns are correlated and some are dead), with a weak class
direction and a strong spurious one, at three sizes:

- d = 64, val 280 (70 per group): digit dominoes' CNN features (`experiments/configs/
  digit_dominoes.py`);
- d = 1280, train / val / test 4000 / 1000 / 2000 in Waterbirds' group proportions
  (MobileNetV2 features);
- d = 2048, Waterbirds' own split sizes (val 467 / 466 / 133 / 133; ResNet-50 features).

``--quick`` runs d = 64 and d = 256 (val 400) once each, a smoke test.

JAX is timed after a warm-up call; the warm-up's extra time over the median run is reported as
compile time. Repeats are interleaved (JAX, scikit-learn, JAX, ...) with a fresh seed each, and
medians reported, so load from other processes hits both alike. As a check of the answers, each
side's test WGA and chosen C are printed (the subsamples differ, so they agree only roughly),
and the JAX solver's objective at every C of the grid is compared with liblinear run to
tol=1e-8 on the same tuning subsample (the largest relative gap is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

WATERBIRDS_TRAIN = (3498, 184, 56, 1057)
WATERBIRDS_VAL = (467, 466, 133, 133)


def _scaled(counts, total):
    """Group counts in the proportions of `counts`, summing to `total`."""
    counts = np.asarray(counts, float)
    out = np.floor(counts / counts.sum() * total).astype(int)
    out[np.argmax(counts)] += total - out.sum()
    return tuple(int(c) for c in out)


# name -> (dim, train group counts, val group counts, test per group); group = 2 y + s.
SIZES = {
    "64": (64, (331, 17, 18, 342), (70, 70, 70, 70), 52),
    "256": (256, _scaled(WATERBIRDS_TRAIN, 2000), _scaled(WATERBIRDS_VAL, 400), 100),
    "1280": (1280, _scaled(WATERBIRDS_TRAIN, 4000), _scaled(WATERBIRDS_VAL, 1000), 500),
    "2048": (2048, WATERBIRDS_TRAIN, WATERBIRDS_VAL, 250),
}
FULL_SIZES = ("64", "1280", "2048")
QUICK_SIZES = ("64", "256")


def make_problem(size: str, seed: int = 0):
    """A backbone-like `FeatureSet` (see module docstring) of one of `SIZES`."""
    from hsfm_jax.data import features

    dim, train_counts, val_counts, test_per_group = SIZES[size]
    rng = np.random.default_rng(seed)
    rank = max(8, dim // 16)
    mix = rng.normal(size=(rank + 2, dim)) / np.sqrt(rank)
    mix[:rank] *= 3.0 / np.sqrt(1.0 + np.arange(rank))[:, None]  # decaying nuisance factors
    mix[rank + 1] *= 2.0  # the spurious factor is stronger than the class factor
    offset = 0.5 * rng.normal(size=dim) - 0.3  # some columns mostly zero after the ReLU

    def split(counts):
        groups = rng.permutation(np.repeat(np.arange(4), counts))
        labels, spurious = groups // 2, groups % 2
        latent = np.concatenate(
            [
                rng.normal(size=(groups.size, rank)),
                (2.0 * labels - 1)[:, None],
                (2.0 * spurious - 1)[:, None],
            ],
            axis=1,
        )
        x = latent @ mix + offset + 0.5 * rng.normal(size=(groups.size, dim))
        return features.Split(
            np.maximum(x, 0).astype(np.float32), labels.astype(np.int32), groups.astype(np.int32)
        )

    splits = {
        "train": split(train_counts),
        "val": split(val_counts),
        "test": split((test_per_group,) * 4),
    }
    meta = features.make_meta(
        dataset="benchmark",
        backbone="none",
        class_names=["class_0", "class_1"],
        group_names=[f"y={y},s={s}" for y in (0, 1) for s in (0, 1)],
        feature_dim=dim,
        split_sizes={k: v.features.shape[0] for k, v in splits.items()},
        preprocessing="benchmarks.dfr.make_problem",
    )
    return features.FeatureSet(path=None, meta=meta, splits=splits)


# ------------------------------------------------------------------------------ scikit-learn


def _balanced(rng, groups):
    idx = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    smallest = min(len(i) for i in idx)
    return np.concatenate([rng.permutation(i)[:smallest] for i in idx])


def _liblinear(c, **kwargs):
    from sklearn.linear_model import LogisticRegression

    # l1_ratio=1 is the L1 penalty without the deprecated `penalty=` argument (sklearn 1.8+).
    return LogisticRegression(C=c, solver="liblinear", l1_ratio=1, **kwargs)


def _tuning_split(rng, x, groups):
    n_half = len(x) // 2
    perm = rng.permutation(len(x))
    held, fit_rows = perm[:n_half], perm[n_half:]
    return held, fit_rows[_balanced(rng, groups[fit_rows])]


def sklearn_dfr(data, c_grid, num_retrains: int, seed: int):
    """The released script's DFR-on-val loop with scikit-learn (our code). -> (coef, intercept,
    scaler, chosen C)."""
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    x, y, g = data.val.features, data.val.labels, data.val.groups
    held, tune_rows = _tuning_split(rng, x, g)
    scaler = StandardScaler().fit(x[tune_rows])
    x_tune, x_held = scaler.transform(x[tune_rows]), scaler.transform(x[held])
    scores = []
    for c in c_grid:
        clf = _liblinear(c).fit(x_tune, y[tune_rows])
        correct = clf.predict(x_held) == y[held]
        scores.append(min(correct[g[held] == k].mean() for k in np.unique(g[held])))
    best_c = c_grid[int(np.argmax(scores))]
    scaler = StandardScaler().fit(data.train.features)
    coefs, intercepts = [], []
    for _ in range(num_retrains):
        rows = _balanced(rng, g)
        clf = _liblinear(best_c).fit(scaler.transform(x[rows]), y[rows])
        coefs.append(clf.coef_)
        intercepts.append(clf.intercept_)
    return np.mean(coefs, 0), np.mean(intercepts, 0), scaler, best_c


def sklearn_test_wga(data, coef, intercept, scaler) -> float:
    z = scaler.transform(data.test.features) @ coef[0] + intercept[0]
    correct = (z > 0).astype(int) == data.test.labels
    return float(min(correct[data.test.groups == k].mean() for k in range(data.num_groups)))


def objective_gap(data, c_grid, solver, seed: int = 0) -> float:
    """Largest relative gap, over the C grid on one tuning subsample, between the JAX solver's
    objective and liblinear's run to tol=1e-8 (both evaluated by `l1_logistic.l1_logreg_objective`)."""
    import jax.numpy as jnp

    from hsfm_jax.solvers import l1_logistic

    x, y, g = data.val.features, data.val.labels, data.val.groups
    _, rows = _tuning_split(np.random.default_rng(seed), x, g)
    z = x[rows]
    z = (z - z.mean(0)) / np.where(z.std(0) > 0, z.std(0), 1.0)
    targets = jnp.asarray(np.where(y[rows] == 1, 1.0, -1.0), jnp.float32)
    ones = jnp.ones(len(rows))
    gaps = []
    for c in c_grid:
        _, info = l1_logistic.fit_l1_logreg(
            jnp.asarray(z), jnp.asarray(y[rows]), ones, c, num_classes=2, solver=solver
        )
        ref = _liblinear(c, tol=1e-8, max_iter=10000).fit(z, y[rows])
        ref_objective = l1_logistic.l1_logreg_objective(
            jnp.asarray(ref.coef_[0], jnp.float32),
            jnp.asarray(ref.intercept_[0], jnp.float32),
            jnp.asarray(z),
            targets,
            ones,
            c,
        )
        gaps.append(float(info["objective"][0] / ref_objective - 1.0))
    return float(max(gaps, key=abs))


# ------------------------------------------------------------------------------ benchmark


def environment(jax) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sklearn

    return dict(
        jax_device=str(jax.devices()[0]),
        cpu=cpu,
        cpu_count=os.cpu_count(),
        load_average=list(os.getloadavg()),
        python=sys.version.split()[0],
        jax=jax.__version__,
        sklearn=sklearn.__version__,
        numpy=np.__version__,
    )


def bench_size(size: str, repeats: int) -> dict:
    import jax

    from hsfm_jax.methods import dfr
    from hsfm_jax.reporting import evaluate

    data = make_problem(size)
    config = dfr.default_config()
    config.variants = ("dfr",)
    config.update(dfr.check(config, data))
    test = data.test.to_arrays()

    def run_jax(seed):
        rows = dfr.run(data, config, jax.random.key(seed)[None]).rows
        return jax.block_until_ready(rows["dfr"])

    start = time.perf_counter()
    run_jax(0)
    first_call = time.perf_counter() - start

    times = {"jax": [], "sklearn": []}
    jax_wga, sk_wga, sk_c = [], [], []
    for r in range(repeats):
        start = time.perf_counter()
        head = run_jax(r + 1)
        times["jax"].append(time.perf_counter() - start)
        single = jax.tree_util.tree_map(lambda x: x[0], head)
        metrics = evaluate.evaluate_head(single, test, num_classes=2, num_groups=data.num_groups)
        jax_wga.append(float(metrics["wga"]))

        start = time.perf_counter()
        coef, intercept, scaler, best_c = sklearn_dfr(data, config.c_grid, config.num_retrains, r)
        times["sklearn"].append(time.perf_counter() - start)
        sk_wga.append(sklearn_test_wga(data, coef, intercept, scaler))
        sk_c.append(float(best_c))

    jax_s, sk_s = float(np.median(times["jax"])), float(np.median(times["sklearn"]))
    n_val, d = data.val.features.shape
    return dict(
        size=size,
        feature_dim=d,
        n_train=data.train.features.shape[0],
        n_val=n_val,
        val_group_counts=np.bincount(data.val.groups).tolist(),
        fits=len(config.c_grid) + config.num_retrains,
        repeats=repeats,
        jax_s=jax_s,
        sklearn_s=sk_s,
        jax_over_sklearn=jax_s / sk_s,
        jax_times_s=times["jax"],
        sklearn_times_s=times["sklearn"],
        jax_first_call_s=first_call,
        jax_compile_s=max(first_call - jax_s, 0.0),
        jax_test_wga=jax_wga,
        sklearn_test_wga=sk_wga,
        sklearn_chosen_c=sk_c,
        objective_gap=objective_gap(data, config.c_grid, dfr._solver(config)),
        solver=dict(config.solver),
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d = 64 and 256, one repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="", help=f"comma-separated, of {sorted(SIZES)}")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", args.device if args.device == "cpu" else "cuda")
    import jax
    from sklearn.exceptions import ConvergenceWarning

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    sizes = args.sizes.split(",") if args.sizes else (QUICK_SIZES if args.quick else FULL_SIZES)
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise ValueError(f"--sizes: unknown {unknown}; choose from {sorted(SIZES)}")
    repeats = 1 if args.quick else args.repeats
    env = environment(jax)
    rows = [bench_size(s, repeats) for s in sizes]
    env["load_average_end"] = list(os.getloadavg())
    results = dict(
        command=" ".join(["python -m benchmarks.dfr", *(argv or sys.argv[1:])]),
        environment=env,
        sizes=rows,
    )

    print(
        f"DFR on val, one seed, protocol end to end ({rows[0]['fits']} L1 fits); JAX on "
        f"{env['jax_device']}, {env['cpu']} ({env['cpu_count']} cores), medians of {repeats}"
    )
    print(
        "| d | val | JAX (s) | scikit-learn (s) | JAX / sklearn | JAX compile (s) "
        "| objective gap | test WGA JAX | test WGA sklearn |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['feature_dim']} | {r['n_val']} | {r['jax_s']:.3f} | {r['sklearn_s']:.3f} "
            f"| {r['jax_over_sklearn']:.2f} | {r['jax_compile_s']:.1f} | {r['objective_gap']:+.1e} "
            f"| {np.mean(r['jax_test_wga']):.3f} | {np.mean(r['sklearn_test_wga']):.3f} |"
        )
    print(f"load average: start {env['load_average']}, end {env['load_average_end']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
