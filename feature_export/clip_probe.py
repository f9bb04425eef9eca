r"""CLIP text probing of HSFM's support edits (paper Sec. 5.3, in words instead of images).

  python -m feature_export.clip_probe --run=runs/wb_clip --weights=/models/open_clip_vit_h14.bin \
      [--model_name=ViT-H-14] [--prompt "a photo of a bird on water|a photo of a bird on land" ...] \
      [--out=DIR] [--device=cpu]

For a run on CLIP image features (`feature_export.backbones.clip`, the embeddings `encode_image`
returns, which live in CLIP's joint image-text space), each prompt pair ``(a, b)`` gives a text
direction ``unit(t_a) - unit(t_b)``. The probe reports, per class and prompt pair, the cosine of
that direction with

- the class's mean support edit ``mean_i (H_final - H_0)`` (per seed, then mean ± std), and
- the class's within-class spurious direction on val (`hsfm_jax.reporting.analysis.spurious_directions`),
  as a check that the prompt names the attribute the dataset's groups differ in.

Prompts default to `DEFAULT_PROMPTS[meta["dataset"]]`; `--prompt` (repeatable, "a|b") replaces
them. The text tower is built by open_clip from a local checkpoint only (the same file the
features were exported with); nothing is downloaded. Writes clip_probe.json and clip_probe.md to
--out (default <run>/analysis).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from hsfm_jax.reporting import analysis

TextEncoder = Callable[[Sequence[str]], np.ndarray]  # prompts (P,) -> embeddings (P, d)

# (a, b) pairs: the direction points from b to a. Keyed by meta.json "dataset".
DEFAULT_PROMPTS: dict[str, list[tuple[str, str]]] = {
    "waterbirds": [
        ("a photo of a bird on water", "a photo of a bird on land"),
        ("a photo of a bird in front of a lake or an ocean", "a photo of a bird in a forest"),
        ("a photo of a waterbird", "a photo of a landbird"),
    ],
    "celeba": [
        ("a photo of a woman", "a photo of a man"),
        ("a photo of a person with blond hair", "a photo of a person with dark hair"),
    ],
    "metashift": [
        ("a photo of an animal indoors", "a photo of an animal outdoors"),
        ("a photo of a cat", "a photo of a dog"),
    ],
    "dominoes": [
        ("an image with the digit one", "an image with the digit zero"),
        ("a photo of a truck", "a photo of a car"),
    ],
}


def parse_prompt_pair(text: str) -> tuple[str, str]:
    """'a photo of X|a photo of Y' -> ('a photo of X', 'a photo of Y')."""
    parts = [p.strip() for p in text.split("|")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--prompt must be 'prompt a|prompt b', got {text!r}")
    return parts[0], parts[1]


def prompts_for(dataset: str, overrides: Sequence[str] = ()) -> list[tuple[str, str]]:
    """The prompt pairs to probe: `overrides` ("a|b" strings) if any, else the dataset default."""
    if overrides:
        return [parse_prompt_pair(p) for p in overrides]
    if dataset not in DEFAULT_PROMPTS:
        raise ValueError(
            f"no default prompts for dataset {dataset!r} (have {sorted(DEFAULT_PROMPTS)}); "
            "pass --prompt 'a photo of X|a photo of Y'"
        )
    return list(DEFAULT_PROMPTS[dataset])


def prompt_directions(encode_text: TextEncoder, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """(P, d) text directions unit(t_a) - unit(t_b), one per prompt pair (one encoder call)."""
    texts = [a for a, _ in pairs] + [b for _, b in pairs]
    emb = np.asarray(encode_text(texts), np.float64)
    if emb.shape[0] != len(texts) or emb.ndim != 2:
        raise ValueError(f"text encoder returned shape {emb.shape} for {len(texts)} prompts")
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return emb[: len(pairs)] - emb[len(pairs) :]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., d) x (P, d) -> (..., P) cosine similarities (NaN where a row of `a` is NaN)."""
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return unit(np.asarray(a, np.float64)) @ unit(np.asarray(b, np.float64)).T


