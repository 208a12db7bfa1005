"""`make test` runs every notebook in one pytest run and checks Chapter 7's as `--nbval-lax` would
(`--nbval-lax-notebook`, in the root conftest.py). These tests plant wrong stored outputs and check that the option
relaxes exactly the notebooks it names, and still checks their cells marked NBVAL_CHECK_OUTPUT."""

import re

import nbformat
import pytest
from helpers import run_python

pytestmark = pytest.mark.slow  # starts pytest, which starts two kernels


def _notebook(path, *cells):
    "A notebook whose code cells print a number but store another one: every cell's stored output is wrong."
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for count, (source, printed) in enumerate(cells, start=1):
        cell = nbformat.v4.new_code_cell(source, execution_count=count)  # a cell that ran
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{printed}\n")]
        nb.cells.append(cell)
    nbformat.write(nb, path)
    return path


def test_a_lax_notebook_ignores_wrong_outputs_except_where_marked_and_others_stay_strict(tmp_path):
    lax = _notebook(tmp_path / "lax.ipynb", ("print(1)", 2), ("# NBVAL_CHECK_OUTPUT\nprint(3)", 4))
    strict = _notebook(tmp_path / "strict.ipynb", ("print(1)", 2))
    args = ["-p", "conftest", "-p", "no:cacheprovider", "-p", "no:xdist", "-rA", "--rootdir", str(tmp_path)]
    proc = run_python("-m", "pytest", *args, "--nbval", f"--nbval-lax-notebook={lax}", str(lax), str(strict))
    found = re.findall(r"^(PASSED|FAILED) \S*?(\w+\.ipynb::Cell \d)", proc.stdout, re.M)
    outcomes = {cell: status for status, cell in found}
    assert outcomes == {
        "lax.ipynb::Cell 0": "PASSED",  # wrong output, not checked
        "lax.ipynb::Cell 1": "FAILED",  # wrong output, marked NBVAL_CHECK_OUTPUT: checked
        "strict.ipynb::Cell 0": "FAILED",  # wrong output in a notebook not named: strict
    }, proc.stdout[-3000:]
