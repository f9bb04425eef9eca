"""Sweeps: spec parsing, grouping into programs, kill-and-resume, sharding, vmapped rates, table.

One tiny synthetic problem and one reference sweep (two programs of three meta_lr values x three
seeds, four epochs in chunks of two) serve every test, so each program compiles once.
"""

import json
import os
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import synthetic as synthetic_config
from hsfm_jax import methods
from hsfm_jax.data import features as features_lib
from hsfm_jax.methods.hsfm import algorithm as hsfm
from hsfm_jax.methods.hsfm import method as hsfm_method
from hsfm_jax.reporting import tables
from hsfm_jax.sweep import execute as sweep_execute
from hsfm_jax.sweep import plan as sweep_plan
from hsfm_jax.sweep import report as sweep_report

pytestmark = pytest.mark.slow  # whole sweeps through the entry point

REPO = Path(__file__).resolve().parents[2]
SPEC = "inner_steps=2,3 meta_lr=0.1,0.3,0.5 seeds=3"
TINY_HSFM = dict(support_per_class=4, hard_set_size=4, inner_steps=2, meta_steps=2, epochs=4)
CHECKPOINT_EVERY = 2


def tiny_config(features_dir):
    config = synthetic_config.get_config()
    config.features_dir = str(features_dir)
    config.erm.steps = 50
    config.hsfm.update(TINY_HSFM)
    return config


@pytest.fixture(scope="module")
def features_dir(tiny_features_dir):
    return tiny_features_dir


@pytest.fixture(scope="module")
def reference(features_dir, tmp_path_factory):
    """An uninterrupted sweep: (workdir, report)."""
    workdir = tmp_path_factory.mktemp("reference")
    report = sweep_execute.run(
        tiny_config(features_dir),
        SPEC,
        workdir,
        checkpoint_every=CHECKPOINT_EVERY,
        progress=False,
    )
    return workdir, report


def read_settings(workdir):
    return [json.loads(p.read_text()) for p in sorted((workdir / "settings").glob("*.json"))]


def test_parse_spec_types_values_like_the_config():
    config = synthetic_config.get_config()
    spec = sweep_plan.parse_spec(
        "inner_steps=5,10 meta_lr=1e-2,1 erm.learning_rate=0.1 seeds=4", config
    )
    assert spec.num_seeds == 4
    assert spec.axes == (
        ("inner_steps", (5, 10)),
        ("meta_lr", (0.01, 1.0)),
        ("erm.learning_rate", (0.1,)),
    )
    assert [type(v) for v in spec.axes[1][1]] == [float, float]
    assert len(sweep_plan.grid(spec)) == 4
    assert (
        sweep_plan.apply(config, {"erm.learning_rate": 0.5, "inner_steps": 3}).erm.learning_rate
        == 0.5
    )
    for bad, message in [
        ("inner_stepz=1", "unknown name 'inner_stepz'"),
        ("inner_steps=1.5", "inner_steps='1.5' is not a valid int"),
        ("features_dir=a", "cannot be swept"),
        ("seeds=0", "seeds must be an integer >= 1"),
        ("meta_lr", "expected name=v1,v2"),
        ("meta_lr=1,1", "repeated values"),
    ]:
        with pytest.raises(ValueError, match=message):
            sweep_plan.parse_spec(bad, config)


def test_rates_share_a_program_and_shapes_do_not(features_dir):
    config = tiny_config(features_dir)
    data = features_lib.load(features_dir)
    settings, programs = sweep_plan.plan(config, sweep_plan.parse_spec(SPEC, config), data)
    assert len(settings) == 6
    assert [p.setting_indices for p in programs] == [(0, 1, 2), (3, 4, 5)]
    assert [p.settings.inner_steps for p in programs] == [2, 3]


