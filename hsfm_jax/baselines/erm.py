"""ERM linear head on frozen features (the "Base (ERM)" rows of the HSFM paper's tables).

`fit` trains a linear head with cross-entropy (+ optional L2 on the weight) with an optax
optimizer, full batch or minibatch (optionally class-balanced sampling). It is one jitted
`lax.scan`, a pure function of (data, key), so it vmaps over seeds.

As a method (`hsfm_jax.methods`): `default_config`, `check`, `run` give the "erm" row, and
`fit_heads` is the recipe other methods start from (HSFM's initial head without head.npz).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from hsfm_jax import checks, heads, losses, optim
from hsfm_jax.features import FeatureSet, SplitArrays, float_dtype


def _objective(head, features, labels, weights, l2, l2_bias=False, feature_mask=None):
    if feature_mask is not None:
        features = features * feature_mask
    per_example = losses.per_example_cross_entropy(
        logits=heads.apply(head, features), labels=labels
    )
    data_loss = jnp.sum(per_example * weights) / jnp.sum(weights)
    penalty = jnp.sum(head.weight**2) + (jnp.sum(head.bias**2) if l2_bias else 0.0)
    return data_loss + 0.5 * l2 * penalty


@functools.partial(
    jax.jit,
    static_argnames=(
        "num_classes",
        "optimizer",
        "steps",
        "batch_size",
        "class_balanced",
        "lr_schedule",
        "l2_bias",
    ),
)
def fit(
    features: jnp.ndarray,
    labels: jnp.ndarray,
    key: jax.Array,
    *,
    num_classes: int,
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    steps: int = 1000,
    l2: float = 0.0,
    batch_size: int = 0,
    class_balanced: bool = False,
    init: heads.LinearHead | None = None,
    lr_schedule: str = "constant",
    l2_bias: bool = False,
    sample_weight: jnp.ndarray | None = None,
    feature_mask: jnp.ndarray | None = None,
) -> heads.LinearHead:
    """Trains a linear head.

    Args:
      features: (N, d) float.
      labels: (N,) int in [0, C).
      key: PRNG key for minibatch sampling (unused in full batch).
      num_classes: C.
      optimizer: name understood by `hsfm_jax.optim.make`.
      learning_rate: step size.
      steps: number of optimizer steps.
      l2: coefficient of 0.5 * l2 * ||W||^2 (bias not penalized).
      batch_size: 0 for full batch; else examples drawn per step.
      class_balanced: weight (full batch) or sample (minibatch) classes equally.
      init: starting head; zeros when None.
      lr_schedule: "constant", or "cosine" (cosine decay to 0 over `steps`, as PyTorch's
        CosineAnnealingLR with T_max=steps stepped once per step).
      l2_bias: also penalize the bias (as PyTorch SGD's weight_decay does for all parameters).
      sample_weight: optional (N,) non-negative weight per example (0 leaves it out); multiplies
        the class-balancing weight and, in minibatch mode, the sampling probability.
      feature_mask: optional (d,) 0/1 mask: the head sees `features * feature_mask`, and the
        returned head has the masked columns zeroed.

    Returns:
      The trained `LinearHead` (weight (C, d), bias (C,)).
    """
    n, d = features.shape
    head = heads.zeros(num_classes, d, features.dtype) if init is None else init
    base_weight = (
        jnp.ones((n,), features.dtype)
        if sample_weight is None
        else jnp.asarray(sample_weight, features.dtype)
    )
    counts = jnp.zeros((num_classes,), features.dtype).at[labels].add(base_weight)
    example_weight = (
        base_weight / jnp.maximum(counts[labels], 1e-12) if class_balanced else base_weight
    )
    if lr_schedule == "constant":
        schedule = learning_rate
    elif lr_schedule == "cosine":
        schedule = optax.cosine_decay_schedule(learning_rate, steps)
    else:
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    tx = optim.make(optimizer, schedule)
    grad_fn = jax.grad(_objective)

    def step(carry, step_key):
        head, opt_state = carry
        if batch_size:
            p = example_weight / jnp.sum(example_weight)
            idx = jax.random.choice(step_key, n, (batch_size,), replace=True, p=p)
            grads = grad_fn(
                head, features[idx], labels[idx], jnp.ones((batch_size,)), l2, l2_bias, feature_mask
            )
        else:
            grads = grad_fn(head, features, labels, example_weight, l2, l2_bias, feature_mask)
        updates, opt_state = tx.update(grads, opt_state, head)
        return (jax.tree_util.tree_map(jnp.add, head, updates), opt_state), None

    (head, _), _ = jax.lax.scan(step, (head, tx.init(head)), jax.random.split(key, steps))
    if feature_mask is not None:
        head = head.replace(weight=head.weight * feature_mask)
    return head


# ------------------------------------------------------------------------- the method contract


def default_config() -> ml_collections.ConfigDict:
    """ERM linear head on train features."""
    return ml_collections.ConfigDict(
        dict(
            optimizer="adam",
            learning_rate=1e-3,
            steps=1000,
            epochs=0,  # > 0: steps = epochs * ceil(N_train / batch_size) instead of `steps`
            l2=0.0,
            batch_size=0,  # 0: full batch
            class_balanced=False,
        )
    )


def check(config: ml_collections.ConfigDict, data: FeatureSet, prefix: str = "erm") -> dict:
    """Raises ValueError naming the first bad field of an ERM config; nothing to resolve."""
    checks.check_choice(prefix, config, "optimizer", optim.OPTIMIZERS)
    checks.check_value(prefix, config, "learning_rate", "positive")
    checks.check_value(prefix, config, "epochs", "non_negative_int")
    checks.check_value(
        prefix, config, "steps", "non_negative_int" if config.epochs > 0 else "positive_int"
    )
    checks.check_value(prefix, config, "l2", "non_negative")
    checks.check_value(prefix, config, "batch_size", "non_negative_int")
    del data
    return {}


def num_steps(config: ml_collections.ConfigDict, num_train: int) -> int:
    """`config.steps`, or `epochs * ceil(N_train / batch_size)` (one step per epoch in full batch)
    when `config.epochs` > 0, as the paper states head training in epochs (Sec. 8.2)."""
    if config.get("epochs", 0) > 0:
        return config.epochs * (-(-num_train // config.batch_size) if config.batch_size else 1)
    return config.steps


def fit_heads(
    train: SplitArrays, config: ml_collections.ConfigDict, keys: jax.Array, *, num_classes: int
) -> heads.LinearHead:
    """ERM heads (S, C, d): one per key when minibatched, else one deterministic head (1, C, d)."""
    one = lambda key: fit(
        train.features,
        train.labels,
        key,
        num_classes=num_classes,
        optimizer=config.optimizer,
        learning_rate=config.learning_rate,
        steps=num_steps(config, train.labels.shape[0]),
        l2=config.l2,
        batch_size=config.batch_size,
        class_balanced=config.class_balanced,
    )
    return jax.vmap(one)(keys if config.batch_size else keys[:1])


def run(
    data: FeatureSet, config: ml_collections.ConfigDict, keys: jax.Array
) -> dict[str, heads.LinearHead]:
    """{"erm": heads (S, C, d)}, or one head (1, C, d) in full batch (deterministic)."""
    train = data.train.to_arrays(float_dtype())
    return {"erm": fit_heads(train, config, keys, num_classes=data.num_classes)}


def group_use(config: ml_collections.ConfigDict) -> dict[str, dict[str, bool]]:
    """Which rows read train / val group labels: none (no selection, class labels only)."""
    del config
    return {"erm": {"train": False, "val": False}}
