"""What did HSFM do? Run history aggregation and the geometry of the learned support edits.

The paper's second claim (Sec. 5.3, Fig. 2) is that the support edits ``H_final - H_0`` are
meaningful: they move majority-group support points toward the minority configuration of the
same class (a waterbird on water toward a waterbird on land). This module measures that on any
run, with numbers instead of images:

- `spurious_directions`: per class, the within-class spurious direction on val, from the mean of
  the class's majority group (largest in train) to the mean of its other groups;
- `class_directions`: per class, the class-discriminative direction on val, from the centre of the
  other classes to the centre of this class (centres are averages of group means, so the
  spurious attribute cancels on balanced val);
- `edit_geometry`: cosines of each class's mean edit with both directions and the fraction of edit
  energy along each (for the mean edit and summed over the individual edits);
- `class_mean_edits`: each class's mean edit (also what `feature_export.clip_probe` compares
  with text directions);
- `energy_by_dims`: the fraction of edit energy in named blocks of dimensions (the synthetic
  generator knows its core / spurious / noise dimensions);
- `pca_fit` / `pca_project`, `nearest_neighbours`, `select_support_points`: for the plots and the
  nearest-neighbour table of `experiments.analyze` and for `feature_export.unclip`.

Everything is pure numpy on host arrays (features are at most a few hundred thousand rows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

_EPS = 1e-12


# ----------------------------------------------------------------------------- history


def history_arrays(history: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
    """history.json as arrays: every value has shape (seeds, epochs, ...)."""
    arrays = {k: np.asarray(v) for k, v in history.items()}
    for key, value in arrays.items():
        if value.ndim < 2:
            raise ValueError(
                f"history[{key!r}]: expected shape (seeds, epochs, ...), got {value.shape}"
            )
    epochs = {v.shape[:2] for v in arrays.values()}
    if len(epochs) > 1:
        raise ValueError(f"history: fields disagree on (seeds, epochs): {sorted(epochs)}")
    return arrays


def aggregate_history(history: Mapping[str, Sequence]) -> dict[str, dict[str, np.ndarray]]:
    """Mean and std over seeds of every field: {key: {"mean": (E, ...), "std": (E, ...)}}.

    The std is the population std (ddof=0), 0 for a single seed, as in `hsfm_jax.reporting.results`.
    """
    out = {}
    for key, value in history_arrays(history).items():
        value = value.astype(np.float64)
        out[key] = {"mean": value.mean(axis=0), "std": value.std(axis=0)}
    return out


def hard_set_group_fractions(group_counts: np.ndarray) -> np.ndarray:
    """(..., G) hard-set group counts -> fractions of the hard set per group (rows sum to 1)."""
    counts = np.asarray(group_counts, np.float64)
    return counts / np.maximum(counts.sum(axis=-1, keepdims=True), _EPS)


# ----------------------------------------------------------------------------- directions


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), _EPS)


def group_classes(labels: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """(G,) the class of each group (its most common label; -1 for a group with no example)."""
    out = np.full((num_groups,), -1, np.int64)
    for g in range(num_groups):
        members = labels[groups == g]
        if members.size:
            out[g] = np.bincount(members).argmax()
    return out


def group_means(features: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """(G, d) mean feature of each group (NaN rows for absent groups)."""
    means = np.full((num_groups, features.shape[1]), np.nan)
    for g in range(num_groups):
        rows = groups == g
        if rows.any():
            means[g] = np.asarray(features[rows], np.float64).mean(axis=0)
    return means


def spurious_directions(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    num_classes: int,
    num_groups: int,
    majority_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Within-class spurious direction of every class, from val features.

    For class c with groups G_c: ``mean(other groups of c) - mean(majority group of c)``, where
    the majority group has the largest `majority_weights` (train group counts; val counts when
    None). With two groups per class (Waterbirds, CelebA, Dominoes) this is
    ``mean(minority) - mean(majority)``, so a positive cosine with an edit means "toward the
    minority configuration", the paper's Fig. 2 reading.

    Args:
      features: (N, d) val features.
      labels: (N,) int.
      groups: (N,) int in [0, G).
      num_classes: C.
      num_groups: G.
      majority_weights: (G,) train group counts, or None.

    Returns:
      (directions (C, d) float64 with NaN rows for classes with fewer than two groups present,
      info: per class {"majority_group", "other_groups"}).
    """
    classes = group_classes(labels, groups, num_groups)
    means = group_means(features, groups, num_groups)
    weights = (
        np.bincount(groups[groups >= 0], minlength=num_groups)[:num_groups]
        if majority_weights is None
        else np.asarray(majority_weights, np.float64)
    )
    directions = np.full((num_classes, features.shape[1]), np.nan)
    info = []
    for c in range(num_classes):
        members = [g for g in range(num_groups) if classes[g] == c]
        if len(members) < 2:
            info.append({"majority_group": None, "other_groups": []})
            continue
        majority = max(members, key=lambda g: (weights[g], -g))
        others = [g for g in members if g != majority]
        directions[c] = means[others].mean(axis=0) - means[majority]
        info.append({"majority_group": int(majority), "other_groups": [int(g) for g in others]})
    return directions, info