def test_sweep_writes_table_plot_and_settings(reference):
    workdir, report = reference
    for name in (
        "sweep.md",
        "sweep.csv",
        "sweep.json",
        "sweep.png",
        "report.html",
        "sweep_config.json",
    ):
        assert (workdir / name).is_file(), name
    page = (workdir / "report.html").read_text()
    assert 'alt="sweep" src="data:image/png;base64,' in page  # the figure, inline
    assert page.count("<tr>") == 1 + 6  # the header and one row per setting
    assert len(read_settings(workdir)) == 6
    assert not any((workdir / "checkpoints").iterdir())  # removed once results are written
    assert report["programs"] == [[0, 1, 2], [3, 4, 5]]
    assert [row["meta_lr"] for row in report["rows"]] == [0.1, 0.3, 0.5] * 2
    assert report["selected"] in range(6)
    assert "✓" in (workdir / "sweep.md").read_text()


def test_config_mismatch_in_workdir_is_an_error(reference, features_dir):
    workdir, _ = reference
    config = tiny_config(features_dir)
    config.hsfm.hard_set_size = 3
    with pytest.raises(ValueError, match=r"different configuration \(config.hsfm.hard_set_size"):
        sweep_execute.run(config, SPEC, workdir, checkpoint_every=CHECKPOINT_EVERY, progress=False)
    with pytest.raises(ValueError, match="different configuration.*sweep"):
        sweep_execute.run(
            tiny_config(features_dir),
            "inner_steps=2 meta_lr=0.1,0.3,0.5 seeds=3",
            workdir,
            checkpoint_every=CHECKPOINT_EVERY,
            progress=False,
        )


def test_kill_and_resume_gives_the_uninterrupted_table(reference, features_dir, tmp_path):
    ref_dir, ref_report = reference
    # The reference sweep compiled one chunk program per shape setting; other tests' sweeps
    # share the per-mesh jit cache, so count what this test adds to it.
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("runs",))
    compiled_before = sweep_execute.jitted(mesh)[1]._cache_size()
    run = lambda **hooks: sweep_execute.run(
        tiny_config(features_dir),
        SPEC,
        tmp_path,
        checkpoint_every=CHECKPOINT_EVERY,
        progress=False,
        **hooks,
    )
    with pytest.raises(sweep_execute.Interrupted):
        run(max_settings=1)  # killed after the first program (settings 0-2)
    assert len(read_settings(tmp_path)) == 3
    with pytest.raises(sweep_execute.Interrupted):
        run(stop_after_epochs=2)  # killed inside the second program, after epoch 2
    assert len(read_settings(tmp_path)) == 3
    assert (tmp_path / "checkpoints" / "program_001" / "2").is_dir()

    report = run()
    assert report["resumed_from_epoch"] == {"1": 2}
    assert report["rows"] == ref_report["rows"]
    assert report["selected"] == ref_report["selected"]
    assert read_settings(tmp_path) == read_settings(ref_dir)
    for name in ("sweep.md", "sweep.csv"):
        assert (tmp_path / name).read_text() == (ref_dir / name).read_text()
    # Resuming reused the compiled programs: nothing new was compiled.
    assert sweep_execute.jitted(mesh)[1]._cache_size() == compiled_before


def test_vmapped_rates_equal_separate_runs(reference, features_dir):
    """Each meta_lr of a vmapped program equals `hsfm.run_seeds` with that rate alone."""
    ref_dir, _ = reference
    config = tiny_config(features_dir)
    data = features_lib.load(features_dir)
    arrays = hsfm_method.device_data(data, jnp.float32)
    keys = jax.random.split(jax.random.key(config.seed), 3)
    hsfm_config = methods.checked(config, "hsfm", data)
    init_head = hsfm_method.initial_head(hsfm_config, data, arrays.train, keys)
    settings = hsfm_method.settings(hsfm_config, data)
    for record in read_settings(ref_dir)[:3]:  # inner_steps=2: one program, three rates
        hsfm_config.meta_lr = record["overrides"]["meta_lr"]
        out = hsfm.run_seeds(
            arrays, init_head, hsfm_method.rates(hsfm_config, jnp.float32), keys, settings=settings
        )
        assert record["best_epoch"] == np.asarray(out.best_epoch).tolist()
        for name in ("outer_loss_before", "outer_loss_after", "edit_norm", "val_wga", "test_wga"):
            np.testing.assert_allclose(
                record["history"][name], np.asarray(out.history[name]), rtol=1e-6, err_msg=name
            )


