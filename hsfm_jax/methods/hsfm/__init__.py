"""HSFM: the algorithm, its config adapter, the hard set and the meta-gradients."""
