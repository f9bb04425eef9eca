"""The method contract: the registry, checks before anything runs, resolved "auto" choices, and
every synthetic row equal to its golden per-seed values."""

import json
import subprocess
import sys
import types
from pathlib import Path

import jax
import ml_collections
import pytest

from experiments import train
from experiments.configs import synthetic as synthetic_config
from hsfm_jax import methods
from hsfm_jax.core import checks, heads
from hsfm_jax.data import synthetic
from hsfm_jax.methods import contract
from hsfm_jax.runtime import epoch_loop

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = Path(__file__).parents[1] / "golden" / "synthetic_reference.json"


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("features")
    synthetic.write(path, **synthetic.default_arguments())
    return path


def small_config(features_dir, **hsfm):
    config = synthetic_config.get_config()
    config.features_dir = str(features_dir)
    config.num_seeds = 2
    config.hsfm.epochs = 4
    config.erm.steps = 50
    config.hsfm.update(hsfm)
    return config


def test_every_registered_method_has_the_contract():
    for name in methods.REGISTRY:
        module = methods.get(name)
        assert contract.check_module(module) == [], name
        assert module.NAME == name
        assert isinstance(module.default_config(), ml_collections.ConfigDict)
        assert not hasattr(module, "run_with_info") and not hasattr(module, "RESUMABLE"), name


def test_the_contract_check_names_what_a_module_lacks():
    module = _toy_module()
    assert contract.check_module(module) == []
    module.run = lambda data, config, keys: None  # no `loop`, no docstring
    del module.NAME
    problems = contract.check_module(module)
    assert problems[0] == "NAME: missing or not a string"
    assert "run: keyword-only (), expected ('loop',)" in problems
    assert "run: no docstring" in problems


def test_every_synthetic_row_equals_its_golden_per_seed_values(features_dir, tmp_path):
    """Every row of the synthetic config equals, per seed, the golden values of
    tests/golden/synthetic_reference.json (HSFM: the configured rates alone, no rate grid)."""
    report = train.run(small_config(features_dir, grid="none"), tmp_path / "run")
    reference = json.loads(REFERENCE.read_text())["rows"]
    assert set(reference) <= set(report["methods"])
    for row, splits in reference.items():
        for split, metrics in splits.items():
            for metric, per_seed in metrics.items():
                got = report["methods"][row][split][metric]["per_seed"]
                assert got == per_seed, (row, split, metric)
    # the "auto" choices, resolved before tracing, are in both files
    resolved = {"meta_gradient": "gram", "selection_metric": "wga", "init_head": "erm"}
    assert report["methods"]["hsfm"]["resolved"] == resolved
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["resolved"]["hsfm"] == resolved
    assert config["resolved"]["dfr"] == {"selection_metric": "wga", "balance": "groups"}


BAD_SETTINGS = [
    ({"methods": "erm,foo"}, "methods: unknown method(s) ['foo']"),
    ({"hsfm.meta_gradient": "vjpp"}, "hsfm.meta_gradient must be one of"),
    ({"hsfm.meta_optimizer": "lbfgs"}, "hsfm.meta_optimizer must be one of"),
    ({"erm.optimizer": "bogus"}, "erm.optimizer must be one of"),
    ({"neurontune.optimizer": "bogus"}, "neurontune.optimizer must be one of"),
    ({"hsfm.selection_metric": "best"}, "hsfm.selection_metric must be 'auto' or one of"),
    ({"dfr.selection_metric": "best"}, "dfr.selection_metric must be 'auto' or one of"),
    ({"hsfm.hard_set_fill": "pad"}, "hsfm.hard_set_fill must be one of"),
    ({"hsfm.inner_steps": 0}, "hsfm.inner_steps must be an integer > 0"),
    ({"hsfm.support_per_class": -3}, "hsfm.support_per_class must be an integer > 0"),
    ({"hsfm.epochs": 0}, "hsfm.epochs must be an integer > 0"),
    ({"erm.steps": 0}, "erm.steps must be an integer > 0"),
    ({"erm.batch_size": -5}, "erm.batch_size must be an integer >= 0"),
    ({"neurontune.epochs": 0}, "neurontune.epochs must be an integer > 0"),
    ({"dfr.num_retrains": 0}, "dfr.num_retrains must be an integer > 0"),
    (
        {"dfr.solver.method": "lbfgs"},
        "dfr.solver.method must be one of ('newton', 'fista', 'sklearn')",
    ),
    ({"dfr.solver.working_set": 4}, "dfr.solver.working_set must be >= 8, got 4"),
    ({"hsfm.inner_lr": float("nan")}, "hsfm.inner_lr must be > 0 and finite"),
    ({"hsfm.meta_lr": -1.0}, "hsfm.meta_lr must be > 0 and finite"),
    ({"hsfm.head_lr": float("inf")}, "hsfm.head_lr must be > 0 and finite"),
    ({"hsfm.meta_grad_clip": -1.0}, "hsfm.meta_grad_clip must be > 0 and finite"),
    ({"erm.learning_rate": float("inf")}, "erm.learning_rate must be > 0 and finite"),
    ({"neurontune.learning_rate": 0.0}, "neurontune.learning_rate must be > 0 and finite"),
    ({"dfr.c_grid": (1.0, -0.1)}, "dfr.c_grid: every value must be > 0 and finite"),
    ({"hsfm.support_per_class": 100000}, "hsfm.support_per_class: class 0 has"),
    ({"hsfm.hard_set_size": 100000}, "hsfm.hard_set_size: class 0 has"),
    ({"val_split.fraction": 0.999}, "leaves the selection part"),
    ({"num_seeds": 0}, "num_seeds must be an integer > 0"),
]


