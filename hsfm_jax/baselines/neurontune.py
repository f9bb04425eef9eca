"""NeuronTune (Zheng, Ye & Zhang, ICML 2025) on frozen features: suppress biased dimensions,
retrain the last layer.

1. Identification (Sec. 4.2.1, Eqs. 5-6) on D_Ide (default: val), with the current head (the
   backbone's ``head.npz`` if present, else an ERM head trained on train): for class y and
   feature dimension i,

       delta_i^y = median{a_i(x) : x of class y misclassified} - median{a_i(x) : x of class y
                   correctly classified},

   with ``a_i = |feature_i|`` by default (``activation="abs"``; for post-ReLU embeddings, as in
   the paper, this is the feature itself; ``"raw"`` keeps the sign). A dimension is biased when
   ``delta_i^y > lambda`` for any class (union over classes), lambda = 0 by default. Medians are
   NumPy's (mean of the two middle values for even counts). **A class with no misclassified or no
   correctly classified example gets delta^y = 0** (it flags nothing and adds nothing to SFit).
2. Suppression and tuning (Sec. 4.2.2, Eq. 7): biased dimensions are zeroed (folded into the
   returned head as zero columns) and the last layer is retrained with class-balanced sampling on
   D_Tune (default: train; ``tune_split="val_half"`` uses one half of val for tuning and the other
   half as D_Ide), SGD lr 1e-3, batch 128, 200 batches per epoch, 40 epochs (Table 10,
   Waterbirds/CelebA column), starting from the current head (``init="current"``).
3. Model selection over epochs and the lambda grid: by the validation metric (WGA with group
   labels; row ``"neurontune_wga"``) and by SFit = sum_{i,y} |delta_i^y| of the retrained head on
   D_Ide, higher is better (no group labels; row ``"neurontune_sfit"``). SFit uses the raw (not
   suppressed) activations, so it measures how the retrained head's errors relate to every
   dimension.

Everything after identification is one jitted function vmapped over the lambda grid and over
seeds (seeds differ in minibatch draws and, with ``val_half``, in the split). Medians over
variable-size subsets are computed without dynamic shapes: each class's activations are sorted
once per column on the host, and a subset's median is read off by a cumulative count of the
subset's members in that order.

Deviations / choices where the paper is silent: the ERM fallback head's optimizer settings are in
``config.erm``; with ``val_half`` the validation metric for selection is measured on the D_Ide
half only (the other half is trained on); the per-epoch optimizer state restarts each epoch
(irrelevant for the paper's plain SGD).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hsfm_jax import checks, evaluate, heads, optim
from hsfm_jax.baselines import erm
from hsfm_jax.features import FeatureSet
from hsfm_jax.spuriousness import sfit, spuriousness_scores

ACTIVATIONS = ("abs", "raw")
TUNE_SPLITS = ("train", "val_half")


def default_config() -> ml_collections.ConfigDict:
    """NeuronTune defaults (paper Sec. 4.2 and Table 10, Waterbirds/CelebA)."""
    config = ml_collections.ConfigDict()
    config.thresholds = (0.0,)  # lambda grid of Eq. 6; the paper's default lambda = 0
    config.activation = "abs"  # a_i = |feature_i| (the definition)
    config.tune_split = "train"  # D_Tune = train, D_Ide = val; or "val_half"
    config.init = "current"  # start retraining from the current head ("current" | "zeros")
    config.optimizer = "sgd"  # Table 10
    config.learning_rate = 1e-3  # Table 10
    config.batch_size = 128  # Table 10
    config.batches_per_epoch = 200  # Table 10
    config.epochs = 40  # Table 10 (Waterbirds, CelebA)
    config.l2 = 0.0  # Table 10 lists no weight decay for retraining
    config.selection_metric = "auto"  # WGA with groups, else mean acc (label-free: worst-class)
    # Current head when the feature set has no head.npz: an ERM head on train (our choice).
    config.erm = ml_collections.ConfigDict()
    config.erm.optimizer = "adam"
    config.erm.learning_rate = 1e-2
    config.erm.steps = 2000
    config.erm.l2 = 0.0
    return config


# ----------------------------------------------------------------------------- identification


def activation_values(features, activation: str = "abs"):
    """a_i(x) of Eq. 5: |features| ("abs") or the features themselves ("raw")."""
    if activation == "abs":
        return abs(features)
    if activation == "raw":
        return features
    raise ValueError(f"neurontune: activation must be one of {ACTIVATIONS}, got {activation!r}")


def class_sorted_activations(
    activations: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per class, every column's activations sorted ascending (host side, once).

    Args:
      activations: (N, d) float.
      labels: (N,) int in [0, C).
      num_classes: C.

    Returns:
      (values (C, M, d) float32 padded with +inf, rows (C, M, d) int32 row index of each value,
      -1 in padding), M = the largest class count.
    """
    activations = np.asarray(activations, np.float32)
    labels = np.asarray(labels)
    n, d = activations.shape
    size = max(int(np.bincount(labels, minlength=num_classes).max()), 1)
    values = np.full((num_classes, size, d), np.inf, np.float32)
    rows = np.full((num_classes, size, d), -1, np.int32)
    for y in range(num_classes):
        members = np.flatnonzero(labels == y)
        order = np.argsort(activations[members], axis=0, kind="stable")
        values[y, : members.size] = np.take_along_axis(activations[members], order, axis=0)
        rows[y, : members.size] = members[order]
    return values, rows


