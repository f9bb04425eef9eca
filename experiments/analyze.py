r"""See what an HSFM run did: curves, edit geometry, PCA, nearest neighbours, a one-page report.

  python -m experiments.analyze --workdir=runs/synthetic [--out=DIR] [--seed_index=0] \
      [--points_per_class=2] [--neighbours=5] [--metric=euclidean] [--features_dir=DIR] \
      [--images_root=DIR]

Reads only the run's files (config.json, results.json, history.json, support.npz) and its feature
directory (train and val). Writes to --out (default <workdir>/analysis):

  curves.png            val/test WGA and mean accuracy, outer loss before/after the meta-steps,
                        edit norm and hard-set group composition per epoch, mean ± std over seeds
  edit_geometry.png     per class: cosine and energy fraction of the mean edit along the
                        within-class spurious and the class-discriminative direction (paper
                        Sec. 5.3 in numbers); for synthetic data, energy per block of dimensions
  pca.png               PCA (fitted on H_0 ∪ val) of val, the last epoch's hard set coloured by
                        group, and the support points before -> after the edit
  neighbours.md         for the most-edited support points, the k nearest val examples before and
                        after the edit, with their groups
  contact_sheet.png     the same as images, when ids.txt holds image paths that exist (or the
                        dataset is digit_dominoes, rebuilt from the config meta.json records)
  analysis.json         every number above
  report.md             one page linking the plots and stating the numbers (and clip_probe.md /
                        unclip_grid.png from `feature_export.clip_probe` / `.unclip` if present)

With the default --out, the run's report.html is rebuilt to show these figures too.

When the run split val (`config.val_split.fraction` > 0), "val" here is the part HSFM's hard set
came from, rebuilt with the run's own split, so the history's hard-set indices point into it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from absl import app, flags, logging

from experiments import analysis_plots, analysis_report, cli
from hsfm_jax import apps
from hsfm_jax.data import features as features_lib
from hsfm_jax.reporting import analysis, run_report
from hsfm_jax.runtime import ownership
from hsfm_jax.runtime import workdir as workdir_lib

RUN_FILES = ("config.json", "results.json", "history.json", "support.npz")
# Files other tools write into the analysis directory; a new analysis keeps them.
EXTERNAL_FILES = {"clip_probe": "clip_probe.md", "unclip_grid": "unclip_grid.png"}


def define_flags() -> None:
    """The CLI flags, defined only when run as a script (importing this module defines none,
    so it can share a process with other absl entry points that also have --workdir)."""
    flags.DEFINE_string("workdir", None, "The run directory (experiments.main --workdir).")
    flags.DEFINE_string("out", "", "Output directory; default <workdir>/analysis.")
    flags.DEFINE_integer("seed_index", 0, "Which seed the PCA and neighbour views show.")
    flags.DEFINE_integer("points_per_class", 2, "Support points per class in the NN table.")
    flags.DEFINE_integer("neighbours", 5, "k nearest val examples per support point.")
    flags.DEFINE_enum("metric", "euclidean", ["euclidean", "cosine"], "NN distance.")
    flags.DEFINE_string("features_dir", "", "Override the run's features_dir.")
    flags.DEFINE_string("images_root", "", "Prefix for relative image paths in ids.txt.")
    flags.mark_flags_as_required(["workdir"])


# ----------------------------------------------------------------------------- loading


def load_run(workdir: str | Path, features_dir: str | Path | None = None) -> dict:
    """The run's files and its feature directory (train, val), checked for consistency."""
    workdir = Path(workdir)
    for name in RUN_FILES:
        if not (workdir / name).is_file():
            hint = " (was HSFM among config.methods?)" if name != "config.json" else ""
            raise FileNotFoundError(f"{workdir / name}: missing{hint}")
    config = _read_object(workdir / "config.json")
    results = _read_object(workdir / "results.json")
    history_file = _read_object(workdir / "history.json")
    support, support_indices, support_run = _read_support(workdir / "support.npz")
    run_ids = {
        "config.json": config.get("run_id"),
        "results.json": results.get("run_id"),
        "history.json": history_file.get("run_id") if isinstance(history_file, dict) else None,
        "support.npz": support_run,
    }
    if None in run_ids.values() or len(set(run_ids.values())) != 1:
        raise ValueError(
            f"{workdir}: its files are not of one run (run ids {run_ids}); rerun experiments.main"
        )
    if "hsfm" not in results.get("methods", {}):
        raise ValueError(f"{workdir}: the run has no hsfm row (was HSFM among config.methods?)")
    if "history" not in history_file:
        raise ValueError(f"{workdir / 'history.json'}: no 'history' field")
    history = analysis.history_arrays(history_file["history"])
    path = Path(features_dir or results.get("features_dir") or config.get("features_dir", ""))
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: the run's feature directory does not exist here; pass --features_dir"
        )
    check_features(workdir, results, path, given=features_dir is not None)
    data = features_lib.load(path, splits=("train", "val"))
    if config.get("val_split", {}).get("fraction"):
        # The run's "val" (hard set, history indices) was the first part of the stored val.
        data = features_lib.split_validation(
            data, config["val_split"]["fraction"], config["val_split"]["seed"]
        )
    seeds = support.shape[0]
    if support.shape != (seeds, support_indices.shape[1], data.feature_dim):
        raise ValueError(
            f"{workdir / 'support.npz'}: support {support.shape} does not match "
            f"support_indices {support_indices.shape} and feature_dim {data.feature_dim}"
        )
    n = data.train.num_examples
    if support_indices.size and (support_indices.min() < 0 or support_indices.max() >= n):
        bad = support_indices[(support_indices < 0) | (support_indices >= n)][0]
        raise ValueError(
            f"{workdir / 'support.npz'}: support_indices must be in [0, {n}) (rows of "
            f"{path}/train), got {int(bad)}"
        )
    return dict(
        config=config,
        results=results,
        history=history,
        support=support,
        support_indices=support_indices,
        data=data,
    )