def class_directions(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    num_classes: int,
    num_groups: int = 0,
) -> np.ndarray:
    """(C, d) class-discriminative directions: centre of class c minus the centre of the rest.

    A class centre is the average of its group means when groups are known (so an unbalanced
    split does not leak the spurious attribute into it), else the plain class mean.
    """
    centres = np.zeros((num_classes, features.shape[1]))
    classes = None
    if groups is not None and num_groups > 0 and np.all(groups >= 0):
        classes = group_classes(labels, groups, num_groups)
        means = group_means(features, groups, num_groups)
    for c in range(num_classes):
        if classes is not None and (classes == c).any():
            centres[c] = np.nanmean(means[classes == c], axis=0)
        else:
            centres[c] = np.asarray(features[labels == c], np.float64).mean(axis=0)
    rest = (centres.sum(axis=0, keepdims=True) - centres) / max(num_classes - 1, 1)
    return centres - rest


# ----------------------------------------------------------------------------- edit geometry


def _mean_sq_norm(x: np.ndarray) -> float:
    return float(np.mean(np.sum(x**2, axis=1))) if x.size else 0.0


def edit_geometry(
    support0: np.ndarray,
    support: np.ndarray,
    support_labels: np.ndarray,
    *,
    spurious: np.ndarray,
    discriminative: np.ndarray,
) -> list[dict]:
    """How each class's support edits relate to its spurious and class directions.

    Args:
      support0: (S, d) initial support embeddings H_0.
      support: (S, d) edited support embeddings H_final.
      support_labels: (S,) int.
      spurious: (C, d) within-class spurious directions (`spurious_directions`).
      discriminative: (C, d) class directions (`class_directions`).

    Returns:
      One dict per class with
        ``num_points``; ``mean_edit_norm`` ||mean_i e_i||; ``rms_edit_norm`` sqrt(mean ||e_i||^2);
        ``relative_edit_norm``: rms_edit_norm / sqrt(mean ||h0_i||^2), the edit's size relative
        to the embeddings it edits;
        ``coherence`` ||mean e||^2 / mean ||e_i||^2 (1: every point moved the same way);
        ``cos_spurious`` / ``cos_class``: cosine of the mean edit with each direction;
        ``energy_spurious`` / ``energy_class``: cos^2, the fraction of the mean edit's energy
        along each direction; ``energy_both``: fraction in the plane of the two;
        ``point_energy_spurious`` / ``point_energy_class``: sum_i (e_i . u)^2 / sum_i ||e_i||^2,
        the same over the individual edits; ``chance_energy``: 1/d, what a random direction gets;
        ``shift_spurious`` / ``shift_class``: (mean e . v) / ||v||^2, how far along the unnormalised
        direction v the class moved on average (1: the whole majority -> minority gap).
    """
    h0 = np.asarray(support0, np.float64)
    labels = np.asarray(support_labels)
    edits = np.asarray(support, np.float64) - h0
    d = edits.shape[1]
    rows = []
    for c in range(spurious.shape[0]):
        e = edits[support_labels == c]
        mean_edit = e.mean(axis=0) if e.size else np.zeros(d)
        mean_sq = float(np.mean(np.sum(e**2, axis=1))) if e.size else 0.0
        row = {
            "class": c,
            "num_points": int(e.shape[0]),
            "mean_edit_norm": float(np.linalg.norm(mean_edit)),
            "rms_edit_norm": float(np.sqrt(mean_sq)),
            "relative_edit_norm": float(
                np.sqrt(mean_sq / max(_mean_sq_norm(h0[labels == c]), _EPS))
            ),
            "coherence": float(np.sum(mean_edit**2) / max(mean_sq, _EPS)),
            "chance_energy": 1.0 / d,
        }
        unit_edit = _unit(mean_edit)
        basis = []
        for name, direction in (("spurious", spurious[c]), ("class", discriminative[c])):
            if not np.all(np.isfinite(direction)) or np.linalg.norm(direction) < _EPS:
                row.update(
                    {
                        f"cos_{name}": np.nan,
                        f"energy_{name}": np.nan,
                        f"point_energy_{name}": np.nan,
                        f"shift_{name}": np.nan,
                    }
                )
                continue
            u = _unit(direction)
            basis.append(u)
            cos = float(unit_edit @ u)
            row[f"cos_{name}"] = cos
            row[f"energy_{name}"] = cos**2
            row[f"point_energy_{name}"] = float(np.sum((e @ u) ** 2) / max(mean_sq * len(e), _EPS))
            row[f"shift_{name}"] = float(mean_edit @ direction / np.sum(direction**2))
        if basis:
            q, _ = np.linalg.qr(np.stack(basis, axis=1))
            row["energy_both"] = float(np.sum((unit_edit @ q) ** 2))
        else:
            row["energy_both"] = np.nan
        rows.append(row)
    return rows


