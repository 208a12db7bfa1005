"""Chapter 0.1's conventions: one error type, argument checks, files written whole, file digests."""

import ast
import hashlib
import inspect
import math
from pathlib import Path

import numpy as np
import pytest

import llama_nb
from llama_nb.core import (
    ArgumentError,
    LlamaNBError,
    atomic_path,
    check_choice,
    check_int,
    check_number,
    sha256_of,
    write_atomic,
)

PACKAGE = Path(llama_nb.__file__).parent


@pytest.mark.parametrize("value", [True, False, 1.0, "3", None, 0, -5])
def test_check_int_refuses_bools_floats_strings_and_values_below_low(value):
    with pytest.raises(ArgumentError, match=rf"batch_size must be an int >= 1, got {value!r}\."):
        check_int("batch_size", value, 1)


def test_check_int_returns_a_python_int_and_checks_the_upper_bound():
    assert type(check_int("seed", np.int64(7), 0)) is int
    assert check_int("n", 8, 1, 8) == 8
    with pytest.raises(ArgumentError, match=r"new_cache: n must be an int in \[1, 8\] \(at most the context\), got 9"):
        check_int("n", 9, 1, 8, hint="at most the context", owner="new_cache")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "0.1", None, -0.1])
def test_check_number_refuses_nan_infinities_bools_and_strings(value):
    with pytest.raises(ArgumentError, match="lr must be a finite number >= 0"):
        check_number("lr", value, 0)


def test_check_number_interval_ends_open_and_closed():
    assert check_number("p", 1, 0, 1, low_open=True) == 1.0 and type(check_number("p", 1, 0, 1)) is float
    with pytest.raises(ArgumentError, match=r"p must be a number in \(0, 1\]"):
        check_number("p", 0, 0, 1, low_open=True)
    with pytest.raises(ArgumentError, match=r"d must be a number in \[0, 1\)"):
        check_number("d", 1.0, 0, 1, high_open=True)
    with pytest.raises(ArgumentError, match="x must be a finite number"):
        check_number("x", math.nan)
    assert check_number("x", -1e300) == -1e300


def test_check_choice_lists_the_choices_and_wants_a_real_bool_for_flags():
    assert check_choice("dtype", "bf16", ("fp32", "bf16")) == "bf16"
    with pytest.raises(ArgumentError, match="TrainConfig: dtype must be one of fp32, bf16, got 'fp8'"):
        check_choice("dtype", "fp8", ("fp32", "bf16"), owner="TrainConfig")
    with pytest.raises(ArgumentError, match="compile must be True or False, got 1"):
        check_choice("compile", 1, (False, True))  # 1 == True, but a flag must be a bool


def test_argument_error_is_caught_as_llama_nb_error_and_as_value_error():
    for catch in (LlamaNBError, ValueError):
        with pytest.raises(catch):
            check_int("n", -1)


def test_write_atomic_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = write_atomic(tmp_path / "sub" / "a.txt", "one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two" and [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_a_write_that_fails_half_way_keeps_the_old_file_and_no_temporary(tmp_path):
    path = write_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as part:
        part.write_text("new, half writ")
        raise KeyboardInterrupt
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_sha256_of_matches_hashlib_across_chunk_boundaries(tmp_path):
    data = bytes(range(256)) * 8200  # just over 2 MiB: three chunks
    (tmp_path / "f").write_bytes(data)
    assert sha256_of(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_every_error_class_of_the_package_is_a_llama_nb_error():
    import importlib

    classes = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        module = importlib.import_module(f"llama_nb.{path.stem}")
        classes += [
            c
            for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, Exception) and c.__module__ == module.__name__
        ]
    assert len(classes) >= 5
    assert [c.__name__ for c in classes if not issubclass(c, LlamaNBError)] == []


def raised_builtins(source: str) -> list[str]:
    "The built-in ValueError/RuntimeError/TypeError that `source` raises directly (`raise X(...)`)."
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
            if node.exc.func.id in ("ValueError", "RuntimeError", "TypeError"):
                names.append(node.exc.func.id)
    return names


@pytest.mark.parametrize("module", sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_")))
def test_the_package_raises_its_own_errors_not_bare_builtins(module):
    assert raised_builtins((PACKAGE / f"{module}.py").read_text(encoding="utf-8")) == [], (
        f"llama_nb/{module}.py raises a bare built-in error: raise ArgumentError (or the module's own error class)"
    )


def test_the_scan_sees_a_planted_bare_raise():
    assert raised_builtins("def f(x):\n    raise ValueError('bad')\n") == ["ValueError"]
