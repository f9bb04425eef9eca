"""HSFM's rate grid (one program over grid x seeds, selected on val per seed) and its rates in
feature units (scale-equivariant)."""

import dataclasses
import logging

import jax
import ml_collections
import numpy as np
import pytest

import hsfm_jax
from experiments.configs import own_features
from experiments.configs import synthetic as synthetic_config
from hsfm_jax.core import heads
from hsfm_jax.data import features
from hsfm_jax.methods.hsfm import algorithm as hsfm
from hsfm_jax.methods.hsfm import grid as hsfm_grid
from hsfm_jax.methods.hsfm import method as hsfm_method
from hsfm_jax.methods.hsfm import scale as hsfm_scale
from hsfm_jax.runtime import epoch_loop
from hsfm_jax.sweep import execute as sweep_execute

GRID = "meta_lr=x0.1,x1 inner_lr=x0.3,x1,x3"


def _config(**overrides):
    config = hsfm_method.default_config()
    config.update(
        dict(
            support_per_class=8,
            hard_set_size=10,
            inner_steps=3,
            meta_steps=2,
            epochs=4,
            chunk_epochs=2,
            inner_lr=1e-2,
            meta_lr=1e-1,
            grid=GRID,
        )
    )
    config.erm.steps = 50
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def data(small_features_dir):
    return features.load(small_features_dir)


