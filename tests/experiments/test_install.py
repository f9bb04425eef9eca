"""The installed package: one top-level package (hsfm_jax) with the console scripts, which run
from a directory that is not the checkout, and leave a user's own ``experiments`` package alone."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import hsfm_jax

pytestmark = pytest.mark.slow  # builds and installs the wheel

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "LICENSE")
PACKAGES = ("hsfm_jax", "experiments", "feature_export", "benchmarks")
SCRIPTS = ("hsfm-run", "hsfm-sweep", "hsfm-analyze", "hsfm-export")


def _pip(*args, cwd):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, target): a wheel built from a copy of the sources, installed into `target`."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        shutil.copy(ROOT / name, source / name)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    _pip("wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp), cwd=source)
    (wheel,) = tmp.glob("*.whl")
    target = tmp / "target"
    _pip("install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel), cwd=tmp)
    return wheel, target


def test_the_wheel_installs_one_top_level_package_and_the_scripts(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = z.read(entry_points).decode()
    dist_info = f"hsfm_jax-{hsfm_jax.__version__}.dist-info"
    assert {n.split("/")[0] for n in names} == {"hsfm_jax", dist_info}
    assert f"{dist_info}/licenses/LICENSE" in names
    assert "hsfm_jax/_apps/experiments/main.py" in names
    assert "hsfm_jax/_apps/experiments/configs/synthetic.py" in names
    assert "hsfm_jax/_apps/feature_export/pipeline.py" in names
    assert not [n for n in names if "benchmarks" in n or n.startswith("tests/")]
    for script in SCRIPTS:
        assert f"{script} = hsfm_jax.apps:" in scripts


def _in_empty_dir(target, tmp_path, *command):
    env = {"PYTHONPATH": str(target), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)


def test_hsfm_run_help_works_outside_the_checkout(installed, tmp_path):
    _, target = installed
    proc = _in_empty_dir(target, tmp_path, str(target / "bin" / "hsfm-run"), "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--workdir" in proc.stdout and "--config" in proc.stdout
    proc = _in_empty_dir(target, tmp_path, str(target / "bin" / "hsfm-sweep"), "--help")
    assert proc.returncode == 0 and "--sweep" in proc.stdout, proc.stderr


def test_a_users_own_experiments_package_is_the_one_imported(installed, tmp_path):
    _, target = installed
    probe = "import experiments; print(experiments.__file__)"
    proc = _in_empty_dir(target, tmp_path, sys.executable, "-c", probe)
    assert "No module named 'experiments'" in proc.stderr
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text("")
    proc = _in_empty_dir(target, tmp_path, sys.executable, "-c", probe)
    assert proc.stdout.strip() == str(tmp_path / "experiments" / "__init__.py"), proc.stderr


def test_configs_are_found_by_name(installed, tmp_path):
    _, target = installed
    code = (
        "from hsfm_jax import apps; print(apps.root()); "
        "print(apps.resolve_config_flag(['x', '--config=synthetic:a', '--config=own.py']))"
    )
    proc = _in_empty_dir(target, tmp_path, sys.executable, "-c", code)
    root, resolved = proc.stdout.splitlines()
    assert root == str(target / "hsfm_jax" / "_apps")
    named = target / "hsfm_jax" / "_apps" / "experiments" / "configs" / "synthetic.py"
    assert resolved == str(["x", f"--config={named}:a", "--config=own.py"])
