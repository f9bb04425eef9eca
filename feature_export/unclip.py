r"""Decode original and HSFM-edited CLIP image embeddings with Stable unCLIP (paper Fig. 2).

  python -m feature_export.unclip --run=runs/wb_clip --model_dir=/models/sd21-unclip-h \
      [--seed_index=0] [--points_per_class=2 | --support_rows=3,17] [--edit_scale=1.0] \
      [--target_norm=0] [--steps=20] [--guidance_scale=10] [--noise_level=0] [--batch_size=4] \
      [--seed=0] [--device=cuda] [--images_root=DIR] [--out=DIR]

For a run on CLIP image features exported by `feature_export.backbones.clip` (the raw
`encode_image` embeddings, which is what SD unCLIP conditions on), it picks support points (the
most-edited ones per class, or --support_rows), decodes H_0 and H_final of each with diffusers'
`StableUnCLIPImg2ImgPipeline(image_embeds=...)`, and writes `unclip_grid.png`: one row per point,
columns original image (when `feature_export.images.load_images` finds it) | unCLIP(H_0) | unCLIP(H_final).
The two decodes of a point share their diffusion noise (same generator seed), so the difference
between them comes from the edit alone.

- ``--edit_scale`` s decodes H_0 + s (H_final - H_0) instead of H_final (s > 1 exaggerates);
- ``--target_norm`` r > 0 rescales each pair by r / ||H_0|| (one factor for both, so the edit keeps
  its size relative to H_0), for features that were L2-normalised at export.

Weights are local only (`--model_dir`, a diffusers folder such as
stabilityai/stable-diffusion-2-1-unclip for OpenCLIP ViT-H/14 features). Without them the command
prints one line saying what to place where and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from hsfm_jax.reporting import analysis

PIPELINE_FILES = ("model_index.json",)
_WEIGHTS_HINT = (
    "place a diffusers StableUnCLIPImg2ImgPipeline folder there (model_index.json, unet/, vae/, "
    "text_encoder/, tokenizer/, scheduler/, image_normalizer/, image_noising_scheduler/, "
    "image_encoder/, feature_extractor/), e.g. a local copy of "
    "stabilityai/stable-diffusion-2-1-unclip for OpenCLIP ViT-H-14 features (1024-d)"
)


# ----------------------------------------------------------------------------- selection


def select_points(
    run: dict, *, seed_index: int, points_per_class: int, support_rows: Sequence[int] = ()
) -> list[dict]:
    """Support points to decode: `support_rows` if given, else the most-edited per class.

    Returns one dict per point: support_row, train_index, label, group, original (d,) H_0,
    edited (d,) H_final.
    """
    data = run["data"]
    seeds, size = run["support_indices"].shape
    if not 0 <= seed_index < seeds:
        raise ValueError(f"seed_index must be in [0, {seeds}), got {seed_index}")
    indices = run["support_indices"][seed_index]
    support0 = np.asarray(data.train.features[indices], np.float64)
    support = np.asarray(run["support"][seed_index], np.float64)
    labels = data.train.labels[indices]
    if support_rows:
        bad = [r for r in support_rows if not 0 <= r < size]
        if bad:
            raise ValueError(f"support_rows {bad} out of range [0, {size})")
        rows = np.asarray(support_rows, np.int64)
    else:
        rows = analysis.select_support_points(support0, support, labels, per_class=points_per_class)
    return [
        {
            "support_row": int(r),
            "train_index": int(indices[r]),
            "label": int(labels[r]),
            "group": int(data.train.groups[indices[r]]),
            "original": support0[r],
            "edited": support[r],
        }
        for r in rows
    ]


def scale_embeddings(
    original: np.ndarray, edited: np.ndarray, *, edit_scale: float = 1.0, target_norm: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(M, d) H_0 and H_final -> the (M, d) float32 pairs to decode (see module docstring)."""
    original = np.asarray(original, np.float64)
    edited = original + edit_scale * (np.asarray(edited, np.float64) - original)
    if target_norm > 0:
        factor = target_norm / np.maximum(np.linalg.norm(original, axis=1, keepdims=True), 1e-12)
        original, edited = original * factor, edited * factor
    return original.astype(np.float32), edited.astype(np.float32)