def test_sharded_cli_equals_unsharded(reference, features_dir, sweep_cli, tmp_path):
    """The CLI on 2 host devices (9 runs padded to 10) gives the 1-device numbers exactly."""
    ref_dir, _ = reference
    command = sweep_cli(
        features_dir, tmp_path, TINY_HSFM, "meta_lr=0.1,0.3,0.5 seeds=3", CHECKPOINT_EVERY
    )
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        PYTHONPATH=str(REPO),
    )
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "selected by val" in done.stdout
    report = json.loads((tmp_path / "sweep.json").read_text())
    assert report["devices"] == 2
    sharded = read_settings(tmp_path)
    unsharded = read_settings(ref_dir)[:3]  # inner_steps=2
    for a, b in zip(sharded, unsharded, strict=True):
        assert a["overrides"]["meta_lr"] == b["overrides"]["meta_lr"]
        assert a["metrics"] == b["metrics"]
        assert a["history"] == b["history"]
        assert a["best_epoch"] == b["best_epoch"]


def test_table_builder_on_a_fixture(tmp_path, sweep_record):
    records = [
        sweep_record(1, 1.0, [0.5, 0.7], [0.4, 0.6]),
        sweep_record(0, 0.1, [0.8, 0.8], [0.7, 0.5]),  # the best val WGA
        sweep_record(2, 10.0, [0.2, 0.4], [0.9, 0.9]),
    ]
    report = sweep_report.build_report(records, ["meta_lr"], num_groups=4)
    assert report["selected"] == 0
    assert [r["index"] for r in report["rows"]] == [0, 1, 2]
    assert tables.sweep_markdown(report) == (
        "| setting | meta_lr | seeds | val WGA | test WGA | test mean acc "
        "| test avg (train-weighted) | selected by val |\n"
        "|---|---|---|---|---|---|---|---|\n"
        "| 0 | 0.1 | 2 | 80.0 ± 0.0 | 60.0 ± 10.0 | 85.0 ± 5.0 | 95.0 ± 0.0 | ✓ |\n"
        "| 1 | 1.0 | 2 | 60.0 ± 10.0 | 50.0 ± 10.0 | 85.0 ± 5.0 | 95.0 ± 0.0 |  |\n"
        "| 2 | 10.0 | 2 | 30.0 ± 10.0 | 90.0 ± 0.0 | 85.0 ± 5.0 | 95.0 ± 0.0 |  |\n"
        "\nVal wga selects setting 0 (meta_lr=0.1): test WGA 60.0 ± 10.0.\n"
    )
    lines = tables.sweep_csv(report).splitlines()
    assert lines[0] == (
        "index,setting,meta_lr,num_seeds,val_wga_mean,val_wga_std,test_wga_mean,test_wga_std,"
        "test_mean_acc_mean,test_mean_acc_std,test_train_weighted_acc_mean,"
        "test_train_weighted_acc_std,selection_metric,diverged,selected"
    )
    assert lines[1].startswith("0,meta_lr=0.1,0.1,2,0.8,0.0,0.6")
    assert lines[1].endswith(",wga,False,1") and lines[2].endswith(",wga,False,0")
    sweep_report.write_outputs(report, tmp_path)
    assert (tmp_path / "sweep.png").stat().st_size > 1000
    page = (tmp_path / "report.html").read_text()
    assert 'alt="sweep" src="data:image/png;base64,' in page and page.count("<tr>") == 1 + 3
    assert "3 settings of meta_lr, 2 seed(s) each" in page
    # the val selection metric is drawn (solid) and the chosen setting starred on it
    (ax,) = sweep_report.figure(report).axes
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    np.testing.assert_allclose(np.asarray(solid[0].get_ydata(), float), [80.0, 60.0, 30.0])
    (star,) = ax.collections[-1:]
    np.testing.assert_allclose(np.asarray(star.get_offsets(), float), [[0.1, 80.0]])
    # a diverged setting is marked and never selected, however good its numbers look
    records[1]["diverged"] = "hsfm diverged: seed 0, first non-finite at epoch 2"
    report = sweep_report.build_report(records, ["meta_lr"], num_groups=4)
    assert report["selected"] == 1
    assert "| diverged |" in tables.sweep_markdown(report)
