"""Shared fixtures: small synthetic feature directories written in the on-disk format."""

import pytest

from hsfm_jax import synthetic

SMALL = dict(
    num_core=4, num_spurious=4, num_noise=4, num_train=600, val_per_group=20, test_per_group=50
)


@pytest.fixture(scope="session")
def small_features_dir(tmp_path_factory):
    """A small synthetic feature directory (2 classes, 4 groups, d=12)."""
    path = tmp_path_factory.mktemp("features") / "synthetic_small"
    synthetic.write(path, **SMALL)
    return path


@pytest.fixture(scope="session")
def tiny_features_dir(tmp_path_factory):
    """A tiny synthetic feature directory (200 train, d=12), shared by the sweep tests. Their
    synthetic.py config prepares it: the first sweep remakes it with that config's arguments."""
    path = tmp_path_factory.mktemp("features") / "synthetic_tiny"
    synthetic.write(
        path,
        num_train=200,
        val_per_group=20,
        test_per_group=20,
        num_core=4,
        num_spurious=4,
        num_noise=4,
    )
    return path
