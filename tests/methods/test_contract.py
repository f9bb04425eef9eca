"""The shape of the library: the number of parameters of every function in hsfm_jax/ (typed
settings instead of keyword plumbing; tests/methods/test_methods.py checks every method against
`hsfm_jax.methods.contract`)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "hsfm_jax"
MAX_PARAMETERS = 8


def _parameter_counts():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
                yield path.relative_to(PACKAGE).as_posix(), node.name, count


def test_no_function_in_the_package_takes_more_than_8_parameters():
    over = {}
    for module, name, count in _parameter_counts():
        if count > MAX_PARAMETERS:
            over.setdefault(module, set()).add(name)
    assert over == {}
