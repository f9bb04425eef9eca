"""HSFM's learning rates and the scale of the features: rates in feature units, the scale line.

HSFM's rates are not scale-free. With features multiplied by s, the meta optimizer's (Adam) step
on the support embeddings H stays ~`meta_lr` in feature units (it should grow like s), the head
optimizer's step stays ~`head_lr` in weight units (it should shrink like 1/s) and the inner SGD
step on the head grows like s² (its rate should shrink like 1/s²). The paper's rates (Tables
11-13) were tuned on its ResNet-50 features.

`hsfm.rate_units` says in which units the configured rates are:

- ``"paper"``: as written, whatever the features' scale (the paper configs' default).
- ``"feature_rms"``: relative to the features' scale. With r the train features' RMS norm
  (sqrt of the mean of ||x||² over train rows) and r_ref = ``hsfm.rates_rms`` (the RMS norm the
  configured rates were set for; `REFERENCE_RMS` by default), the run is that of the configured
  rates on the features
  divided by c = r / r_ref, with its heads, support embeddings and edit norms mapped back
  (weights / c, H × c). For the head's weight and H this is the configured rates scaled as

      meta_lr × (r / r_ref),   head_lr × (r_ref / r),   inner_lr × (r_ref / r)²,
      meta_grad_clip × (r_ref / r)

  (the clip norm bounds a gradient with respect to H, which scales like 1/r), while the bias
  keeps its logit units (a rate scaled like the weight's would make the bias move s times slower
  on features × s, breaking the symmetry). So the run on features × s gives the same
  predictions and accuracies and H and its edit × s (tests/test_hsfm_scale.py, float64).

r is a norm, not a per-entry RMS, because the head's steps act through x·w: the inner SGD
step changes a logit by ~inner_lr ||x||², so 32-d unit-entry features (||x|| ~ 5) need a far
larger inner_lr than 1280-d ones (||x|| ~ 35) with entries of the same size.

r_ref = 35: the RMS norm of the frozen ImageNet MobileNetV2 features of Fashion-MNIST dominoes
(the mnist_fashion_dominoes_mobilenet_v2_pretrained config: 34.8; 1280-d, per-entry RMS 0.97), on which Table 11's Dominoes rates
match DFR (docs/hsfm_tuning.md). A rate in "feature_rms" units is the paper-unit rate for
features of that RMS norm. ResNet-50's pooled 2048-d features, which the paper's rates were
tuned on, are of the same order (entries of RMS ~0.5-1), but none exist on this project's
machines to measure.

A config whose rates were set on other features says so in ``hsfm.rates_rms``: the synthetic and
own_features configs' rates were set on the synthetic problem's standardized features (RMS norm
4.6), so their runs there neither warn nor rescale, and a user's features far from that scale
(e.g. standardized 2048-d, RMS norm 45) get the warning.

Every HSFM run logs a feature-scale line (train RMS norm, each class's mean-feature norm, rate
units) and writes it to results.json (``feature_scale``); with "paper" units and an RMS more
than `WARN_FACTOR` away from r_ref it warns that the rates may not suit the features.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from absl import logging

from hsfm_jax.core import heads
from hsfm_jax.data.features import FeatureSet
from hsfm_jax.methods.hsfm import algorithm as hsfm

RATE_UNITS = ("paper", "feature_rms")
REFERENCE_RMS = 35.0
WARN_FACTOR = 4.0
_BLOCK_ROWS = 65536


class FeatureScale(NamedTuple):
    """The train features' scale.

    Attributes:
      train_rms: RMS norm of the train feature vectors, sqrt(mean over rows of ||x||²).
      class_mean_norm: (C,) norm of each class's mean train feature vector.
    """

    train_rms: float
    class_mean_norm: tuple[float, ...]


def measure(data: FeatureSet) -> FeatureScale:
    """The scale of `data.train` (read in blocks from the host, in float64)."""
    split = data.train
    squares = 0.0
    sums = np.zeros((data.num_classes, data.feature_dim))
    for start in range(0, split.num_examples, _BLOCK_ROWS):
        block = np.asarray(split.features[start : start + _BLOCK_ROWS], np.float64)
        squares += float(np.sum(np.square(block)))
        labels = split.labels[start : start + _BLOCK_ROWS]
        for c in range(data.num_classes):
            sums[c] += block[labels == c].sum(axis=0)
    counts = np.bincount(split.labels, minlength=data.num_classes)
    means = sums / np.maximum(counts, 1)[:, None]
    rms = float(np.sqrt(squares / split.num_examples))
    return FeatureScale(rms, tuple(float(v) for v in np.linalg.norm(means, axis=1)))


def factor(rate_units: str, scale: FeatureScale, rates_rms: float = REFERENCE_RMS) -> float:
    """c: the features are divided by c before the run (1.0 for "paper" units); `rates_rms` is
    r_ref, the train RMS norm the configured rates were set for."""
    if rate_units == "paper":
        return 1.0
    if not scale.train_rms > 0:
        raise ValueError("hsfm.rate_units='feature_rms' but the train features are all zero")
    return scale.train_rms / rates_rms


def effective_rates(rates: dict[str, float], c: float) -> dict[str, float]:
    """The paper-unit rates of the head's weight and of H that `rates` ({`hsfm.Rates` field:
    value}, head_lr resolved) are on features whose RMS is c × `REFERENCE_RMS`."""
    return {
        "inner_lr": rates["inner_lr"] / c**2,
        "meta_lr": rates["meta_lr"] * c,
        "head_lr": rates["head_lr"] / c,
        "meta_grad_clip": rates["meta_grad_clip"] / c,
    }


def report(rate_units: str, scale: FeatureScale, rates_rms: float = REFERENCE_RMS) -> dict:
    """The ``feature_scale`` entry of results.json; logs it, and warns when the configured
    "paper" rates meet features far from the scale they were set for (`rates_rms`)."""
    ratio = scale.train_rms / rates_rms
    logging.info(
        "hsfm: feature scale: train rms norm %.4g (reference %.4g, ratio %.3g), class mean norms %s; "
        "rate units %r",
        scale.train_rms,
        rates_rms,
        ratio,
        ", ".join(f"{v:.4g}" for v in scale.class_mean_norm),
        rate_units,
    )
    far = rate_units == "paper" and not 1 / WARN_FACTOR <= ratio <= WARN_FACTOR
    if far:
        logging.warning(
            "hsfm: the train features' rms norm is %.3g, %.3gx the scale the paper-unit rates "
            "suit (~%g); with hsfm.rate_units='paper' the rates may not suit these "
            "features: try --config.hsfm.rate_units=feature_rms or a rate grid (hsfm.grid)",
            scale.train_rms,
            ratio,
            rates_rms,
        )
    return {
        "train_rms": scale.train_rms,
        "class_mean_norm": list(scale.class_mean_norm),
        "reference_rms": rates_rms,
        "rate_units": rate_units,
        "far_from_reference": far,
    }


def data_to_unit(arrays: hsfm.Data, c: float) -> hsfm.Data:
    """Every split's features / c: the run in "feature_rms" units (c = 1: unchanged)."""
    if c == 1.0:
        return arrays
    scale = lambda split: None if split is None else split.replace(features=split.features / c)
    return arrays.replace(
        train=scale(arrays.train),
        val=scale(arrays.val),
        test=scale(arrays.test),
        select=scale(arrays.select),
    )


def head_to_unit(head: heads.LinearHead, c: float) -> heads.LinearHead:
    """The head with the same logits on features / c (weight × c)."""
    return head if c == 1.0 else head.replace(weight=head.weight * c)


def from_unit(result: hsfm.Result, c: float) -> hsfm.Result:
    """A run on features / c mapped back to the features: weights / c, H and edits × c."""
    if c == 1.0:
        return result
    unscale = lambda h: h.replace(weight=h.weight / c)
    history = dict(result.history)
    history["edit_norm"] = history["edit_norm"] * c
    return result.replace(
        best_head=unscale(result.best_head),
        last_head=unscale(result.last_head),
        support=result.support * c,
        history=history,
    )
