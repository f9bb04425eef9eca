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

Everything after identification is jitted and vmapped over the lambda grid and over seeds (seeds
differ in minibatch draws and, with ``val_half``, in the split); the tuning epochs run in chunks
of ``chunk_epochs`` (`tune_chunk`, one compiled program; `hsfm_jax.runtime.epoch_loop`: progress,
checkpoints, resume), with the numbers of one scan over all epochs (`tune`). Medians over
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
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from hsfm_jax.core import checks, heads, optim, sampling, selection
from hsfm_jax.core.spuriousness import sfit, spuriousness_scores
from hsfm_jax.data import buckets
from hsfm_jax.data.features import FeatureSet, SplitArrays, to_device
from hsfm_jax.methods import erm
from hsfm_jax.methods.contract import MethodResult, epoch_curves
from hsfm_jax.runtime import epoch_loop, program_cache

NAME = "neurontune"
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
    config.chunk_epochs = 10  # epochs per compiled chunk: progress, checkpoints; same numbers
    config.l2 = 0.0  # Table 10 lists no weight decay for retraining
    config.selection_metric = "auto"  # WGA with groups, else mean acc (label-free: worst-class)
    # Current head when the feature set has no head.npz: the ERM recipe's head on train (our
    # choice). An experiment puts its own `config.erm` here (`methods.method_config`); these
    # values serve NeuronTune run alone.
    config.erm = erm.default_config()
    config.erm.update(learning_rate=1e-2, steps=2000)
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
    activations: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    dtype=np.float32,
    row_buckets: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per class, every column's activations sorted ascending (host side, once).

    Args:
      activations: (N, d) float.
      labels: (N,) int in [0, C).
      num_classes: C.
      dtype: of the values.
      row_buckets: M rounded up to its row bucket (`hsfm_jax.data.buckets`), so that another
        val size in the bucket gives the same shapes.

    Returns:
      (values (C, M, d) `dtype` padded with +inf, rows (C, M, d) int32 row index of each value,
      -1 in padding), M = the largest class count (or its bucket).
    """
    activations = np.asarray(activations, dtype)
    labels = np.asarray(labels)
    n, d = activations.shape
    size = max(int(np.bincount(labels, minlength=num_classes).max()), 1)
    size = buckets.rows(size) if row_buckets else size
    values = np.full((num_classes, size, d), np.inf, dtype)
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


class Inputs(struct.PyTreeNode):
    """The arrays every (seed, lambda) run reads.

    Attributes:
      reference: the current head (C, d).
      sorted_values, sorted_rows: `class_sorted_activations` of val (C, M, d).
      val_features: (N_val, d); val_labels, val_groups: (N_val,) int.
      train_features, train_labels: D_Tune with ``tune_split="train"``, else None.
    """

    reference: heads.LinearHead
    sorted_values: jnp.ndarray
    sorted_rows: jnp.ndarray
    val_features: jnp.ndarray
    val_labels: jnp.ndarray
    val_groups: jnp.ndarray
    train_features: jnp.ndarray | None = None
    train_labels: jnp.ndarray | None = None


class Settings(NamedTuple):
    """Static configuration of the tuning (changing one compiles a new program)."""

    num_classes: int
    num_groups: int
    metric: str
    tune_split: str
    init: str
    optimizer: str
    batch_size: int
    batches_per_epoch: int
    epochs: int


class State(struct.PyTreeNode):
    """What carries from one tuning epoch to the next, for one seed and one lambda.

    Attributes:
      head: the head being retrained (C, d), suppressed columns zero.
      head_metric, best_metric: the best head by the validation metric so far, and its score.
      head_sfit, best_sfit: the best head by SFit so far, and its score.
      train_key: raw key data (`jax.random.key_data`) of the key the epochs' keys are split from.
      ide_member: (N_val,) bool, the rows of D_Ide.
      biased: (d,) bool, the suppressed dimensions; delta: (C, d), Eq. 5 of the reference head.
    """

    head: heads.LinearHead
    head_metric: heads.LinearHead
    best_metric: jnp.ndarray
    head_sfit: heads.LinearHead
    best_sfit: jnp.ndarray
    train_key: jnp.ndarray
    ide_member: jnp.ndarray
    biased: jnp.ndarray
    delta: jnp.ndarray


def _delta_of(head, inputs: Inputs, ide_member):
    correct = heads.predict(head, inputs.val_features) == inputs.val_labels
    return spuriousness_scores(inputs.sorted_values, inputs.sorted_rows, correct, ide_member)


def init_single(key: jax.Array, threshold: jnp.ndarray, inputs: Inputs, *, settings) -> State:
    """Identification and suppression for one seed and one lambda: the state before epoch 1.

    D_Ide is val (all of it, or a seeded half with ``tune_split="val_half"``).
    """
    n_val, dim = inputs.val_features.shape
    k_split, k_train = jax.random.split(key)
    num_real = buckets.count(inputs.val_labels)  # the padding rows are in neither half
    if settings.tune_split == "val_half":
        # the first half of jax.random.permutation(k_split, num_real)
        order = sampling.permutation(k_split, num_real, n_val)
        ide_member = sampling.leading(order, num_real // 2)
    else:
        ide_member = buckets.valid(inputs.val_labels)
    delta = _delta_of(inputs.reference, inputs, ide_member)
    biased = biased_dimensions(delta, threshold)
    keep = (~biased).astype(inputs.val_features.dtype)
    head0 = (
        inputs.reference if settings.init == "current" else heads.zeros(settings.num_classes, dim)
    )
    head0 = head0.replace(weight=head0.weight * keep)
    minus_inf = jnp.asarray(-jnp.inf, inputs.val_features.dtype)
    return State(
        head=head0,
        head_metric=head0,
        best_metric=minus_inf,
        head_sfit=head0,
        best_sfit=minus_inf,
        train_key=jax.random.key_data(k_train),
        ide_member=ide_member,
        biased=biased,
        delta=delta,
    )


def chunk_single(
    state: State,
    inputs: Inputs,
    first_epoch: jnp.ndarray,
    rates: erm.Rates,
    *,
    settings: Settings,
    chunk_epochs: int,
    train_key: jnp.ndarray,
    ide_member: jnp.ndarray,
) -> tuple[State, dict]:
    """Tuning epochs `first_epoch` .. `first_epoch + chunk_epochs - 1` (0-based; those past the
    last epoch are skipped, their history rows zero) for one seed and one lambda.

    Epoch e draws its minibatches with the e-th of `settings.epochs` keys split from the state's
    key, whatever the chunks, so chained chunks give the numbers of one chunk of all epochs.
    `train_key` / `ide_member` are the state's own values, passed unbatched by `tune_chunk` so
    that the lambdas of a seed share their minibatch draws.

    Returns:
      (state, {"metric_history": (chunk_epochs,), "sfit_history": (chunk_epochs,),
      "loss_history": (chunk_epochs,)}), ``loss_history`` the class-balanced objective of the
      epoch's head on the tune rows.
    """
    s = settings
    val_half = s.tune_split == "val_half"
    tune_x = inputs.val_features if val_half else inputs.train_features
    tune_y = inputs.val_labels if val_half else inputs.train_labels
    tune_weight = (~ide_member).astype(tune_x.dtype) if val_half else None
    keep = (~state.biased).astype(inputs.val_features.dtype)
    # what the epoch's class-balanced minibatches estimate, for the training curves
    loss_weight = erm._example_weight(
        tune_y, s.num_classes, tune_x.dtype, sample_weight=tune_weight, class_balanced=True
    )
    epoch_keys = jax.random.split(jax.random.wrap_key_data(train_key), s.epochs)
    score = functools.partial(
        selection.score, num_classes=s.num_classes, num_groups=s.num_groups, metric=s.metric
    )
    val = SplitArrays(inputs.val_features, inputs.val_labels, inputs.val_groups)

    recipe = erm.Recipe(
        s.num_classes, s.optimizer, s.batches_per_epoch, s.batch_size, class_balanced=True
    )

    def run_one(st, epoch_index):
        head = erm.fit(
            tune_x,
            tune_y,
            epoch_keys[epoch_index],
            recipe,
            rates,
            init=st.head,
            sample_weight=tune_weight,
            feature_mask=keep,
        )
        m = score(head, val, member=ide_member)
        f = sfit(_delta_of(head, inputs, ide_member))
        loss = erm._objective(head, tune_x, tune_y, loss_weight, rates.l2, feature_mask=keep)
        better_m, better_f = m > st.best_metric, f > st.best_sfit
        pick = lambda better, new, old: jax.tree_util.tree_map(
            lambda a, b: jnp.where(better, a, b), new, old
        )
        st = st.replace(
            head=head,
            head_metric=pick(better_m, head, st.head_metric),
            best_metric=jnp.where(better_m, m, st.best_metric),
            head_sfit=pick(better_f, head, st.head_sfit),
            best_sfit=jnp.where(better_f, f, st.best_sfit),
        )
        return st, {"metric_history": m, "sfit_history": f, "loss_history": loss}

    shapes = jax.eval_shape(run_one, state, jnp.asarray(0))[1]
    skip = lambda st, _: (st, jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), shapes))

    def body(st, index):
        epoch_index = first_epoch + index
        return jax.lax.cond(epoch_index < s.epochs, run_one, skip, st, epoch_index)

    return jax.lax.scan(body, state, jnp.arange(chunk_epochs))


@program_cache.jit(static_argnames=("settings",))
def tune_init(keys: jax.Array, thresholds: jnp.ndarray, inputs: Inputs, *, settings) -> State:
    """`init_single` for every seed (S,) and threshold (L,): a state with leading axes (S, L)."""
    over_thresholds = jax.vmap(
        lambda k, t: init_single(k, t, inputs, settings=settings), in_axes=(None, 0)
    )
    return jax.vmap(over_thresholds, in_axes=(0, None))(keys, thresholds)


@program_cache.jit(static_argnames=("settings", "chunk_epochs"))
def tune_chunk(
    state: State,
    inputs: Inputs,
    first_epoch: jnp.ndarray,
    rates: erm.Rates,
    *,
    settings: Settings,
    chunk_epochs: int,
) -> tuple[State, dict]:
    """`chunk_single` over the (S, L) axes of `state`; histories (S, L, chunk_epochs).

    One compiled program per (settings, chunk_epochs): `first_epoch` () int32 is traced.
    A seed's lambdas hold the same ``train_key`` and ``ide_member`` (`init_single` draws both
    from the seed's key alone), so the lambda axis gets one copy, unbatched: every step of the
    seed then gathers one minibatch for all its lambdas and computes their logits in one matmul
    (about 2x faster on CPU than per-lambda draws of the same rows).
    """

    def one_seed(st):  # leaves (L, ...)
        one = lambda st_l: chunk_single(
            st_l,
            inputs,
            first_epoch,
            rates,
            settings=settings,
            chunk_epochs=chunk_epochs,
            train_key=st.train_key[0],
            ide_member=st.ide_member[0],
        )
        return jax.vmap(one)(st)

    return jax.vmap(one_seed)(state)


@program_cache.jit
def tune_results(state: State) -> dict:
    """The heads and scores of finished states (S, L), and the best lambda per seed.

    Returns ``head_metric`` / ``head_sfit`` (the heads chosen by the validation metric and by
    SFit), ``best_metric``, ``best_sfit``, ``biased`` (d,) bool, ``delta`` (C, d) of the
    reference head, each with leading (S, L) axes, and ``head_wga_selected`` /
    ``head_sfit_selected`` (S, C, d): the best over epochs and lambdas by each criterion.
    """

    def select(head, score):  # head leaves (S, L, ...), score (S, L) -> (S, ...)
        best = jnp.argmax(score, axis=1)
        return jax.tree_util.tree_map(
            lambda x: jnp.take_along_axis(x, best.reshape((-1,) + (1,) * (x.ndim - 1)), 1)[:, 0],
            head,
        )

    return dict(
        head_metric=state.head_metric,
        head_sfit=state.head_sfit,
        best_metric=state.best_metric,
        best_sfit=state.best_sfit,
        biased=state.biased,
        delta=state.delta,
        head_wga_selected=select(state.head_metric, state.best_metric),
        head_sfit_selected=select(state.head_sfit, state.best_sfit),
    )


def tune(
    keys: jax.Array,
    thresholds: jnp.ndarray,
    inputs: Inputs,
    rates: erm.Rates,
    *,
    settings: Settings,
) -> dict:
    """Every tuning epoch of every seed (S,) and threshold (L,) as one chunk: `tune_results`
    plus the per-epoch histories ``metric_history`` / ``sfit_history`` (S, L, E).

    The programs are those of a run in chunks (`tune_chunk` with fewer epochs, chained), so its
    numbers equal these exactly.
    """
    state = tune_init(keys, thresholds, inputs, settings=settings)
    first = jnp.asarray(0, jnp.int32)
    state, history = tune_chunk(
        state, inputs, first, rates, settings=settings, chunk_epochs=settings.epochs
    )
    return {**tune_results(state), **history}


def reference_head(data: FeatureSet, config: ml_collections.ConfigDict) -> heads.LinearHead:
    """The "current" head: the backbone's head.npz, else the ERM recipe's head on train
    (`erm.fit_heads_split` with the key 0: its batches, epochs and class balancing)."""
    if data.has_head:
        return heads.from_numpy(data.head_weight, data.head_bias, data.dtype)
    fitted = erm.fit_heads_split(data.train, config.erm, data, jax.random.key(0)[None])
    return jax.tree_util.tree_map(lambda x: x[0], fitted)


def check(config: ml_collections.ConfigDict, data: FeatureSet) -> dict:
    """Raises ValueError naming the first bad field; returns the resolved selection metric."""
    checks.check_grid("neurontune", config, "thresholds", "finite")
    checks.check_choice("neurontune", config, "activation", ACTIVATIONS)
    checks.check_choice("neurontune", config, "tune_split", TUNE_SPLITS)
    checks.check_choice("neurontune", config, "init", ("current", "zeros"))
    checks.check_choice("neurontune", config, "optimizer", optim.OPTIMIZERS)
    checks.check_value("neurontune", config, "learning_rate", "positive")
    for name in ("batch_size", "batches_per_epoch", "epochs", "chunk_epochs"):
        checks.check_value("neurontune", config, name, "positive_int")
    checks.check_value("neurontune", config, "l2", "non_negative")
    if not data.has_head:  # the current head is the ERM recipe's head on train
        erm.check(config.erm, data)
    return {"selection_metric": checks.check_selection("neurontune", config, data)}


def run(
    data: FeatureSet,
    config: ml_collections.ConfigDict,
    keys: jax.Array,
    *,
    loop: epoch_loop.Options = epoch_loop.PLAIN,
) -> MethodResult:
    """Rows "neurontune_wga" and "neurontune_sfit" (heads (S, C, d)); ``info``: the outputs of
    `tune` (biased dims, deltas, histories) for inspection.

    The tuning epochs run in chunks of `config.chunk_epochs` (`epoch_loop.run`: a bar with the
    current validation metric, checkpoints under `loop.checkpoint_dir`, resume from them), with
    the numbers of one `tune` call; ``resumed_from``: the epoch it resumed from.
    """
    metric = config.selection_metric
    val = data.val.to_arrays()
    values, rows = class_sorted_activations(
        activation_values(np.asarray(data.val.features, data.dtype), config.activation),
        data.val.labels,
        data.num_classes,
        data.dtype,
        row_buckets=data.val.row_buckets,
    )
    train = data.train.to_arrays() if config.tune_split == "train" else None  # else unread
    inputs = Inputs(
        reference=reference_head(data, config),
        sorted_values=to_device(values, data.dtype),
        sorted_rows=to_device(rows, jnp.int32),
        val_features=val.features,
        val_labels=val.labels,
        val_groups=val.groups,
        train_features=None if train is None else train.features,
        train_labels=None if train is None else train.labels,
    )
    settings = Settings(
        num_classes=data.num_classes,
        num_groups=data.num_groups,
        metric=metric,
        tune_split=config.tune_split,
        init=config.init,
        optimizer=config.optimizer,
        batch_size=int(config.batch_size),
        batches_per_epoch=int(config.batches_per_epoch),
        epochs=int(config.epochs),
    )
    rates = erm.Rates(float(config.learning_rate), float(config.l2))
    thresholds = to_device(config.thresholds, data.dtype)
    done = epoch_loop.run(
        lambda: tune_init(keys, thresholds, inputs, settings=settings),
        lambda state, first_epoch: tune_chunk(
            state, inputs, first_epoch, rates, settings=settings, chunk_epochs=config.chunk_epochs
        ),
        epochs=settings.epochs,
        chunk_epochs=config.chunk_epochs,
        options=loop,
        epoch_axis=2,
        status=lambda last: {f"val {metric}": f"{last['metric_history'].mean():.4f}"},
    )
    out = {**tune_results(done.state), **done.history}
    out["thresholds"] = np.asarray(config.thresholds, data.dtype)
    rows_out = {
        "neurontune_wga": out["head_wga_selected"],
        "neurontune_sfit": out["head_sfit_selected"],
    }
    return MethodResult(
        rows=rows_out,
        info=out,
        resumed_from=done.resumed_from,
        curves=epoch_curves(curves(out)),
    )


def curves(out: dict) -> list[dict[str, np.ndarray]]:
    """Per seed, per threshold: the selection metric on val, val SFit and the tuning loss per
    epoch (``threshold=<t>/<tag>``) of `run`'s ``info``."""
    tags = {
        "metric_history": "val_selection",
        "sfit_history": "val_sfit",
        "loss_history": "tune_loss",
    }
    thresholds = np.asarray(out["thresholds"]).ravel()
    seeds = []
    for s in range(np.asarray(out["metric_history"]).shape[0]):
        per_epoch = {}
        for key, tag in tags.items():
            if key in out:
                for i, threshold in enumerate(thresholds):
                    per_epoch[f"threshold={threshold:g}/{tag}"] = np.asarray(out[key])[s, i]
        seeds.append(per_epoch)
    return seeds


def streams_train(config: ml_collections.ConfigDict) -> bool:
    """NeuronTune puts train on the device to tune on it or fit its ERM head
    (`hsfm_jax.methods`)."""
    del config
    return False


def group_use(config: ml_collections.ConfigDict) -> dict[str, dict[str, bool]]:
    """Which rows read train / val group labels, for a resolved config (the SFit row never)."""
    select = config.selection_metric == "wga"
    return {
        "neurontune_wga": {"train": False, "val": select},
        "neurontune_sfit": {"train": False, "val": False},
    }
