"""feature_export: the only PyTorch code. Frozen backbone -> feature directory (hsfm_jax.data.features)."""