def _run(data, config, keys, *, loop=epoch_loop.PLAIN):
    """(rows, {"report", "result", "resumed_from"}) of `hsfm_method.run` on a resolved config."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.update(hsfm_method.check(config, data))
    out = hsfm_method.run(data, config, keys, loop=loop)
    info = {"report": out.report, "result": out.info["result"], "resumed_from": out.resumed_from}
    return out.rows, info


def _x64(data):
    return features.with_dtype(data, np.float64)


def _keys(num_seeds=3):
    return jax.random.split(jax.random.key(1), num_seeds)


def _host(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def test_grid_settings_parse():
    config = _config(grid="meta_lr=x0.1,x1,0.5 inner_lr=x1,x10")
    got = hsfm_grid.settings(config)
    assert got[0] == {"inner_lr": 1e-2, "meta_lr": 1e-1, "head_lr": 1e-2, "meta_grad_clip": 10.0}
    assert len(got) == 6  # 3 x 2, the configured setting (x1, x1) first and once
    np.testing.assert_allclose(
        [(r["meta_lr"], r["inner_lr"]) for r in got[1:]],
        [(1e-2, 1e-2), (1e-2, 1e-1), (1e-1, 1e-1), (0.5, 1e-2), (0.5, 1e-1)],
    )
    assert all(r["head_lr"] == r["inner_lr"] for r in got)  # head_lr None follows inner_lr
    fixed_head = hsfm_grid.settings(_config(grid="inner_lr=x10", head_lr=3e-3))
    assert [r["head_lr"] for r in fixed_head] == [3e-3, 3e-3]
    assert hsfm_grid.settings(_config(grid="none")) == got[:1]


@pytest.mark.parametrize(
    "grid, message",
    [
        ("epochs=3,4", "'epochs' is not a rate"),
        ("meta_lr=x0.1,-1", "each value must be a positive number"),
        ("meta_lr=xx", "each value must be a positive number"),
        ("meta_lr", "expected name=v1,v2"),
        ("meta_lr=1 meta_lr=2", "given twice"),
        ("  ", "empty"),
    ],
)
def test_bad_grid_is_named(data, grid, message):
    with pytest.raises(ValueError, match=f"hsfm.grid: .*{message}|hsfm.grid: {message}"):
        hsfm_method.check(_config(grid=grid), data)


def test_select_takes_the_best_finite_run_ties_to_the_configured():
    num_settings, num_seeds = 3, 2
    score = np.asarray([[0.5, 0.7], [0.9, 0.7], [0.9, np.nan]]).reshape(-1)  # (K * S,)
    edit = np.ones((6, 4))
    edit[2, 3] = np.inf  # setting 1, seed 0 diverged at its last epoch: never selected
    result = hsfm.Result(
        best_head=heads.LinearHead(np.zeros((6, 2, 3)), np.zeros((6, 2))),
        last_head=None,
        best_epoch=np.zeros(6, np.int32),
        best_score=score,
        support_indices=None,
        support=None,
        history={"edit_norm": edit},
    )
    chosen = hsfm_grid.select(result, num_settings, num_seeds, ["edit_norm"])
    # seed 0: setting 1 diverged, setting 2 has 0.9; seed 1: 0.7 twice -> the configured (0)
    np.testing.assert_array_equal(chosen["selected"], [2, 0])
    np.testing.assert_array_equal(hsfm_grid.runs_of(chosen["selected"], num_seeds), [4, 1])
    assert chosen["scores"][1, 0] == -np.inf and chosen["scores"][2, 1] == -np.inf


def test_grid_is_one_program_and_rows_are_the_selected_runs(data, monkeypatch):
    config = _config()
    keys = _keys()
    runs = []
    original = hsfm.run_chunk_runs

    def spy(state, arrays, rates, first_epoch, **kwargs):
        runs.append(jax.tree_util.tree_map(np.shape, rates))
        return original(state, arrays, rates, first_epoch, **kwargs)

    monkeypatch.setattr(hsfm, "run_chunk_runs", spy)
    before = (hsfm.init_runs._cache_size(), original._cache_size())
    rows, info = _run(data, config, keys)
    num_settings = len(hsfm_grid.settings(config))
    assert num_settings == 6
    # every chunk ran all 6 x 3 runs in one call of one compiled program
    assert len(runs) == 2 and runs[0].meta_lr == (num_settings * 3,)
    after = (hsfm.init_runs._cache_size(), original._cache_size())
    assert after == (before[0] + 1, before[1] + 1)
    # other rate values on the same grid shape: no new program
    _run(data, _config(grid="meta_lr=x0.2,x1 inner_lr=x0.5,x1,x2"), keys)
    assert (hsfm.init_runs._cache_size(), original._cache_size()) == after

    assert set(rows) == {"hsfm", "hsfm_last", "hsfm_fixed"}
    grid = info["report"]["grid"]
    selected = np.asarray(grid["selected"])
    scores = np.asarray(grid["val_selection"], np.float64)
    assert scores.shape == (num_settings, 3)
    np.testing.assert_array_equal(scores[selected, np.arange(3)], scores.max(axis=0))
    assert grid["selected_rates"] == [grid["settings"][k] for k in selected]
    # the "hsfm" row and the saved result are each seed's selected run, "hsfm_fixed" the
    # configured rates': rerun those settings alone (no grid) and compare
    # (float32: a vmapped run may round otherwise than a run alone, so compare in float64)
    with jax.enable_x64(True):
        data = _x64(data)
        rows, info = _run(data, config, keys)
        grid = info["report"]["grid"]
        selected = np.asarray(grid["selected"])
        for k in set(selected.tolist()) | {0}:
            alone = _config(grid="none", **grid["settings"][k])
            one_rows, one_info = _run(data, alone, keys)
            for seed in np.flatnonzero(selected == k):
                np.testing.assert_allclose(
                    rows["hsfm"].weight[seed], one_rows["hsfm"].weight[seed], rtol=1e-9
                )
                np.testing.assert_allclose(
                    info["result"].support[seed], one_info["result"].support[seed], rtol=1e-9
                )
            if k == 0:
                np.testing.assert_allclose(rows["hsfm_fixed"].weight, one_rows["hsfm"].weight, 1e-9)
                np.testing.assert_allclose(
                    rows["hsfm_last"].weight, one_rows["hsfm_last"].weight, 1e-9
                )


def test_grid_none_is_the_configured_run(data):
    keys = _keys()
    config = _config(grid="none")
    rows, info = _run(data, config, keys)
    assert set(rows) == {"hsfm", "hsfm_last"} and "grid" not in info["report"]
    config.update(hsfm_method.check(config, data))
    arrays = hsfm_method.device_data(data)
    head = hsfm_method.initial_head(config, data, arrays.train, keys)
    rates = hsfm_method.rates(config, data.dtype)
    want = hsfm.run_seeds(arrays, head, rates, keys, settings=hsfm_method.settings(config, data))
    for got, expected in [(rows["hsfm"], want.best_head), (info["result"].support, want.support)]:
        leaves = zip(
            jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected), strict=True
        )
        for a, b in leaves:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_killed_grid_resumes_mid_grid(data, tmp_path, monkeypatch):
    config = _config(epochs=6)
    keys = _keys(2)
    uninterrupted_rows, uninterrupted = _run(data, config, keys)
    original = hsfm.run_chunk_runs
    calls = []

    def killed_after_two(state, arrays, rates, first_epoch, **kwargs):
        if not isinstance(first_epoch, jax.core.Tracer):  # not the resume's shape inference
            if len(calls) == 2:
                raise KeyboardInterrupt
            calls.append(int(first_epoch))
        return original(state, arrays, rates, first_epoch, **kwargs)

    monkeypatch.setattr(hsfm, "run_chunk_runs", killed_after_two)
    loop = epoch_loop.Options(checkpoint_dir=tmp_path / "ckpt", checkpoint_seconds=0)
    with pytest.raises(KeyboardInterrupt):
        _run(data, config, keys, loop=loop)
    calls.clear()
    rows, info = _run(data, config, keys, loop=loop)
    assert info["resumed_from"] == 4 and calls == [4]
    assert info["report"]["grid"] == uninterrupted["report"]["grid"]
    for a, b in zip(
        jax.tree_util.tree_leaves(_host((rows, info["result"]))),
        jax.tree_util.tree_leaves(_host((uninterrupted_rows, uninterrupted["result"]))),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_progress_bar_runs_over_the_grid(data, capsys):
    loop = epoch_loop.Options(progress=True, name="hsfm")
    _run(data, _config(), _keys(2), loop=loop)
    err = capsys.readouterr().err
    assert "hsfm: 100%" in err and "4/4" in err and "val wga=0." in err


def test_group_use_lists_the_fixed_row(data):
    config = _config()
    config.update(hsfm_method.check(config, data))
    use = hsfm_method.group_use(config)
    assert set(use) == {"hsfm", "hsfm_last", "hsfm_fixed"}
    assert use["hsfm_fixed"] == use["hsfm"] == {"train": False, "val": True}
    assert use["hsfm_last"] == {"train": False, "val": False}  # the configured rates' last head
    assert set(hsfm_method.group_use(_config(grid="none", selection_metric="wga"))) == {
        "hsfm",
        "hsfm_last",
    }


def _scaled(data: features.FeatureSet, s: float, head: heads.LinearHead) -> features.FeatureSet:
    splits = {
        name: dataclasses.replace(split, features=np.asarray(split.features, np.float64) * s)
        for name, split in data.splits.items()
    }
    weight = np.asarray(head.weight, np.float64) / s  # the same logits on features x s
    return dataclasses.replace(data, splits=splits, head_weight=weight, head_bias=head.bias)


@pytest.mark.slow  # float64 runs at three scales
@pytest.mark.parametrize("s", [0.1, 10.0])
def test_feature_rms_units_are_scale_equivariant(data, s):
    with jax.enable_x64(True):
        data = _x64(data)
        keys = _keys(2)
        config = _config(rate_units="feature_rms", init_head="backbone", grid="meta_lr=x0.3,x1")
        arrays = hsfm_method.device_data(data)
        head = hsfm_method.initial_head(_config(init_head="erm"), data, arrays.train, keys)
        base = _scaled(data, 1.0, head)
        rows, info = _run(base, config, keys)
        rows_s, info_s = _run(_scaled(data, s, head), config, keys)
        assert info_s["report"]["grid"]["selected"] == info["report"]["grid"]["selected"]
        history, history_s = info["result"].history, info_s["result"].history
        for key in ("val_wga", "test_wga", "test_mean_acc", "outer_loss_after"):
            np.testing.assert_allclose(history_s[key], history[key], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(history_s["edit_norm"], s * history["edit_norm"], rtol=1e-9)
        np.testing.assert_allclose(info_s["result"].support, s * info["result"].support, 1e-9)
        for row in rows:
            np.testing.assert_allclose(rows_s[row].weight, rows[row].weight / s, rtol=1e-9)
            np.testing.assert_allclose(rows_s[row].bias, rows[row].bias, rtol=1e-9, atol=1e-12)
        scale, scale_s = info["report"]["feature_scale"], info_s["report"]["feature_scale"]
        assert scale_s["train_rms"] == pytest.approx(s * scale["train_rms"], rel=1e-12)
        # "paper" units on the scaled features are another run: the rates do not follow
        paper_rows, _ = _run(
            _scaled(data, s, head), _config(init_head="backbone", grid="none"), keys
        )
        assert not np.allclose(paper_rows["hsfm"].weight, rows_s["hsfm"].weight, rtol=1e-3)


def test_effective_rates_follow_the_issue_scaling():
    rates = {"inner_lr": 1e-2, "meta_lr": 1e-1, "head_lr": 3e-3, "meta_grad_clip": 10.0}
    got = hsfm_scale.effective_rates(rates, 10.0)
    assert got == pytest.approx(
        {"inner_lr": 1e-4, "meta_lr": 1.0, "head_lr": 3e-4, "meta_grad_clip": 1.0}
    )


def test_feature_scale_is_logged_and_far_scales_warn(data, caplog):
    head = heads.LinearHead(np.zeros((2, data.feature_dim)), np.zeros(2))
    scale = hsfm_scale.measure(data)
    train = np.asarray(data.train.features, np.float64)
    assert scale.train_rms == pytest.approx(np.sqrt(np.mean(np.sum(train**2, axis=1))))
    means = [train[data.train.labels == c].mean(axis=0) for c in range(2)]
    assert scale.class_mean_norm == pytest.approx([np.linalg.norm(m) for m in means])
    near_scale = hsfm_scale.measure(_scaled(data, hsfm_scale.REFERENCE_RMS / scale.train_rms, head))
    with caplog.at_level(logging.INFO, logger="absl"):
        near = hsfm_scale.report("paper", near_scale)
    assert "feature scale: train rms norm" in caplog.text and "WARNING" not in caplog.text
    assert not near["far_from_reference"]
    caplog.clear()
    far_scale = hsfm_scale.measure(
        _scaled(data, 0.1 * near_scale.train_rms / scale.train_rms, head)
    )
    with caplog.at_level(logging.INFO, logger="absl"):
        far = hsfm_scale.report("paper", far_scale)
    assert far["far_from_reference"] and "may not suit these features" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="absl"):
        units = hsfm_scale.report("feature_rms", far_scale)
    assert not units["far_from_reference"] and "may not suit" not in caplog.text


def test_rates_rms_is_the_scale_the_rates_are_measured_from(data, caplog):
    scale = hsfm_scale.measure(data)
    with caplog.at_level(logging.INFO, logger="absl"):
        own = hsfm_scale.report("paper", scale, rates_rms=2 * scale.train_rms)
        far = hsfm_scale.report("paper", scale, rates_rms=5 * scale.train_rms)
    assert not own["far_from_reference"] and own["reference_rms"] == 2 * scale.train_rms
    assert far["far_from_reference"] and caplog.text.count("may not suit") == 1
    assert hsfm_scale.factor("feature_rms", scale, scale.train_rms / 3) == pytest.approx(3.0)


def test_unit_scale_configs_name_the_scale_of_their_features():
    """synthetic / own_features: rates set on the synthetic features (the README's example), whose
    RMS norm their `hsfm.rates_rms` gives, so the README's run does not warn."""
    x = np.asarray(hsfm_jax.synthetic.arrays()[0][0], np.float64)
    rms = np.sqrt(np.mean(np.sum(x**2, axis=1)))
    for config in (own_features.get_config(), synthetic_config.get_config()):
        assert 1 / 1.1 < rms / config.hsfm.rates_rms < 1.1


def test_sweep_refuses_feature_rms_units(small_features_dir, tmp_path):
    config = synthetic_config.get_config()
    config.features_dir = str(small_features_dir)
    config.prepare = ""
    config.hsfm.rate_units = "feature_rms"
    with pytest.raises(ValueError, match="rate_units='feature_rms' is not supported"):
        sweep_execute.run(config, "meta_lr=0.1,1 seeds=2", tmp_path / "sweep", progress=False)
