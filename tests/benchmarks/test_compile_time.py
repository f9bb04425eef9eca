"""benchmarks/compile_time.py: compile spans counted once, compile and run told apart."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from benchmarks import compile_time


@pytest.mark.parametrize(
    "intervals, total",
    [
        ([], 0.0),
        ([(0.0, 1.0), (2.0, 3.0)], 2.0),
        ([(0.0, 4.0), (1.0, 2.0)], 4.0),  # an inner span (a nested jit traced) counted once
        ([(0.0, 2.0), (1.0, 3.0)], 3.0),
    ],
)
def test_union(intervals, total):
    assert compile_time._union(intervals) == pytest.approx(total)


def test_spans_see_a_compile_and_then_none():
    spans = compile_time.Spans()

    def sine_plus_sum(x):
        return jnp.sin(x) * 3.0 + x.sum()

    fn = jax.jit(sine_plus_sum)
    x = jnp.arange(7.0)
    mark = spans.mark()
    fn(x).block_until_ready()
    cold = spans.summary(mark)
    assert cold["programs"] >= 1
    assert cold["compile_s"] > 0 and cold["xla_s"] > 0 and cold["trace_s"] > 0
    assert cold["compile_s"] <= cold["trace_s"] + cold["lower_s"] + cold["xla_s"] + 1e-9
    # XLA seconds by program name: this program's, adding up to the XLA time
    by_program = cold["xla_by_program_s"]
    assert [name for name in by_program if "sine_plus_sum" in name], by_program
    assert sum(by_program.values()) == pytest.approx(cold["xla_s"], rel=1e-6)
    mark = spans.mark()
    fn(x).block_until_ready()
    assert spans.summary(mark) == dict(
        trace_s=0.0, lower_s=0.0, xla_s=0.0, compile_s=0.0, programs=0, xla_by_program_s={}
    )


def test_table_names_the_programs_that_take_longest_to_compile():
    def call(xla_s, by_program):
        timing = dict(total_s=xla_s + 0.1, compile_s=xla_s, run_s=0.1, programs=len(by_program))
        return dict(timing, xla_s=xla_s, xla_by_program_s=by_program)

    fresh = dict(
        feature_dim=4,
        sizes={"train": 10},
        num_seeds=1,
        methods={
            "dfr": dict(
                cold=call(5.0, {"jit(dfr_val)": 3.0, "jit(tr_dfr)": 2.0}), warm=call(0, {})
            ),
            "erm": dict(cold=call(0.5, {"jit(fit_seeds)": 0.5}), warm=call(0, {})),
        },
    )
    env = dict(cpu="x", cpu_count=2, jax="0", load_average_start=[0], load_average_end=[0])
    text = compile_time.table(dict(environment=env, jobs={"main": {"fresh": fresh}}))
    assert (
        "XLA compilation, fresh cold: 5.50 s in all; the largest programs: dfr: jit(dfr_val) "
        "3.00 s, dfr: jit(tr_dfr) 2.00 s, erm: jit(fit_seeds) 0.50 s." in text
    )


def test_unknown_job_is_one_error_line(capsys):
    with pytest.raises(SystemExit, match="error: unknown job/phase"):
        compile_time.main(["--jobs=nope"])


@pytest.mark.parametrize("name", ["compile_time_quiet_cpu.json", "compile_time_cpu.json"])
def test_docs_tables_are_the_ones_the_results_json_gives(name):
    """docs/compile_time.md shows `--from_json`'s tables of each results file as printed (the
    first line, the CPU and load, is said in the doc's own words)."""
    root = Path(__file__).resolve().parents[2]
    results = json.loads((root / "benchmarks" / "results" / name).read_text())
    tables = compile_time.table(results).split("\n", 1)[1].strip()
    assert tables in (root / "docs" / "compile_time.md").read_text()