def probe(run: dict, encode_text: TextEncoder, pairs: Sequence[tuple[str, str]]) -> dict:
    """Cosines of edit and spurious directions with the prompt directions (see module doc).

    Args:
      run: `experiments.analyze.load_run` output.
      encode_text: prompts -> (P, d) text embeddings in the features' space.
      pairs: prompt pairs (a, b).
    """
    data = run["data"]
    directions = prompt_directions(encode_text, pairs)
    if directions.shape[1] != data.feature_dim:
        raise ValueError(
            f"text embeddings have d={directions.shape[1]}, the run's features d="
            f"{data.feature_dim}: use the CLIP model the features were exported with"
        )
    edits = []
    for seed in range(run["support"].shape[0]):
        rows = run["support_indices"][seed]
        edits.append(
            analysis.class_mean_edits(
                data.train.features[rows],
                run["support"][seed],
                data.train.labels[rows],
                data.num_classes,
            )
        )
    edit_cos = cosines(np.stack(edits), directions)  # (S, C, P)
    spurious = np.full((data.num_classes, data.feature_dim), np.nan)
    if data.num_groups and data.val.has_groups:
        spurious, _ = analysis.spurious_directions(
            data.val.features,
            data.val.labels,
            data.val.groups,
            num_classes=data.num_classes,
            num_groups=data.num_groups,
            majority_weights=data.train_group_counts(),
        )
    spurious_cos = cosines(spurious, directions)  # (C, P)
    rows = []
    for c in range(data.num_classes):
        for p, (a, b) in enumerate(pairs):
            rows.append(
                {
                    "class": data.class_names[c],
                    "prompt_a": a,
                    "prompt_b": b,
                    "cos_edit": {
                        "mean": float(edit_cos[:, c, p].mean()),
                        "std": float(edit_cos[:, c, p].std()),
                        "per_seed": [float(v) for v in edit_cos[:, c, p]],
                    },
                    "cos_spurious_direction": float(spurious_cos[c, p]),
                }
            )
    return {"dataset": data.meta["dataset"], "backbone": data.meta["backbone"], "rows": rows}


def markdown(result: dict) -> str:
    lines = [
        f"# CLIP text probe: {result['dataset']} / {result['backbone']}\n",
        "| class | direction (b → a) | cos(mean edit, text) | cos(val spurious dir., text) |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        e = r["cos_edit"]
        lines.append(
            f'| {r["class"]} | "{r["prompt_b"]}" → "{r["prompt_a"]}" | '
            f"{e['mean']:+.3f} ± {e['std']:.3f} | {r['cos_spurious_direction']:+.3f} |"
        )
    lines.append(
        "\nText direction: unit(t_a) − unit(t_b). Edit: mean over a class's support points of "
        "H_final − H_0, per seed (mean ± std over seeds). Spurious direction: val mean of the "
        "class's minority group(s) minus its majority group. In high dimensions unrelated "
        "directions have cosines near 0, so compare rows with each other."
    )
    return "\n".join(lines) + "\n"


def open_clip_text_encoder(
    model_name: str, weights: str | Path, *, device: str = "cpu", batch_size: int = 64
) -> TextEncoder:
    """open_clip's `encode_text` of `model_name` with weights from a local checkpoint."""
    if not Path(weights).is_file():  # before the slow imports and the model build
        raise FileNotFoundError(f"{weights}: weights file missing")
    import open_clip
    import torch

    from feature_export.backbones.torchvision_models import load_checked, read_state_dict

    if model_name not in open_clip.list_models():
        raise ValueError(f"open_clip knows no model {model_name!r}")
    state, _ = read_state_dict(weights)
    model, _, _ = open_clip.create_model_and_transforms(
        model_name, pretrained=None, load_weights=False
    )
    load_checked(model, state, weights, ignore_prefixes=("visual.",))
    model = model.to(device).eval()
    tokenizer = open_clip.get_tokenizer(model_name)

    @torch.no_grad()
    def encode(texts: Sequence[str]) -> np.ndarray:
        out = [
            model.encode_text(tokenizer(list(texts[i : i + batch_size])).to(device)).float().cpu()
            for i in range(0, len(texts), batch_size)
        ]
        return torch.cat(out).numpy()

    return encode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run workdir (experiments.main --workdir)")
    parser.add_argument("--weights", required=True, help="local open_clip checkpoint")
    parser.add_argument("--model_name", default="ViT-H-14")
    parser.add_argument("--prompt", action="append", default=[], help="'prompt a|prompt b'")
    parser.add_argument("--features_dir", default="", help="override the run's features_dir")
    parser.add_argument("--out", default="", help="default <run>/analysis")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from experiments.analyze import load_run

    try:
        run = load_run(args.run, args.features_dir or None)
        pairs = prompts_for(run["data"].meta["dataset"], args.prompt)
        encoder = open_clip_text_encoder(args.model_name, args.weights, device=args.device)
        result = probe(run, encoder, pairs)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = Path(args.out or Path(args.run) / "analysis")
    out.mkdir(parents=True, exist_ok=True)
    (out / "clip_probe.json").write_text(json.dumps(result, indent=2))
    (out / "clip_probe.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
