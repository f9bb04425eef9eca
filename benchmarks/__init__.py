"""Benchmarks of hsfm_jax against a PyTorch reference of the released HSFM recipe."""