def spuriousness_scores_numpy(
    activations: np.ndarray, labels: np.ndarray, correct: np.ndarray, num_classes: int
) -> np.ndarray:
    """Plain NumPy reference of `spuriousness_scores` (all rows in D_Ide), (C, d)."""
    delta = np.zeros((num_classes, activations.shape[1]), np.float32)
    for y in range(num_classes):
        wrong = activations[(labels == y) & ~correct]
        right = activations[(labels == y) & correct]
        if len(wrong) and len(right):
            delta[y] = np.median(wrong, axis=0) - np.median(right, axis=0)
    return delta


def biased_dimensions(delta: jnp.ndarray, threshold: float | jnp.ndarray = 0.0) -> jnp.ndarray:
    """Eq. 6 with the union over classes: (d,) bool, delta_i^y > threshold for some y."""
    return jnp.any(delta > threshold, axis=0)


# ----------------------------------------------------------------------------- tuning


def _subset_metric(head, features, labels, groups, member, *, num_classes, num_groups, metric):
    """`metric` of the evaluator restricted to rows with member=True (fixed shapes)."""
    if metric == "mean_acc":
        correct = heads.predict(head, features) == labels
        return jnp.sum(correct & member) / jnp.maximum(jnp.sum(member), 1)
    return evaluate.selection_score(
        head,
        features,
        jnp.where(member, labels, -1),
        jnp.where(member, groups, -1),
        metric=metric,
        num_classes=num_classes,
        num_groups=num_groups,
    )