def _read_object(path: Path) -> dict:
    """A run file's JSON object, or a one-line error naming the file."""
    try:
        value = json.loads(path.read_text())
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path}: not valid JSON ({type(e).__name__})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _read_support(path: Path) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(support (S, K, d) float, support_indices (S, K) int, run id) of support.npz, checked."""
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            missing = [k for k in ("support", "support_indices") if k not in npz.files]
            if missing:
                raise ValueError(f"{path}: missing array(s) {missing}")
            support, indices = npz["support"], npz["support_indices"]
            run_id = str(npz["run_id"]) if "run_id" in npz.files else None
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as e:
        if str(e).startswith(f"{path}:"):
            raise
        raise ValueError(f"{path}: not a readable .npz ({type(e).__name__})") from None
    if not np.issubdtype(indices.dtype, np.integer) or indices.ndim != 2:
        raise ValueError(
            f"{path}: support_indices must be a 2-D integer array, got {indices.dtype} "
            f"{indices.shape}"
        )
    if support.ndim != 3 or not np.issubdtype(support.dtype, np.floating):
        raise ValueError(f"{path}: support must be a 3-D float array, got {support.dtype}")
    return support, indices, run_id


def check_features(workdir: Path, results: dict, path: Path, *, given: bool) -> None:
    """The features read now are those the run read (`features.fingerprint` in results.json):
    else an error, or with --features_dir (a copy elsewhere has other file times) a warning."""
    recorded = results.get("features_fingerprint")
    if recorded is None:
        logging.warning("%s: results.json records no features fingerprint; not checked", workdir)
        return
    now = features_lib.fingerprint(path)
    if now == recorded:
        return
    message = (
        f"{path}: the features changed since the run in {workdir} read them (fingerprint "
        f"{recorded} in results.json, {now} now)"
    )
    if given:
        logging.warning("%s; reading them as --features_dir says", message)
        return
    raise ValueError(
        f"{message}: rerun experiments.main, or pass --features_dir to read these anyway"
    )


def check_out(workdir: Path, out: Path, features_dir) -> None:
    """--out apart from the run and its features: not the run directory, not above it, not the
    feature directory (the analysis directory is replaced whole)."""
    ownership.check_apart(out, "--out", inside_ok=True, workdir=workdir)
    ownership.check_apart(out, "--out", features_dir=features_dir)


# ----------------------------------------------------------------------------- numbers


def _mean_std(values) -> dict:
    values = np.asarray(values, np.float64)
    if np.isnan(values).all():  # e.g. no spurious direction without groups
        return {"mean": float("nan"), "std": float("nan")}
    return {"mean": float(np.nanmean(values)), "std": float(np.nanstd(values))}


def geometry(run: dict) -> dict:
    """Edit geometry per seed and class, aggregated over seeds."""
    data = run["data"]
    val = data.val
    num_classes, num_groups = data.num_classes, data.num_groups
    spurious = np.full((num_classes, data.feature_dim), np.nan)
    info = [{"majority_group": None, "other_groups": []} for _ in range(num_classes)]
    if num_groups and val.has_groups:
        spurious, info = analysis.spurious_directions(
            val.features,
            val.labels,
            val.groups,
            num_classes=num_classes,
            num_groups=num_groups,
            majority_weights=data.train_group_counts(),
        )
    discriminative = analysis.class_directions(
        val.features, val.labels, val.groups, num_classes=num_classes, num_groups=num_groups
    )
    blocks = None
    synthetic = data.meta.get("synthetic")
    if isinstance(synthetic, dict) and "spurious_dims" in synthetic:
        blocks = {name: synthetic[f"{name}_dims"] for name in ("core", "spurious", "noise")}
    per_seed, dims = [], []
    for seed in range(run["support"].shape[0]):
        rows = run["support_indices"][seed]
        support0 = np.asarray(data.train.features[rows], np.float64)
        labels = data.train.labels[rows]
        per_seed.append(
            analysis.edit_geometry(
                support0,
                run["support"][seed],
                labels,
                spurious=spurious,
                discriminative=discriminative,
            )
        )
        if blocks:
            dims.append(analysis.energy_by_dims(run["support"][seed] - support0, blocks))
    keys = [k for k in per_seed[0][0] if k not in ("class",)]
    classes = []
    for c in range(num_classes):
        entry = {"class": c, "class_name": data.class_names[c], **info[c]}
        entry.update({k: _mean_std([s[c][k] for s in per_seed]) for k in keys})
        classes.append(entry)
    out = {"classes": classes, "per_seed": per_seed}
    if blocks:
        sizes = {name: len(v) for name, v in blocks.items()}
        out["energy_by_dims"] = {
            name: {**_mean_std([d[name] for d in dims]), "chance": sizes[name] / data.feature_dim}
            for name in blocks
        }
    return out


def neighbour_summary(run: dict, *, k: int, metric: str) -> dict:
    """Over all support points and seeds: group make-up of their k nearest val examples."""
    data = run["data"]
    val = data.val
    if not (data.num_groups and val.has_groups):
        return {}
    classes = analysis.group_classes(val.labels, val.groups, data.num_groups)
    majority = {}
    counts = data.train_group_counts()
    for c in range(data.num_classes):
        members = [g for g in range(data.num_groups) if classes[g] == c]
        if members:
            majority[c] = max(members, key=lambda g: (counts[g], -g))
    out = {"before": {}, "after": {}}
    for when in out:
        same_class, minority = [], []
        for seed in range(run["support"].shape[0]):
            rows = run["support_indices"][seed]
            points = data.train.features[rows] if when == "before" else run["support"][seed]
            labels = data.train.labels[rows]
            idx, _ = analysis.nearest_neighbours(points, val.features, k, metric=metric)
            g = val.groups[idx]
            same = classes[g] == labels[:, None]
            maj = np.asarray([majority.get(int(c), -1) for c in labels])[:, None]
            same_class.append(same.mean())
            minority.append((same & (g != maj)).mean())
        out[when] = {
            "same_class": _mean_std(same_class),
            "minority_same_class": _mean_std(minority),
        }
    return out


# ----------------------------------------------------------------------------- plots


def neighbour_table(run: dict, seed: int, *, per_class: int, k: int, metric: str) -> list[dict]:
    """The k nearest val rows of the most-edited support points, before and after the edit."""
    data = run["data"]
    rows = run["support_indices"][seed]
    support0 = np.asarray(data.train.features[rows], np.float64)
    support = run["support"][seed]
    labels = data.train.labels[rows]
    chosen = analysis.select_support_points(support0, support, labels, per_class=per_class)
    before, d0 = analysis.nearest_neighbours(support0[chosen], data.val.features, k, metric=metric)
    after, d1 = analysis.nearest_neighbours(support[chosen], data.val.features, k, metric=metric)
    table = []
    for j, i in enumerate(chosen):
        table.append(
            {
                "support_row": int(i),
                "train_index": int(rows[i]),
                "label": int(labels[i]),
                "group": int(data.train.groups[rows[i]]),
                "edit_norm": float(np.linalg.norm(support[i] - support0[i])),
                "before": [int(v) for v in before[j]],
                "before_groups": [int(v) for v in data.val.groups[before[j]]],
                "before_dist": [float(v) for v in d0[j]],
                "after": [int(v) for v in after[j]],
                "after_groups": [int(v) for v in data.val.groups[after[j]]],
                "after_dist": [float(v) for v in d1[j]],
            }
        )
    return table


def contact_sheet(run: dict, table: list[dict], images_root, path: Path) -> bool:
    """The support / neighbours contact sheet, drawn by `python -m feature_export.images` in a
    subprocess (image loading is export-side code). False when no images could be found."""
    if not table:
        return False
    val_split = run["config"].get("val_split", {})
    with tempfile.TemporaryDirectory() as tmp:
        table_path = Path(tmp) / "neighbours.json"
        table_path.write_text(json.dumps(_plain(table)))
        command = [
            sys.executable,
            "-m",
            "feature_export.images",
            f"--features_dir={run['data'].path}",
            f"--val_fraction={val_split.get('fraction', 0.0)}",
            f"--val_seed={val_split.get('seed', 0)}",
            f"--table={table_path}",
            f"--out={path}",
            f"--images_root={images_root or ''}",
        ]
        proc = subprocess.run(command, capture_output=True, text=True, env=apps.subprocess_env())
    if proc.returncode == 1:
        raise ValueError(f"contact sheet: {proc.stderr.strip().splitlines()[-1]}")
    return proc.returncode == 0


# ----------------------------------------------------------------------------- report


def analyze(
    workdir: str | Path,
    out: str | Path | None = None,
    *,
    seed_index: int = 0,
    points_per_class: int = 2,
    neighbours: int = 5,
    metric: str = "euclidean",
    features_dir: str | Path | None = None,
    images_root: str | Path | None = None,
) -> dict:
    """Writes every analysis file for the run in `workdir`; returns the summary (analysis.json)."""
    workdir = Path(workdir)
    out = Path(out) if out else workdir / workdir_lib.ANALYSIS_DIR
    run = load_run(workdir, features_dir)
    check_out(workdir, out, run["data"].path)
    seeds = run["support"].shape[0]
    if not 0 <= seed_index < seeds:
        raise ValueError(f"seed_index must be in [0, {seeds}), got {seed_index}")
    if not 1 <= neighbours <= run["data"].val.num_examples:
        raise ValueError(
            f"neighbours must be in [1, {run['data'].val.num_examples}], got {neighbours}"
        )
    with workdir_lib.staged(
        out, run["config"]["run_id"], kind=workdir_lib.ANALYSIS_KIND, what="--out"
    ) as (stage, _):
        for name in EXTERNAL_FILES:  # written earlier by feature_export.clip_probe / .unclip
            if (out / name).is_file():
                shutil.copy2(out / name, stage / name)
        summary = _write_analysis(
            run, workdir, stage, seed_index, points_per_class, neighbours, metric, images_root
        )
    if out.resolve() == (workdir / "analysis").resolve() and (workdir / "report.html").is_file():
        run_report.write_html(workdir)  # the run's page, now with these figures
    return summary


def _write_analysis(
    run, workdir, out, seed_index, points_per_class, neighbours, metric, images_root
) -> dict:
    files = {
        "curves": "curves.png",
        "geometry": "edit_geometry.png",
        "pca": "pca.png",
        "neighbours": "neighbours.md",
    }
    analysis_plots.plot_curves(run, out / files["curves"])
    geo = geometry(run)
    analysis_plots.plot_geometry(geo, out / files["geometry"])
    pca = analysis_plots.plot_pca(run, seed_index, out / files["pca"])
    table = neighbour_table(
        run, seed_index, per_class=points_per_class, k=neighbours, metric=metric
    )
    (out / files["neighbours"]).write_text(
        analysis_report.neighbour_markdown(run["data"], table, seed_index, metric)
    )
    if contact_sheet(run, table, images_root, out / "contact_sheet.png"):
        files["contact_sheet"] = "contact_sheet.png"
    for key, name in EXTERNAL_FILES.items():
        if (out / name).is_file():
            files[key] = name
    nn = neighbour_summary(run, k=neighbours, metric=metric)
    summary = {
        "workdir": str(workdir),
        "features_dir": str(run["data"].path),
        "geometry": {
            "classes": geo["classes"],
            **({"energy_by_dims": geo["energy_by_dims"]} if "energy_by_dims" in geo else {}),
        },
        "neighbour_summary": nn,
        "neighbours": table,
        "pca": pca,
        "files": files,
    }
    summary["findings"] = analysis_report.findings(geo, nn)
    (out / "analysis.json").write_text(json.dumps(_plain(summary), indent=2, allow_nan=False))
    (out / "report.md").write_text(analysis_report.render_report(run, summary, files))
    return summary


def _plain(value):
    """JSON-safe copy: numpy scalars to Python, NaN to None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    summary = cli.guarded(
        lambda: analyze(
            FLAGS.workdir,
            FLAGS.out or None,
            seed_index=FLAGS.seed_index,
            points_per_class=FLAGS.points_per_class,
            neighbours=FLAGS.neighbours,
            metric=FLAGS.metric,
            features_dir=FLAGS.features_dir or None,
            images_root=FLAGS.images_root or None,
        )
    )
    out = Path(FLAGS.out or Path(FLAGS.workdir) / "analysis")
    print(
        f"Wrote {', '.join(sorted(summary['files'].values()))}, analysis.json, report.md to {out}"
    )
    for line in summary["findings"]:
        print(f"- {line}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
