"""The linear classifier head: logits = features @ weight.T + bias.

The weight is stored (C, d), as PyTorch's nn.Linear stores it and as the exported head.npz
holds it; on XLA:CPU this layout was measured much faster inside unrolled loops than (d, C).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import struct

from hsfm_jax.core import linalg


class LinearHead(struct.PyTreeNode):
    """A linear head.

    Attributes:
      weight: (C, d) float.
      bias: (C,) float.
    """

    weight: jnp.ndarray
    bias: jnp.ndarray

    @property
    def num_classes(self) -> int:
        return self.weight.shape[-2]

    @property
    def feature_dim(self) -> int:
        return self.weight.shape[-1]


def apply(head: LinearHead, features: jnp.ndarray) -> jnp.ndarray:
    """Logits (N, C) of `features` (N, d)."""
    return linalg.matmul_nt(features, head.weight) + head.bias


def zeros(num_classes: int, feature_dim: int, dtype=jnp.float32) -> LinearHead:
    """An all-zero head: (C, d) weight and (C,) bias."""
    return LinearHead(
        jnp.zeros((num_classes, feature_dim), dtype), jnp.zeros((num_classes,), dtype)
    )


def from_numpy(weight: np.ndarray, bias: np.ndarray, dtype=jnp.float32) -> LinearHead:
    """A head from host arrays (e.g. the exported head.npz)."""
    return LinearHead(jnp.asarray(weight, dtype), jnp.asarray(bias, dtype))


def predict(head: LinearHead, features: jnp.ndarray) -> jnp.ndarray:
    """Predicted classes (N,) int32."""
    return jnp.argmax(apply(head, features), axis=-1).astype(jnp.int32)
