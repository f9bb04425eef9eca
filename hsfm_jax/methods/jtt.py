"""Just Train Twice (JTT; Liu et al., ICML 2021) as a linear head on frozen features.

Paper Alg. 1, with the head in place of the network:

1. identification: an ERM head trained for T steps on train; its error set
   ``E = {i : argmax f_T(x_i) != y_i}`` (the official ``process_training.py`` marks exactly the
   train points the epoch-T model misclassifies, ``wrong_1_times``);
2. final model: a fresh head trained by ERM with the examples of E upweighted by lambda_up
   (the official code upsamples them; full batch this is the weight lambda_up in the mean loss,
   minibatch the sampling probability, `erm.fit`'s ``sample_weight``).

Both stages use the same optimizer, learning rate and weight decay (as the official commands);
no group label of train is read. Hyperparameters, and the final model's early stopping, are
chosen by the validation metric (the paper: "we tune the algorithm hyperparameters [T and
lambda_up] and model hyperparameters (such as early stopping) based on the worst-group accuracy
on the validation set"): every grid point keeps its best checkpoint, scored every ``eval_every``
steps, and the best grid point wins (row ``"jtt"``).

The identification heads for the whole T grid come from one chain of `erm.fit` runs (the head
at T_k continues to T_{k+1}), traced as one loop (`erm.fit_chain`); each final model is `erm.fit` run chunk by chunk between
checkpoints. An optimizer's state (momentum, Adam moments) restarts at each of these joins, so
the chain is exactly one run only for plain SGD ("sgd"). The (T x lambda_up) grid and the seeds
are ``vmap``ped in one program; a full-batch run is deterministic, so it is computed once and
repeated per seed.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hsfm_jax.core import checks, heads, optim, scaling, selection
from hsfm_jax.data import buckets
from hsfm_jax.data.features import FeatureSet, to_device
from hsfm_jax.methods import common, erm
from hsfm_jax.methods.contract import MethodResult
from hsfm_jax.runtime import epoch_loop, program_cache

NAME = "jtt"


def default_config() -> ml_collections.ConfigDict:
    """JTT defaults (Liu et al., 2021; official repo anniesch/jtt)."""
    config = ml_collections.ConfigDict()
    # T, in optimizer steps of the identification head. The official commands' T is in epochs of
    # a whole network: Waterbirds 60 of 300, CelebA 1 of 50, MultiNLI 2 of 5 (README), an
    # early-stopped fraction of the final run; here 2.5-10% of `steps`.
    config.identification_steps_grid = (25, 50, 100)
    # lambda_up: the official generate_downstream.py sweeps {20, 50, 100} (Waterbirds 100,
    # CelebA 50); its NLP runs use 4 (MultiNLI) and 6 (CivilComments).
    config.upweight_grid = (20.0, 50.0, 100.0)
    config.optimizer = "sgd"  # plain SGD: the step-chunked chain is exactly one run
    # For standardized backbone-sized features (d ~ 2048); small unit-scale problems
    # (hsfm_jax.data.synthetic, d = 32) want a larger step.
    config.learning_rate = 1e-3
    config.steps = 1000  # final model's steps
    config.batch_size = 128  # 0: full batch
    config.l2 = 1e-4  # weight decay of both heads (official: 1.0 / 0.1 for whole networks)
    config.l2_bias = True  # PyTorch weight_decay penalizes the bias too
    config.eval_every = 50  # final-model steps between checkpoints (0: final head only)
    config.standardize = True  # train on standardized features (folded into the head)
    config.selection_metric = "auto"  # WGA with groups, else mean acc (label-free: worst-class)
    return config


_FIELDS = tuple(default_config().keys())


def check(config: ml_collections.ConfigDict, data: FeatureSet) -> dict:
    """Raises ``ValueError`` naming ``jtt.<field>`` for a bad setting."""
    checks.check_known(NAME, config, _FIELDS)
    checks.check_grid(NAME, config, "identification_steps_grid", "positive_int")
    grid = list(config.identification_steps_grid)
    if len(set(grid)) != len(grid):
        raise ValueError(f"{NAME}.identification_steps_grid must not repeat a value, got {grid}")
    checks.check_grid(NAME, config, "upweight_grid", "positive")
    checks.check_choice(NAME, config, "optimizer", optim.OPTIMIZERS)
    checks.check_value(NAME, config, "learning_rate", "positive")
    checks.check_value(NAME, config, "steps", "positive_int")
    checks.check_value(NAME, config, "batch_size", "non_negative_int")
    checks.check_value(NAME, config, "l2", "non_negative")
    for field in ("l2_bias", "standardize"):
        checks.check_bool(NAME, config, field)
    checks.check_eval_every(NAME, config, "steps")
    return {"selection_metric": checks.check_selection(NAME, config, data)}


def error_set(head: heads.LinearHead, features: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """(N,) bool: the examples `head` misclassifies (the error set E of Alg. 1); never a
    padding row (label -1, `hsfm_jax.data.buckets`)."""
    return (heads.predict(head, features) != labels) & buckets.valid(labels)


def upweights(errors: jnp.ndarray, upweight: jnp.ndarray) -> jnp.ndarray:
    """(N,) example weights: lambda_up on the error set, 1 elsewhere."""
    return jnp.where(errors, upweight, 1.0)  # the dtype of `upweight`


class Settings(NamedTuple):
    """Static settings of a JTT run (changing one compiles a new program).

    Attributes:
      identification_steps: the increasing T values; num_groups: of the data; metric: the
        selection metric; eval_every: final-model steps between checkpoints (0: the last only).
      recipe: `erm.Recipe` of both stages (``steps``: the final model's).
    """

    identification_steps: tuple[int, ...]
    num_groups: int
    metric: str
    eval_every: int
    recipe: erm.Recipe


class Grid(NamedTuple):
    """The traced values of a JTT run (a pytree): ``upweight`` (U,) the lambda_up values and
    ``rates`` (`erm.Rates`, both stages)."""

    upweight: jnp.ndarray
    rates: erm.Rates


def from_config(config: ml_collections.ConfigDict, data: FeatureSet) -> tuple[Settings, Grid]:
    """The `Settings` and `Grid` (on the device, in the data's dtype) of a checked JTT config."""
    settings = Settings(
        identification_steps=tuple(sorted(int(t) for t in config.identification_steps_grid)),
        num_groups=data.num_groups,
        metric=config.selection_metric,
        eval_every=int(config.eval_every),
        recipe=erm.Recipe(
            num_classes=data.num_classes,
            optimizer=config.optimizer,
            steps=int(config.steps),
            batch_size=int(config.batch_size),
            l2_bias=bool(config.l2_bias),
        ),
    )
    on_device = lambda values: to_device(values, data.dtype)
    rates = erm.Rates(on_device(config.learning_rate), on_device(config.l2))
    return settings, Grid(upweight=on_device(config.upweight_grid), rates=rates)


def jtt_single(key: jax.Array, inputs: common.Inputs, grid: Grid, *, settings: Settings) -> dict:
    """JTT for one seed over the whole (T x lambda_up) grid.

    Args:
      key: PRNG key (minibatch draws).
      inputs: train (standardized when the run standardizes), the selection split and the
        scaler to fold (`common.Inputs`).

    Returns:
      dict with ``identification_head`` (T, C, d) on raw features, ``errors`` (T, N) bool, and
      per grid point (P = T * U, T slowest) ``head`` (P, C, d) best checkpoint on raw features,
      ``score`` (P,), ``checkpoint`` (P,), ``scores`` (P, K).
    """
    s, recipe = settings, settings.recipe
    features, labels = inputs.features, inputs.labels
    k_id, k_final = jax.random.split(key)

    def fit(k, steps, init, sample_weight=None):
        return erm.fit(
            features,
            labels,
            k,
            recipe._replace(steps=steps),
            grid.rates,
            init=init,
            sample_weight=sample_weight,
        )

    zero = heads.zeros(recipe.num_classes, features.shape[1], features.dtype)
    segments = tuple(np.diff((0, *s.identification_steps)))
    id_heads = erm.fit_chain(features, labels, k_id, recipe, grid.rates, segments=segments)
    errors = jax.vmap(lambda h: error_set(h, features, labels))(id_heads)  # (T, N)
    weights = jax.vmap(lambda e: jax.vmap(lambda u: upweights(e, u))(grid.upweight))(errors)
    weights = weights.reshape(-1, features.shape[0])  # (P, N)

    every = s.eval_every or recipe.steps
    raw = lambda head: scaling.fold_scaler(head, inputs.mean, inputs.scale)
    score_of = functools.partial(
        selection.score,
        split=inputs.select,
        num_classes=recipe.num_classes,
        num_groups=s.num_groups,
        metric=s.metric,
    )

    def final(sample_weight):
        advance = lambda head, k: fit(k, every, head, sample_weight)
        out = common.best_over_checkpoints(
            advance,
            zero,
            jax.random.split(k_final, recipe.steps // every),
            head_of=raw,
            score_of=score_of,
            loss_of=functools.partial(common.loss, split=inputs.select),
        )
        del out["state"]
        return out

    out = jax.vmap(final)(weights)
    out["identification_head"] = jax.vmap(raw)(id_heads)
    out["errors"] = errors
    return out


@program_cache.jit(static_argnames=("settings",))
def run_grid(keys: jax.Array, inputs: common.Inputs, grid: Grid, *, settings: Settings) -> dict:
    """`jtt_single` vmapped over seeds (S,), then the best grid point per seed; `inputs` on raw
    features (standardized here, in the program).

    Returns the dict of `jtt_single` with a leading (S,) axis, plus ``selected_head``
    (S, C, d) and ``selected`` (S,) the chosen grid index.
    """
    inputs = common.standardized(inputs)
    single = lambda k: jtt_single(k, inputs, grid, settings=settings)
    return common.select_best(jax.vmap(single)(keys))


def run(
    data: FeatureSet,
    config: ml_collections.ConfigDict,
    keys: jax.Array,
    *,
    loop: epoch_loop.Options = epoch_loop.PLAIN,
) -> MethodResult:
    """Row "jtt": the best grid point's best checkpoint per seed, heads (S, C, d).

    Returns:
      `MethodResult` whose ``info`` is the output of `run_grid` (error sets, identification
      heads, every grid point's scores; leading seed axis; with full batch the one deterministic
      run repeated S times) plus ``grid`` (``identification_steps`` and ``upweight`` per grid
      point, (P,) each). `loop` is unused (no epoch loop).
    """
    del loop
    settings, grid = from_config(config, data)
    deterministic = settings.recipe.batch_size == 0
    inputs = common.inputs(data, config.standardize)
    out = run_grid(keys[:1] if deterministic else keys, inputs, grid, settings=settings)
    if deterministic:
        out = common.repeat_seeds(out, keys.shape[0])
    out["errors"] = np.asarray(out["errors"])[..., : data.train.num_examples]  # no padding row
    t_mesh, u_mesh = np.meshgrid(
        settings.identification_steps, np.asarray(config.upweight_grid, data.dtype), indexing="ij"
    )
    out["grid"] = {"identification_steps": t_mesh.ravel(), "upweight": u_mesh.ravel()}
    curves = common.checkpoint_curves(out, int(config.eval_every), int(config.steps))
    return MethodResult(rows={NAME: out["selected_head"]}, info=out, curves=curves)


streams_train = common.streams_train


def group_use(config: ml_collections.ConfigDict) -> dict[str, dict[str, bool]]:
    """Which rows read train / val group labels, for a resolved config: val when selecting by WGA."""
    return common.one_row_group_use(NAME, config, train=False)
