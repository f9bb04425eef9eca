"""benchmarks/compile_time.py: compile spans counted once, compile and run told apart."""

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
    fn = jax.jit(lambda x: jnp.sin(x) * 3.0 + x.sum())
    x = jnp.arange(7.0)
    mark = spans.mark()
    fn(x).block_until_ready()
    cold = spans.summary(mark)
    assert cold["programs"] >= 1
    assert cold["compile_s"] > 0 and cold["xla_s"] > 0 and cold["trace_s"] > 0
    assert cold["compile_s"] <= cold["trace_s"] + cold["lower_s"] + cold["xla_s"] + 1e-9
    mark = spans.mark()
    fn(x).block_until_ready()
    assert spans.summary(mark) == dict(
        trace_s=0.0, lower_s=0.0, xla_s=0.0, compile_s=0.0, programs=0
    )


def test_unknown_job_is_one_error_line(capsys):
    with pytest.raises(SystemExit, match="error: unknown job/phase"):
        compile_time.main(["--jobs=nope"])
