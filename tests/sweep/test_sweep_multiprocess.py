"""Multi-process sweeps on JAX's distributed runtime: 2 and 3 CPU processes on 127.0.0.1.

Each process is a `python -m experiments.sweep` with one CPU device, joined through
``--coordinator_address/--num_processes/--process_id`` (gloo collectives). The tables must equal
the single-process sweep's byte for byte, also after one process is killed mid-sweep and all are
restarted. Every launch runs in its own process group under a timeout, so a hung collective fails
the test instead of hanging CI.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from experiments.configs import synthetic as synthetic_config
from hsfm_jax.runtime import distributed
from hsfm_jax.sweep import execute as sweep_execute

pytestmark = pytest.mark.slow  # sweeps over several processes

REPO = Path(__file__).resolve().parents[2]
# One program of 2 rates x 2 seeds = 4 runs: 2 processes hold 2 runs each, 3 processes pad to 6.
SPEC = "meta_lr=0.1,0.3 seeds=2"
TINY_HSFM = dict(support_per_class=4, hard_set_size=4, inner_steps=2, meta_steps=2, epochs=8)
CHECKPOINT_EVERY = 2
TIMEOUT_S = 240
TABLES = ("sweep.md", "sweep.csv")


@pytest.fixture(scope="module")
def features_dir(tiny_features_dir):
    return tiny_features_dir


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(command, num_processes, logs: Path) -> list[subprocess.Popen]:
    """Starts `num_processes` copies of `command` joined on a free port of 127.0.0.1."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    env.pop("JAX_NUM_CPU_DEVICES", None)
    port = free_port()
    procs = []
    for k in range(num_processes):
        flags = [
            f"--coordinator_address=127.0.0.1:{port}",
            f"--num_processes={num_processes}",
            f"--process_id={k}",
        ]
        log = open(logs / f"process_{k}.log", "w")  # noqa: SIM115 (closed with the process)
        procs.append(
            subprocess.Popen(
                command + flags,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed whole on failure
            )
        )
        log.close()
    return procs


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def wait_all(procs, logs: Path) -> None:
    """Waits for every process (TIMEOUT_S in all); kills all and fails on a timeout or error."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill(proc)
    for k, proc in enumerate(procs):
        tail = (logs / f"process_{k}.log").read_text()[-3000:]
        assert proc.returncode == 0, f"process {k} exited with {proc.returncode}:\n{tail}"


@pytest.fixture
def sweep_command(sweep_cli, features_dir, cache_dir):
    """workdir -> the argv of this module's sweep."""
    cache = f"--compilation_cache_dir={cache_dir}"
    return lambda workdir: sweep_cli(
        features_dir, workdir, TINY_HSFM, SPEC, CHECKPOINT_EVERY, cache
    )


def run_sweep(sweep_command, tmp_path: Path, num_processes: int) -> Path:
    workdir, logs = tmp_path / "workdir", tmp_path / f"logs_{num_processes}"
    logs.mkdir()
    wait_all(launch(sweep_command(workdir), num_processes, logs), logs)
    return workdir


@pytest.fixture(scope="module")
def reference(features_dir, tmp_path_factory):
    """The single-process sweep's workdir (run in this process, on its one CPU device)."""
    config = synthetic_config.get_config()
    config.features_dir = str(features_dir)
    config.erm.steps = 50
    config.hsfm.update(TINY_HSFM)
    workdir = tmp_path_factory.mktemp("single")
    sweep_execute.run(
        config,
        SPEC,
        workdir,
        checkpoint_every=CHECKPOINT_EVERY,
        devices=jax.devices()[:1],
        progress=False,
    )
    return workdir


def assert_same_outputs(workdir: Path, reference: Path) -> None:
    for name in TABLES:
        assert (workdir / name).read_bytes() == (reference / name).read_bytes(), name
    settings = sorted(p.name for p in (reference / "settings").iterdir())
    assert sorted(p.name for p in (workdir / "settings").iterdir()) == settings
    for name in settings:
        assert (workdir / "settings" / name).read_bytes() == (
            reference / "settings" / name
        ).read_bytes(), name


def test_check_flags_names_what_is_wrong():
    ok = dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=1, auto=False)
    assert distributed.check_flags(**ok)
    assert not distributed.check_flags(
        coordinator_address=None, num_processes=None, process_id=None, auto=False
    )
    assert distributed.check_flags(
        coordinator_address=None, num_processes=None, process_id=None, auto=True
    )
    for bad, message in [
        (dict(process_id=None), "needs --process_id too"),
        (dict(coordinator_address=None), "needs --coordinator_address too"),
        (dict(coordinator_address="127.0.0.1"), "must be HOST:PORT"),
        (dict(num_processes=0, process_id=0), "--num_processes must be >= 1"),
        (dict(process_id=2), r"--process_id must be in \[0, 2\), got 2"),
        (dict(auto=True), "drop --coordinator_address, --num_processes, --process_id"),
    ]:
        with pytest.raises(ValueError, match=message):
            distributed.check_flags(**{**ok, **bad})


def test_cli_bad_distributed_flags_are_one_line_errors(tmp_path):
    command = [
        sys.executable,
        "-m",
        "experiments.sweep",
        "--config=experiments/configs/synthetic.py",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    done = subprocess.run(
        [*command, f"--workdir={tmp_path}", "--num_processes=2", "--distributed_auto"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --distributed_auto detects the cluster itself; drop --num_processes"
    )


@pytest.mark.parametrize("num_processes", [2, 3])
def test_multiprocess_sweep_equals_single_process(
    reference, sweep_command, tmp_path, num_processes
):
    workdir = run_sweep(sweep_command, tmp_path, num_processes)
    report = json.loads((workdir / "sweep.json").read_text())
    assert (report["processes"], report["devices"]) == (num_processes, num_processes)
    assert json.loads((reference / "sweep.json").read_text())["processes"] == 1
    assert_same_outputs(workdir, reference)
    assert not any((workdir / "checkpoints").iterdir())  # process 0 removed them when done


def test_kill_one_process_and_resume(reference, sweep_command, tmp_path):
    """SIGKILL process 1 once a checkpoint is on disk, kill the rest, restart both: the resumed
    sweep continues from the checkpoint and writes the uninterrupted table."""
    workdir, logs = tmp_path / "workdir", tmp_path / "logs_killed"
    logs.mkdir()
    command = sweep_command(workdir)
    procs = launch(command, 2, logs)
    program_dir = workdir / "checkpoints" / "program_000"
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not (program_dir.is_dir() and any(p.name.isdigit() for p in program_dir.iterdir())):
            assert time.monotonic() < deadline, "no checkpoint appeared"
            assert all(p.poll() is None for p in procs), "a process exited before a checkpoint"
            time.sleep(0.02)
        kill(procs[1])
    finally:
        for proc in procs:
            kill(proc)
    assert not (workdir / "sweep.md").exists()  # killed mid-sweep
    assert not list((workdir / "settings").glob("*.json"))

    logs = tmp_path / "logs_resumed"
    logs.mkdir()
    wait_all(launch(command, 2, logs), logs)
    report = json.loads((workdir / "sweep.json").read_text())
    assert int(report["resumed_from_epoch"]["0"]) >= CHECKPOINT_EVERY
    assert_same_outputs(workdir, reference)