def tune_single(
    key: jax.Array,
    threshold: jnp.ndarray,
    reference: heads.LinearHead,
    sorted_values: jnp.ndarray,
    sorted_rows: jnp.ndarray,
    val_features: jnp.ndarray,
    val_labels: jnp.ndarray,
    val_groups: jnp.ndarray,
    train_features: jnp.ndarray,
    train_labels: jnp.ndarray,
    *,
    num_classes: int,
    num_groups: int,
    metric: str,
    tune_split: str,
    init: str,
    optimizer: str,
    learning_rate: float,
    batch_size: int,
    batches_per_epoch: int,
    epochs: int,
    l2: float,
) -> dict:
    """Identification, suppression and per-epoch tuning for one seed and one lambda.

    D_Ide is val (all of it, or a seeded half with ``tune_split="val_half"``). Returns a dict with
    ``head_metric`` / ``head_sfit`` (the heads chosen by the validation metric and by SFit),
    ``best_metric``, ``best_sfit``, ``biased`` (d,) bool, ``delta`` (C, d) of the reference head,
    and per-epoch histories ``metric_history`` / ``sfit_history`` (E,).
    """
    n_val = val_features.shape[0]
    k_split, k_train = jax.random.split(key)
    if tune_split == "val_half":
        in_first = (
            jnp.zeros((n_val,), bool)
            .at[jax.random.permutation(k_split, n_val)[: n_val // 2]]
            .set(True)
        )
        ide_member, tune_weight = in_first, (~in_first).astype(val_features.dtype)
        tune_x, tune_y = val_features, val_labels
    else:
        ide_member, tune_weight = jnp.ones((n_val,), bool), None
        tune_x, tune_y = train_features, train_labels

    def delta_of(head):
        correct = heads.predict(head, val_features) == val_labels
        return spuriousness_scores(sorted_values, sorted_rows, correct, ide_member)

    delta = delta_of(reference)
    biased = biased_dimensions(delta, threshold)
    keep = (~biased).astype(val_features.dtype)
    head0 = reference if init == "current" else heads.zeros(num_classes, val_features.shape[1])
    head0 = head0.replace(weight=head0.weight * keep)
    score = functools.partial(
        _subset_metric, num_classes=num_classes, num_groups=num_groups, metric=metric
    )

    def epoch(carry, epoch_key):
        head, best_head_m, best_m, best_head_s, best_s = carry
        head = erm.fit(
            tune_x,
            tune_y,
            epoch_key,
            num_classes=num_classes,
            optimizer=optimizer,
            learning_rate=learning_rate,
            steps=batches_per_epoch,
            l2=l2,
            batch_size=batch_size,
            class_balanced=True,
            init=head,
            sample_weight=tune_weight,
            feature_mask=keep,
        )
        m = score(head, val_features, val_labels, val_groups, ide_member)
        s = sfit(delta_of(head))
        better_m, better_s = m > best_m, s > best_s
        pick = lambda better, new, old: jax.tree_util.tree_map(
            lambda a, b: jnp.where(better, a, b), new, old
        )
        carry = (
            head,
            pick(better_m, head, best_head_m),
            jnp.where(better_m, m, best_m),
            pick(better_s, head, best_head_s),
            jnp.where(better_s, s, best_s),
        )
        return carry, (m, s)

    minus_inf = jnp.asarray(-jnp.inf, val_features.dtype)
    carry = (head0, head0, minus_inf, head0, minus_inf)
    (_, head_m, best_m, head_s, best_s), (m_hist, s_hist) = jax.lax.scan(
        epoch, carry, jax.random.split(k_train, epochs)
    )
    return dict(
        head_metric=head_m,
        head_sfit=head_s,
        best_metric=best_m,
        best_sfit=best_s,
        biased=biased,
        delta=delta,
        metric_history=m_hist,
        sfit_history=s_hist,
    )


_STATIC = (
    "num_classes",
    "num_groups",
    "metric",
    "tune_split",
    "init",
    "optimizer",
    "batch_size",
    "batches_per_epoch",
    "epochs",
)


@functools.partial(jax.jit, static_argnames=_STATIC)
def tune(keys: jax.Array, thresholds: jnp.ndarray, *args, **kwargs) -> dict:
    """`tune_single` vmapped over seeds (S,) and thresholds (L,), then the best lambda per seed.

    Returns the dict of `tune_single` with a leading (S, L) axis, plus ``head_wga_selected`` and
    ``head_sfit_selected`` (S, C, d): the best over epochs and lambdas by each criterion.
    """
    over_thresholds = jax.vmap(lambda k, t: tune_single(k, t, *args, **kwargs), in_axes=(None, 0))
    out = jax.vmap(over_thresholds, in_axes=(0, None))(keys, thresholds)

    def select(head, score):  # head leaves (S, L, ...), score (S, L) -> (S, ...)
        best = jnp.argmax(score, axis=1)
        return jax.tree_util.tree_map(
            lambda x: jnp.take_along_axis(x, best.reshape((-1,) + (1,) * (x.ndim - 1)), 1)[:, 0],
            head,
        )

    out["head_wga_selected"] = select(out["head_metric"], out["best_metric"])
    out["head_sfit_selected"] = select(out["head_sfit"], out["best_sfit"])
    return out


def reference_head(data: FeatureSet, config: ml_collections.ConfigDict) -> heads.LinearHead:
    """The "current" head: the backbone's head.npz, else an ERM head on train (deterministic)."""
    if data.has_head:
        return heads.from_numpy(data.head_weight, data.head_bias)
    train = data.train.to_arrays()
    return erm.fit(
        train.features,
        train.labels,
        jax.random.key(0),
        num_classes=data.num_classes,
        optimizer=config.erm.optimizer,
        learning_rate=float(config.erm.learning_rate),
        steps=int(config.erm.steps),
        l2=float(config.erm.l2),
    )


def check(config: ml_collections.ConfigDict, data: FeatureSet) -> dict:
    """Raises ValueError naming the first bad field; returns the resolved selection metric."""
    checks.check_grid("neurontune", config, "thresholds", "finite")
    checks.check_choice("neurontune", config, "activation", ACTIVATIONS)
    checks.check_choice("neurontune", config, "tune_split", TUNE_SPLITS)
    checks.check_choice("neurontune", config, "init", ("current", "zeros"))
    checks.check_choice("neurontune", config, "optimizer", optim.OPTIMIZERS)
    checks.check_value("neurontune", config, "learning_rate", "positive")
    for name in ("batch_size", "batches_per_epoch", "epochs"):
        checks.check_value("neurontune", config, name, "positive_int")
    checks.check_value("neurontune", config, "l2", "non_negative")
    if not data.has_head:  # the current head is an ERM head on train
        checks.check_choice("erm", config.erm, "optimizer", optim.OPTIMIZERS)
        checks.check_value("erm", config.erm, "learning_rate", "positive")
        checks.check_value("erm", config.erm, "steps", "positive_int")
        checks.check_value("erm", config.erm, "l2", "non_negative")
    return {"selection_metric": checks.check_selection("neurontune", config, data)}


def run_with_info(
    data: FeatureSet, config: ml_collections.ConfigDict, keys: jax.Array
) -> tuple[dict[str, heads.LinearHead], dict]:
    """`run`, plus the full output of `tune` (biased dims, deltas, histories) for inspection."""
    metric = check(config, data)["selection_metric"]
    reference = reference_head(data, config)
    val = data.val.to_arrays()
    values, rows = class_sorted_activations(
        activation_values(np.asarray(data.val.features, np.float32), config.activation),
        data.val.labels,
        data.num_classes,
    )
    if config.tune_split == "train":
        train = data.train.to_arrays()
        train_x, train_y = train.features, train.labels
    else:  # D_Tune is half of val: train is not read
        train_x, train_y = None, None
    out = tune(
        keys,
        jnp.asarray(config.thresholds, jnp.float32),
        reference,
        jnp.asarray(values),
        jnp.asarray(rows),
        val.features,
        val.labels,
        val.groups,
        train_x,
        train_y,
        num_classes=data.num_classes,
        num_groups=data.num_groups,
        metric=metric,
        tune_split=config.tune_split,
        init=config.init,
        optimizer=config.optimizer,
        learning_rate=float(config.learning_rate),
        batch_size=int(config.batch_size),
        batches_per_epoch=int(config.batches_per_epoch),
        epochs=int(config.epochs),
        l2=float(config.l2),
    )
    rows_out = {
        "neurontune_wga": out["head_wga_selected"],
        "neurontune_sfit": out["head_sfit_selected"],
    }
    return rows_out, out


def run(
    data: FeatureSet, config: ml_collections.ConfigDict, keys: jax.Array
) -> dict[str, heads.LinearHead]:
    """NeuronTune rows for every seed key.

    Args:
      data: the feature set (train, val; test never).
      config: `default_config()`-shaped.
      keys: (S,) PRNG keys.

    Returns:
      {"neurontune_wga": heads chosen by the validation metric (WGA with groups),
       "neurontune_sfit": heads chosen by SFit}, each weight (S, C, d), bias (S, C), over raw
      features, with the suppressed dimensions as zero columns.
    """
    return run_with_info(data, config, keys)[0]


def group_use(config: ml_collections.ConfigDict) -> dict[str, dict[str, bool]]:
    """Which rows read train / val group labels, for a resolved config (the SFit row never)."""
    select = config.selection_metric == "wga"
    return {
        "neurontune_wga": {"train": False, "val": select},
        "neurontune_sfit": {"train": False, "val": False},
    }