def class_mean_edits(
    support0: np.ndarray, support: np.ndarray, labels: np.ndarray, num_classes: int
) -> np.ndarray:
    """(C, d) mean edit H_final - H_0 of each class's support points (zeros for an absent class)."""
    edits = np.asarray(support, np.float64) - np.asarray(support0, np.float64)
    out = np.zeros((num_classes, edits.shape[1]))
    for c in range(num_classes):
        if (labels == c).any():
            out[c] = edits[labels == c].mean(axis=0)
    return out


def energy_by_dims(edits: np.ndarray, blocks: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Fraction of the total edit energy sum_i ||e_i||^2 in each named block of dimensions.

    Args:
      edits: (S, d) or (d,) edits.
      blocks: name -> dimension indices (the synthetic generator's ``core_dims`` etc.).
    """
    edits = np.atleast_2d(np.asarray(edits, np.float64))
    total = max(float(np.sum(edits**2)), _EPS)
    return {name: float(np.sum(edits[:, list(dims)] ** 2) / total) for name, dims in blocks.items()}


# ----------------------------------------------------------------------------- projections


def pca_fit(x: np.ndarray, num_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """PCA of rows of x (N, d) -> (mean (d,), components (k, d), orthonormal rows)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = vt[:num_components]
    # A deterministic sign: the largest-magnitude loading of each component is positive.
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    return mean, components * signs[:, None]


def pca_project(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """(N, d) -> (N, k) coordinates in the PCA basis."""
    return (np.asarray(x, np.float64) - mean) @ components.T


def nearest_neighbours(
    queries: np.ndarray,
    reference: np.ndarray,
    k: int,
    *,
    metric: str = "euclidean",
    chunk_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest reference rows of each query.

    Args:
      queries: (M, d).
      reference: (N, d).
      k: neighbours per query (<= N).
      metric: "euclidean" or "cosine" (1 - cosine similarity).
      chunk_size: queries per distance block (memory is chunk_size x N).

    Returns:
      (indices (M, k) int64, distances (M, k)), nearest first.
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    q = np.asarray(queries, np.float64)
    r = np.asarray(reference, np.float64)
    if not 1 <= k <= r.shape[0]:
        raise ValueError(f"k must be in [1, {r.shape[0]}], got {k}")
    if metric == "cosine":
        q, r = _unit(q), _unit(r)
    r_sq = np.sum(r**2, axis=1)
    indices, distances = [], []
    for start in range(0, q.shape[0], chunk_size):
        block = q[start : start + chunk_size]
        if metric == "cosine":
            dist = 1.0 - block @ r.T
        else:
            sq = np.sum(block**2, axis=1)[:, None] + r_sq[None, :] - 2.0 * block @ r.T
            dist = np.sqrt(np.maximum(sq, 0.0))
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        indices.append(order)
        distances.append(np.take_along_axis(dist, order, axis=1))
    if not indices:
        return np.zeros((0, k), np.int64), np.zeros((0, k))
    return np.concatenate(indices), np.concatenate(distances)


def select_support_points(
    support0: np.ndarray, support: np.ndarray, support_labels: np.ndarray, *, per_class: int
) -> np.ndarray:
    """Rows of the support set with the largest edits, `per_class` per class, class by class.

    Returns (<= C * per_class,) int64 indices into the support set (fewer for a smaller class).
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    norms = np.linalg.norm(
        np.asarray(support, np.float64) - np.asarray(support0, np.float64), axis=1
    )
    chosen = []
    for c in np.unique(support_labels):
        rows = np.flatnonzero(support_labels == c)
        chosen.extend(rows[np.argsort(-norms[rows], kind="stable")[:per_class]])
    return np.asarray(chosen, np.int64)


def group_name(data, g: int) -> str:
    """The name of group `g` of a `FeatureSet`, "?" for an unknown group."""
    return data.group_names[g] if 0 <= g < data.num_groups else "?"
