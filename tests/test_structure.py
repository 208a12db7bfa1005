"""The shape of the package: one module per notebook, read in the book's order, each short and self-describing."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400


def module_order() -> list[str]:
    "The module each notebook exports (`#| default_exp`), in the notebooks' (the book's) order."
    order = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
            m = re.match(r"#\|\s*default_exp\s+(\S+)", "".join(cell["source"]))
            if cell["cell_type"] == "code" and m:
                order.append(m[1])
    return order


ORDER = module_order()
MODULES = sorted(p.stem for p in (ROOT / "llama_nb").glob("*.py") if not p.stem.startswith("_"))


def test_every_module_comes_from_exactly_one_notebook():
    assert sorted(ORDER) == MODULES, "each llama_nb module is exported by one notebook's `#| default_exp`"
    assert len(set(ORDER)) == len(ORDER)


def later_imports(source: str, module: str, order: list[str]) -> list[str]:
    "The llama_nb modules that `source` (the code of `module`) imports and that come at or after it in `order`."
    imported = set()
    for node in ast.walk(ast.parse(source)):  # lazy imports inside functions count too
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llama_nb."):
            imported.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            imported.update(a.name.split(".")[1] for a in node.names if a.name.startswith("llama_nb."))
    return sorted(m for m in imported if order.index(m) >= order.index(module))


@pytest.mark.parametrize("module", MODULES)
def test_modules_import_only_what_earlier_notebooks_exported(module):
    later = later_imports((ROOT / "llama_nb" / f"{module}.py").read_text(encoding="utf-8"), module, ORDER)
    assert not later, f"llama_nb.{module} imports {later}, which the book teaches later (or itself)"


def formatted_lines(source: str) -> int:
    "Lines of `source` as `ruff format` lays it out at the project's width: long lines cannot hide a module's size."
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run(
        [str(ruff), "format", "--stdin-filename", "module.py", "-"],
        input=source,
        text=True,
        capture_output=True,
        cwd=ROOT,
        check=True,
    )
    return len(done.stdout.splitlines())


def test_the_line_count_is_taken_after_formatting():
    "Planted: one 200-column call, packed on one line, counts as the several lines ruff format gives it."
    packed = "f(" + ", ".join(f"argument_{i}" for i in range(20)) + ")\n"
    assert formatted_lines(packed) > 10


@pytest.mark.parametrize("module", MODULES)
def test_modules_are_short_and_say_what_they_are_for(module):
    source = (ROOT / "llama_nb" / f"{module}.py").read_text(encoding="utf-8")
    n = formatted_lines(source)
    assert n <= MAX_LINES, f"llama_nb/{module}.py has {n} lines after ruff format: split the idea into sections"
    lines = source.splitlines()
    first_cell = next(i for i, line in enumerate(lines) if line.startswith("# %% ../notebooks/"))
    assert lines[first_cell + 1].startswith("# "), f"llama_nb/{module}.py should open with a comment on its purpose"


def test_the_check_catches_a_backward_import():
    "Planted: the Chapter 6 loop importing Chapter 7's module, at the top or lazily, must be reported."
    loop = (ROOT / "llama_nb" / "loop.py").read_text(encoding="utf-8")
    assert later_imports(loop, "loop", ORDER) == []
    assert later_imports(loop + "\nfrom .gpu import autocast_context\n", "loop", ORDER) == ["gpu"]
    assert later_imports(loop + "\ndef f():\n    import llama_nb.train_cli\n", "loop", ORDER) == ["train_cli"]


def test_the_public_names_resolve_lazily_to_their_sections():
    "Each re-exported name is the module's own object, and `import llama_nb` imports none of the heavy modules."
    code = (
        "import sys, llama_nb\n"
        "heavy = [m for m in ('torch', 'transformers', 'gguf', 'llama_nb.model') if m in sys.modules]\n"
        "assert heavy == [], heavy\n"
        "from llama_nb import *\n"
        "import llama_nb.model, llama_nb.loop\n"
        "assert llama_nb.Llama is llama_nb.model.Llama and llama_nb.train is llama_nb.loop.train\n"
        "assert sorted(llama_nb.__all__) == llama_nb.__all__ and len(llama_nb.__all__) >= 12\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_no_public_name_is_shadowed_by_a_module_of_the_same_name():
    "`llama_nb.chat` is a module: re-exporting a function called `chat` would be replaced by it on first import."
    import llama_nb

    assert not set(llama_nb.__all__) & set(MODULES)
