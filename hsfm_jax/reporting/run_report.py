"""What a run writes after its results, for people: curves, the comparison figure, one HTML page.

`write(workdir, report, ...)` is called once results.json and results.md are in `workdir`:

  tensorboard/        the methods' training curves as TensorBoard event files, one run per
                      method and seed (`hsfm_jax.reporting.metric_writers`; off with
                      ``config.tensorboard = False``)
  results.png / .svg  the comparison figure (`hsfm_jax.reporting.figures.results_figure`)
  report.html         one self-contained page (figures inline, no script, nothing fetched): the
                      results tables, the comparison figure, HSFM's curves and, once
                      `experiments.analyze` has written <workdir>/analysis, its figures

`write_html(workdir)` rebuilds report.html from the files in `workdir` (analyze calls it);
`write_page` writes any such page (a sweep's report.html: `hsfm_jax.sweep.report`).
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import numpy as np

from hsfm_jax.reporting import figures, metric_writers
from hsfm_jax.runtime import atomic

# experiments.analyze's figures, in the order the page shows them, with their captions (not
# its curves.png: the page draws the same curves from history.json).
ANALYSIS_FIGURES = (
    ("edit_geometry.png", "Edit geometry: cosines and energy fractions"),
    ("pca.png", "PCA of val, the hard set and the support edit"),
    ("contact_sheet.png", "Nearest val images of edited support points"),
)


def write(workdir: str | Path, report: dict, *, config, curves: dict) -> None:
    """The event files (unless ``config.tensorboard`` is False), results.png/svg and
    report.html in `workdir`.

    Args:
      report: results.json's content.
      config: the run's config; curves: {method: its `MethodResult.curves`}.
    """
    workdir = Path(workdir)
    if config.get("tensorboard", True):
        metric_writers.write_run(workdir, curves)
    figures.save(figures.results_figure(report), workdir / "results")
    write_html(workdir)


def markdown_html(text: str) -> str:
    """results.md (headings, pipe tables, paragraphs) as HTML."""
    out, table = [], []

    def flush():
        if not table:
            return
        cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table]
        head, body = cells[0], [r for r in cells[2:]]
        out.append("<table><thead><tr>")
        out.extend(f"<th>{html.escape(c)}</th>" for c in head)
        out.append("</tr></thead><tbody>")
        for r in body:
            out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
        out.append("</tbody></table>")
        table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)


def _svg_inline(path: Path) -> str:
    """The <svg> element of an SVG file, without its XML prologue and RDF metadata."""
    text = path.read_text()
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    return text[text.index("<svg") :]


def png_inline(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _history(workdir: Path) -> dict | None:
    path = workdir / "history.json"
    if not path.is_file():
        return None
    history = json.loads(path.read_text())["history"]
    to_array = lambda v: np.asarray(
        [np.nan if x is None else x for x in np.ravel(np.asarray(v, object))], np.float64
    ).reshape(np.shape(v))
    return {k: to_array(v) for k, v in history.items() if k != "hard_set_indices"}


_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1em 0 2em; }
figure svg, figure img { max-width: 100%; height: auto; }
figcaption { font-weight: bold; margin-bottom: 0.4em; }
.meta { color: #555; }
"""


def write_html(workdir: str | Path) -> Path:
    """report.html of the run in `workdir` from its files; returns its path."""
    workdir = Path(workdir)
    report = json.loads((workdir / "results.json").read_text())
    title = f"{report.get('dataset', '?')} / {report.get('backbone', '?')}"
    meta = (
        f"run {report.get('run_id', '')}, {report.get('num_seeds', '?')} seed(s), group labels: "
        f"{report.get('group_labels', '?')}, features {report.get('features_dir', '')}"
    )
    parts = []
    if (workdir / "results.svg").is_file():
        parts.append("<figure><figcaption>Comparison of the methods (results.svg)</figcaption>")
        parts.append(_svg_inline(workdir / "results.svg") + "</figure>")
    if (workdir / "results.md").is_file():
        parts.append(markdown_html((workdir / "results.md").read_text()))
    history = _history(workdir)
    if history is not None:
        best = report["methods"].get("hsfm", {}).get("best_epoch", ())
        fig = figures.curves_figure(history, report.get("group_names") or (), best_epochs=best)
        parts.append("<figure><figcaption>HSFM per epoch (history.json)</figcaption>")
        parts.append(png_inline(figures.png_bytes(fig), "HSFM curves") + "</figure>")
    analysis = workdir / "analysis"
    for name, caption in ANALYSIS_FIGURES:
        if (analysis / name).is_file():
            parts.append(f"<figure><figcaption>{html.escape(caption)} (analysis/{name})")
            parts.append("</figcaption>")
            parts.append(png_inline((analysis / name).read_bytes(), caption) + "</figure>")
    if (workdir / metric_writers.DIRECTORY).is_dir():
        parts.append(
            "<p>Training curves, one run per method and seed: <code>tensorboard --logdir "
            f"{metric_writers.DIRECTORY}</code> in this page's directory.</p>"
        )
    return write_page(workdir / "report.html", f"{title}: results", title, meta, parts)


def write_page(path: Path, title: str, heading: str, meta: str, parts: list[str]) -> Path:
    """A self-contained page at `path` (atomic): `heading` (h1), the line `meta`, then the HTML
    `parts`; raises ValueError when anything in it would load from outside the page."""
    text = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{_STYLE}</style></head><body>",
            f"<h1>{html.escape(heading)}</h1>",
            f'<p class="meta">{html.escape(meta)}</p>',
            *parts,
            "</body></html>",
        ]
    )
    if re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", text):
        raise ValueError(f"{path.name} would load something from outside the page")
    with atomic.atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
