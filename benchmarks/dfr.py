"""DFR wall time: hsfm_jax (FISTA in JAX) against scikit-learn's liblinear, same problem, one run.

    python -m benchmarks.dfr [--quick] [--repeats=3] [--out=benchmarks/results/dfr_cpu.json]

The problem is `hsfm_jax.synthetic` at backbone size (d = 2048, val = 1200 examples in 4 groups,
as Waterbirds' val); ``--quick`` shrinks it (d = 256, val = 400). Both sides run the DFR-on-val
protocol of `hsfm_jax.baselines.dfr` for one seed: 7 C values on the balanced fitting half,
selection by held-out WGA, 20 balanced refits averaged. The scikit-learn side is the released
script's loop (``LogisticRegression(C, solver="liblinear")`` with the L1 penalty, its default
tol=1e-4 and max_iter=100), written here with our own subsampling. JAX is timed after a warm-up
call (compilation reported separately), each repeat with a fresh key; we report medians of
repeats interleaved between the two implementations, so machine load hits both alike. Test WGA
and the chosen C of each side are printed as a sanity check (subsamples differ, so they agree
only roughly).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import jax
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from hsfm_jax import evaluate, features, synthetic
from hsfm_jax.baselines import dfr


def make_problem(quick: bool) -> features.FeatureSet:
    dims = (
        dict(num_core=16, num_spurious=16, num_noise=224)
        if quick
        else dict(num_core=64, num_spurious=64, num_noise=1920)
    )
    splits, info = synthetic.generate(
        num_train=2000 if quick else 4000,
        val_per_group=100 if quick else 300,
        test_per_group=250,
        **dims,
    )
    meta = features.make_meta(
        dataset="synthetic",
        backbone="none",
        class_names=info["class_names"],
        group_names=info["group_names"],
        feature_dim=splits["train"].features.shape[1],
        split_sizes={k: v.num_examples for k, v in splits.items()},
        preprocessing="benchmark",
    )
    return features.FeatureSet(path=None, meta=meta, splits=splits)


def _balanced(rng, groups):
    idx = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    smallest = min(len(i) for i in idx)
    return np.concatenate([rng.permutation(i)[:smallest] for i in idx])


def sklearn_dfr(data: features.FeatureSet, c_grid, num_retrains: int, seed: int):
    """The released script's DFR-on-val loop with scikit-learn (our code). -> (coef, intercept,
    scaler, chosen C)."""
    rng = np.random.default_rng(seed)
    x, y, g = data.val.features, data.val.labels, data.val.groups
    n_half = len(x) // 2
    perm = rng.permutation(len(x))
    held, fit_rows = perm[:n_half], perm[n_half:]
    tune_rows = fit_rows[_balanced(rng, g[fit_rows])]
    scaler = StandardScaler().fit(x[tune_rows])
    x_tune, x_held = scaler.transform(x[tune_rows]), scaler.transform(x[held])
    scores = []
    for c in c_grid:
        clf = LogisticRegression(C=c, solver="liblinear", l1_ratio=1).fit(x_tune, y[tune_rows])
        correct = clf.predict(x_held) == y[held]
        scores.append(min(correct[g[held] == k].mean() for k in np.unique(g[held])))
    best_c = c_grid[int(np.argmax(scores))]
    scaler = StandardScaler().fit(data.train.features)
    coefs, intercepts = [], []
    for _ in range(num_retrains):
        rows = _balanced(rng, g)
        clf = LogisticRegression(C=best_c, solver="liblinear", l1_ratio=1)
        clf.fit(scaler.transform(x[rows]), y[rows])
        coefs.append(clf.coef_)
        intercepts.append(clf.intercept_)
    return np.mean(coefs, 0), np.mean(intercepts, 0), scaler, best_c


def sklearn_test_wga(data, coef, intercept, scaler) -> float:
    z = scaler.transform(data.test.features) @ coef[0] + intercept[0]
    correct = (z > 0).astype(int) == data.test.labels
    return float(min(correct[data.test.groups == k].mean() for k in range(data.num_groups)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)

    data = make_problem(args.quick)
    config = dfr.default_config()
    config.variants = ("dfr",)
    test = data.test.to_arrays()

    def run_jax(seed):
        rows = dfr.run(data, config, jax.random.key(seed)[None])
        return jax.block_until_ready(rows["dfr"])

    start = time.perf_counter()
    run_jax(0)
    first_call = time.perf_counter() - start

    times = {"jax": [], "sklearn": []}
    jax_wga, sk_wga, sk_c = [], [], []
    for r in range(args.repeats):
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
        sk_c.append(best_c)

    jax_s, sk_s = float(np.median(times["jax"])), float(np.median(times["sklearn"]))
    n_val, d = data.val.features.shape
    result = dict(
        device=str(jax.devices()[0]),
        quick=args.quick,
        n_val=n_val,
        feature_dim=d,
        fits=len(config.c_grid) + config.num_retrains,
        repeats=args.repeats,
        jax_first_call_s=first_call,
        jax_s=jax_s,
        sklearn_s=sk_s,
        sklearn_over_jax=sk_s / jax_s,
        jax_test_wga=jax_wga,
        sklearn_test_wga=sk_wga,
        sklearn_chosen_c=sk_c,
    )
    print(
        f"DFR on val, one seed: d={d}, val={n_val}, {result['fits']} L1 fits, device {result['device']}"
    )
    print("| implementation | median wall (s) | sklearn / this | test WGA (per repeat) |")
    print("|---|---|---|---|")
    print(
        f"| hsfm_jax (FISTA, vmapped) | {jax_s:.2f} | {sk_s / jax_s:.2f} | {np.round(jax_wga, 3)} |"
    )
    print(f"| scikit-learn liblinear | {sk_s:.2f} | 1.00 | {np.round(sk_wga, 3)} |")
    print(f"JAX first call (compile + run): {first_call:.1f} s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
