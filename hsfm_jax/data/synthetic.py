"""A synthetic spurious-correlation problem written in the feature format.

Each example has a class ``y`` and a spurious attribute ``s`` (both in [0, C)); ``group = y * C + s``.
Features are three blocks:

- core dimensions: ``core_scale * mu_core[y] + N(0, core_noise^2)``: predict y, with noise;
- spurious dimensions: ``spurious_scale * mu_spur[s] + N(0, spurious_noise^2)``: predict s cleanly;
- noise dimensions: ``N(0, 1)``.

In train, ``s == y`` for a fraction ``train_agreement`` of examples (e.g. 95%), so an ERM head
leans on the cleaner spurious block; in val and test the groups are balanced (s == y 1/C of the
time), so that shortcut fails on minority groups. The meta.json records which dimensions are
which (``synthetic.core_dims`` etc.), so tests can check what a method found.

``with_groups=False`` writes the same features without group labels (groups -1, num_groups 0),
as the fine-grained datasets have (paper Sec. 5.2): a method then sees only the classes.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from hsfm_jax.data import features as features_lib


class Problem(NamedTuple):
    """What `generate` draws (the module docstring says what each block is)."""

    seed: int = 0
    num_classes: int = 2
    num_core: int = 8
    num_spurious: int = 8
    num_noise: int = 16
    num_train: int = 4000
    val_per_group: int = 100
    test_per_group: int = 500
    train_agreement: float = 0.95
    core_scale: float = 1.0
    core_noise: float = 0.6
    spurious_scale: float = 1.0
    spurious_noise: float = 0.2
    with_groups: bool = True


def _class_means(rng: np.random.Generator, num_classes: int, dims: int) -> np.ndarray:
    """(C, dims) unit-norm class directions, centred so they sum to zero."""
    means = rng.normal(size=(num_classes, dims))
    means -= means.mean(axis=0, keepdims=True)
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def _sample_split(
    rng: np.random.Generator,
    labels: np.ndarray,
    spurious: np.ndarray,
    mu_core: np.ndarray,
    mu_spur: np.ndarray,
    problem: Problem,
) -> np.ndarray:
    n, p = labels.shape[0], problem
    core = p.core_scale * mu_core[labels] + p.core_noise * rng.normal(size=(n, mu_core.shape[1]))
    spur = p.spurious_scale * mu_spur[spurious] + p.spurious_noise * rng.normal(
        size=(n, mu_spur.shape[1])
    )
    noise = rng.normal(size=(n, p.num_noise))
    return np.concatenate([core, spur, noise], axis=1).astype(np.float32)


def _train_attributes(rng, n, num_classes, agreement):
    labels = rng.integers(0, num_classes, size=n)
    agree = rng.random(n) < agreement
    other = (labels + rng.integers(1, num_classes, size=n)) % num_classes
    return labels, np.where(agree, labels, other)


def _balanced_attributes(rng, per_group, num_classes):
    labels = np.repeat(np.arange(num_classes), num_classes * per_group)
    spurious = np.tile(np.repeat(np.arange(num_classes), per_group), num_classes)
    order = rng.permutation(labels.shape[0])
    return labels[order], spurious[order]


def generate(
    problem: Problem | None = None, **fields
) -> tuple[dict[str, features_lib.Split], dict]:
    """Generates train/val/test splits of `problem` (default `Problem()`), with `fields` (any
    `Problem` field, by name) replaced.

    Returns:
      (splits, info): `splits` maps split name to `Split`; `info` has class/group names and the
      dimension indices of each block (``core_dims``, ``spurious_dims``, ``noise_dims``).
    """
    unknown = sorted(set(fields) - set(Problem._fields))
    if unknown:
        raise ValueError(
            f"synthetic: unknown argument(s) {unknown}; known: {list(Problem._fields)}"
        )
    p = (problem or Problem())._replace(**fields)
    if not 0.0 <= p.train_agreement <= 1.0:
        raise ValueError(f"train_agreement must be in [0, 1], got {p.train_agreement}")
    if p.num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {p.num_classes}")
    C = p.num_classes
    rng = np.random.default_rng(p.seed)
    mu_core = _class_means(rng, C, p.num_core)
    mu_spur = _class_means(rng, C, p.num_spurious)
    attributes = {
        "train": _train_attributes(rng, p.num_train, C, p.train_agreement),
        "val": _balanced_attributes(rng, p.val_per_group, C),
        "test": _balanced_attributes(rng, p.test_per_group, C),
    }
    splits = {}
    for name, (labels, spurious) in attributes.items():
        feats = _sample_split(rng, labels, spurious, mu_core, mu_spur, p)
        groups = labels * C + spurious if p.with_groups else np.full_like(labels, -1)
        splits[name] = features_lib.Split(feats, labels.astype(np.int32), groups.astype(np.int32))
    core, spur = p.num_core, p.num_spurious
    info = {
        "class_names": [f"class_{c}" for c in range(C)],
        "group_names": (
            [f"y={y},s={s}" for y in range(C) for s in range(C)] if p.with_groups else []
        ),
        "core_dims": list(range(core)),
        "spurious_dims": list(range(core, core + spur)),
        "noise_dims": list(range(core + spur, core + spur + p.num_noise)),
        "train_agreement": p.train_agreement,
        "seed": p.seed,
    }
    return splits, info


def arrays(**kwargs) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    """(train, val, test) of a `generate` problem (kwargs as `generate`), each (features (N, d)
    float32, labels (N,) int32, groups (N,) int32): the form `FeatureSet.from_arrays` takes."""
    splits, _ = generate(**kwargs)
    return tuple((s.features, s.labels, s.groups) for s in (splits[n] for n in features_lib.SPLITS))


def feature_set(**kwargs) -> features_lib.FeatureSet:
    """A `generate` problem (kwargs as `generate`) as an in-memory feature set."""
    splits, info = generate(**kwargs)
    meta = features_lib.make_meta(
        dataset="synthetic",
        backbone="none",
        class_names=info["class_names"],
        group_names=info["group_names"],
        feature_dim=splits["train"].features.shape[1],
        split_sizes={k: v.num_examples for k, v in splits.items()},
        preprocessing="synthetic gaussian blocks (hsfm_jax.synthetic)",
    )
    return features_lib.FeatureSet(path=None, meta=meta, splits=splits)


def default_arguments() -> dict:
    """The fields of `Problem` with their defaults (for configs)."""
    return Problem()._asdict()


def write(path: str | os.PathLike, **kwargs) -> dict:
    """Generates a problem (kwargs as `generate`) and writes it as a feature directory."""
    splits, info = generate(**kwargs)
    return features_lib.save(
        path,
        splits=splits,
        dataset="synthetic",
        backbone="none",
        class_names=info.pop("class_names"),
        group_names=info.pop("group_names"),
        preprocessing="synthetic gaussian blocks (hsfm_jax.data.synthetic)",
        synthetic=info,
        made_by="synthetic",
    )
