"""The compute dtype is a property of the data: `features.with_dtype` (the config's ``float64``)
makes every registered method compute and return its heads in that dtype."""

import jax
import numpy as np
import pytest

from experiments.configs import synthetic as synthetic_config
from hsfm_jax import methods
from hsfm_jax.data import features


def _small_config(features_dir):
    config = synthetic_config.get_config()
    config.features_dir = str(features_dir)
    config.erm.steps = 20
    config.dfr.variants = ("dfr", "tr_dfr", "paper_dfr")
    config.dfr.c_grid = (1.0, 0.1)
    config.dfr.num_retrains = 2
    config.dfr.tr_num_retrains = 2
    config.dfr.paper.epochs = 10
    config.neurontune.epochs = 2
    config.neurontune.batches_per_epoch = 5
    config.group_dro.steps = 20
    config.group_dro.eval_every = 10
    config.jtt.identification_steps_grid = (5, 10)
    config.jtt.steps = 20
    config.jtt.eval_every = 10
    config.afr.steps = 20
    config.afr.eval_every = 10
    config.hsfm.epochs = 2
    config.hsfm.chunk_epochs = 1
    return config


def test_every_registered_method_computes_in_float64(small_features_dir):
    dtype = np.float64
    config = _small_config(small_features_dir)
    names = list(methods.REGISTRY)
    keys = jax.random.split(jax.random.key(0), 2)
    with jax.enable_x64(True):
        data = features.with_dtype(features.load(small_features_dir), dtype)
        assert data.dtype == dtype and data.val.to_arrays().features.dtype == dtype
        resolved = methods.check(config, names, data)
        for name in names:
            result = methods.run(name, data, methods.resolve(config, name, resolved[name]), keys)
            assert result.rows, name
            for row, head in result.rows.items():
                for leaf in jax.tree_util.tree_leaves(head):
                    assert leaf.dtype == dtype, (name, row, leaf.dtype)
                    assert np.all(np.isfinite(np.asarray(leaf))), (name, row)


def test_float64_needs_x64(small_features_dir):
    data = features.load(small_features_dir)
    assert data.dtype == np.float32
    with jax.enable_x64(False), pytest.raises(ValueError, match="float64 needs jax_enable_x64"):
        features.with_dtype(data, np.float64)
    with pytest.raises(ValueError, match="float32 or float64"):
        features.with_dtype(data, np.float16)