@pytest.mark.parametrize("overrides, message", BAD_SETTINGS, ids=lambda v: str(v)[:40])
def test_bad_setting_fails_before_any_method_runs(features_dir, tmp_path, overrides, message):
    config = small_config(features_dir)
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    with pytest.raises(ValueError) as error:
        train.run(config, tmp_path / "run")
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()  # nothing written, nothing ran


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.hsfm.meta_gradient=vjpp", "hsfm.meta_gradient must be one of"),
        ("--config.hsfm.inner_stepz=3", 'Did you mean "inner_steps"'),
    ],
)
def test_cli_bad_setting_is_one_line(features_dir, tmp_path, flag, message, main_cli):
    proc = main_cli(
        "--config=experiments/configs/synthetic.py",
        f"--config.features_dir={features_dir}",
        f"--workdir={tmp_path / 'run'}",
        flag,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert not (tmp_path / "run").exists()


def test_jax_entry_point_imports_no_torch_or_tensorflow():
    code = (
        "import experiments.train, experiments.sweep, sys; "
        "imported = [m for m in ('torch', 'tensorflow', 'tensorflow_datasets') if sys.modules.get(m)]; "
        "assert not imported, imported"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


# A method is one module and one registry line: a toy method that returns the zero head.
def _toy_module() -> types.ModuleType:
    module = types.ModuleType("toy_method")

    def default_config():
        """One field."""
        return ml_collections.ConfigDict(dict(scale=1.0))

    def check(config, data):
        """scale > 0."""
        checks.check_value("toy", config, "scale", "positive")
        return {}

    def run(data, config, keys, *, loop=epoch_loop.PLAIN):
        """The zero head."""
        zero = heads.zeros(data.num_classes, data.feature_dim)
        return contract.MethodResult(rows={"toy": jax.tree_util.tree_map(lambda x: x[None], zero)})

    def streams_train(config):
        """No train at all."""
        return True

    def group_use(config):
        """No group label."""
        return {"toy": {"train": False, "val": False}}

    module.NAME = "toy"
    module.default_config, module.check, module.run = default_config, check, run
    module.streams_train, module.group_use = streams_train, group_use
    return module


def test_a_new_method_is_one_module_and_one_registry_line(features_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "toy_method", _toy_module())
    monkeypatch.setitem(methods.REGISTRY, "toy", "toy_method")
    config = small_config(features_dir)
    config.toy = methods.get("toy").default_config()
    config.methods = "erm,toy"
    report = train.run(config, tmp_path / "run")
    assert set(report["methods"]) == {"erm", "toy"}
    assert report["methods"]["toy"]["test"]["mean_acc"]["mean"] is not None
    assert report["methods"]["toy"]["group_use"] == {"train": False, "val": False}
    config.toy.scale = -1.0
    with pytest.raises(ValueError, match="toy.scale must be > 0 and finite"):
        train.run(config, tmp_path / "run2")