# ----------------------------------------------------------------------------- decoding


def decode_pairs(
    pipe,
    original: np.ndarray,
    edited: np.ndarray,
    *,
    batch_size: int,
    seed: int = 0,
    **pipe_kwargs,
) -> tuple[list[Image.Image], list[Image.Image]]:
    """Decodes every (H_0, H_final) pair, `batch_size` embeddings per pipeline call.

    The embeddings go in pair order [o_0, e_0, o_1, e_1, ...]; both members of pair i get a
    generator seeded with ``seed + i``, so they start from the same noise.

    Args:
      pipe: a `StableUnCLIPImg2ImgPipeline` (or anything with its call signature).
      original, edited: (M, d) float32.
      batch_size: embeddings per call (>= 1).
      seed: base seed.
      pipe_kwargs: num_inference_steps, guidance_scale, noise_level, ...

    Returns:
      (M decoded originals, M decoded edits) as PIL images.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if original.shape != edited.shape:
        raise ValueError(f"original {original.shape} and edited {edited.shape} differ")
    embeds = np.stack([original, edited], axis=1).reshape(-1, original.shape[1])
    seeds = np.repeat(seed + np.arange(original.shape[0]), 2)
    device = getattr(pipe, "device", "cpu")
    dtype = getattr(pipe, "dtype", torch.float32)
    images: list[Image.Image] = []
    for start in range(0, len(embeds), batch_size):
        chunk = torch.as_tensor(embeds[start : start + batch_size]).to(device=device, dtype=dtype)
        generators = [
            torch.Generator().manual_seed(int(s)) for s in seeds[start : start + batch_size]
        ]
        out = pipe(
            prompt=[""] * len(chunk), image_embeds=chunk, generator=generators, **pipe_kwargs
        )
        if len(out.images) != len(chunk):
            raise ValueError(
                f"pipeline returned {len(out.images)} images for {len(chunk)} embeddings"
            )
        images.extend(out.images)
    return images[0::2], images[1::2]


def grid(rows: Sequence[dict], *, cell: int = 192) -> Image.Image:
    """Rows of {"source": PIL or None, "decoded": PIL, "edited": PIL, "caption": str} -> one image."""
    from feature_export.images import image_grid

    cells = [
        [(row.get("source"), row["caption"]), (row["decoded"], ""), (row["edited"], "")]
        for row in rows
    ]
    return image_grid(cells, cell=cell, header=["original", "unCLIP(H0)", "unCLIP(H final)"])


# ----------------------------------------------------------------------------- pipeline


class MissingWeights(FileNotFoundError):
    pass


def check_model_dir(model_dir: str | Path) -> Path:
    """Raises MissingWeights (one line: what to place where) unless model_dir looks complete."""
    model_dir = Path(model_dir)
    missing = [f for f in PIPELINE_FILES if not (model_dir / f).is_file()]
    if not model_dir.is_dir() or missing:
        raise MissingWeights(f"no Stable unCLIP weights in {model_dir}: {_WEIGHTS_HINT}")
    return model_dir


def load_pipeline(model_dir: str | Path, *, device: str = "cuda", float16: bool = True):
    """StableUnCLIPImg2ImgPipeline from a local folder only (no download)."""
    model_dir = check_model_dir(model_dir)
    try:
        import torch
        from diffusers import StableUnCLIPImg2ImgPipeline
    except ImportError as e:
        raise MissingWeights(
            f"diffusers is not installed ({e}): pip install diffusers transformers"
        ) from None
    dtype = torch.float16 if float16 and device != "cpu" else torch.float32
    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(
        model_dir, torch_dtype=dtype, local_files_only=True
    )
    return pipe.to(device)


def embedding_dim(pipe) -> int | None:
    """The image-embedding size the pipeline expects (None when it cannot tell)."""
    mean = getattr(getattr(pipe, "image_normalizer", None), "mean", None)
    return int(mean.shape[-1]) if mean is not None else None


def render(
    run: dict,
    pipe,
    out: Path,
    *,
    seed_index: int = 0,
    points_per_class: int = 2,
    support_rows: Sequence[int] = (),
    edit_scale: float = 1.0,
    target_norm: float = 0.0,
    batch_size: int = 4,
    seed: int = 0,
    images_root: str | Path | None = None,
    **pipe_kwargs,
) -> dict:
    """Selects, scales, decodes and writes unclip_grid.png + unclip.json to `out`."""
    from feature_export.images import load_images

    data = run["data"]
    expected = embedding_dim(pipe)
    if expected is not None and expected != data.feature_dim:
        raise ValueError(
            f"the unCLIP pipeline takes {expected}-d image embeddings, the run's features are "
            f"{data.feature_dim}-d: use the unCLIP model of the CLIP encoder the features came from"
        )
    points = select_points(
        run, seed_index=seed_index, points_per_class=points_per_class, support_rows=support_rows
    )
    original, edited = scale_embeddings(
        np.stack([p["original"] for p in points]),
        np.stack([p["edited"] for p in points]),
        edit_scale=edit_scale,
        target_norm=target_norm,
    )
    decoded, decoded_edit = decode_pairs(
        pipe, original, edited, batch_size=batch_size, seed=seed, **pipe_kwargs
    )
    root = Path(images_root) if images_root else None
    rows = []
    for p, dec, edit in zip(points, decoded, decoded_edit, strict=True):
        source = (load_images(data, "train", [p["train_index"]], root) or [None])[0]
        group = data.group_names[p["group"]] if 0 <= p["group"] < data.num_groups else "?"
        caption = f"train {p['train_index']}: {data.class_names[p['label']]}, {group}"
        rows.append({"source": source, "decoded": dec, "edited": edit, "caption": caption})
    out.mkdir(parents=True, exist_ok=True)
    grid(rows).save(out / "unclip_grid.png")
    record = {
        "seed_index": seed_index,
        "edit_scale": edit_scale,
        "target_norm": target_norm,
        "seed": seed,
        "pipeline": {k: v for k, v in pipe_kwargs.items()},
        "points": [
            {k: v for k, v in p.items() if k not in ("original", "edited")}
            | {
                "edit_norm": float(np.linalg.norm(p["edited"] - p["original"])),
                "original_norm": float(np.linalg.norm(p["original"])),
            }
            for p in points
        ],
    }
    (out / "unclip.json").write_text(json.dumps(record, indent=2))
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run workdir (experiments.main --workdir)")
    parser.add_argument("--model_dir", required=True, help="local diffusers SD unCLIP folder")
    parser.add_argument("--seed_index", type=int, default=0)
    parser.add_argument("--points_per_class", type=int, default=2)
    parser.add_argument("--support_rows", default="", help="comma-separated support rows")
    parser.add_argument("--edit_scale", type=float, default=1.0)
    parser.add_argument("--target_norm", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance_scale", type=float, default=10.0)
    parser.add_argument("--noise_level", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--float32", action="store_true", help="no float16 on GPU")
    parser.add_argument("--features_dir", default="")
    parser.add_argument("--images_root", default="")
    parser.add_argument("--out", default="", help="default <run>/analysis")
    args = parser.parse_args(argv)
    from experiments.analyze import load_run

    try:
        rows = [int(r) for r in args.support_rows.split(",") if r.strip()]
        check_model_dir(args.model_dir)
        run = load_run(args.run, args.features_dir or None)
        pipe = load_pipeline(args.model_dir, device=args.device, float16=not args.float32)
        out = Path(args.out or Path(args.run) / "analysis")
        render(
            run,
            pipe,
            out,
            seed_index=args.seed_index,
            points_per_class=args.points_per_class,
            support_rows=rows,
            edit_scale=args.edit_scale,
            target_norm=args.target_norm,
            batch_size=args.batch_size,
            seed=args.seed,
            images_root=args.images_root or None,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            noise_level=args.noise_level,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out / 'unclip_grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
