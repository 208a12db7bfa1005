"""Fail, saying what to run, when llama_nb/ differs from a fresh `nbdev-export` of the notebooks.

The export runs in a temporary copy of the project, so this check never changes your working tree.
"""

import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    exporter = Path(sys.executable).with_name("nbdev-export")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "project"
        copy.mkdir()
        shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
        shutil.copytree(ROOT / "notebooks", copy / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        # Only the hand-kept __init__.py: a module whose notebook is gone must show up as stale.
        (copy / "llama_nb").mkdir()
        shutil.copy2(ROOT / "llama_nb" / "__init__.py", copy / "llama_nb" / "__init__.py")
        result = subprocess.run([str(exporter)], cwd=copy, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"nbdev-export failed:\n{result.stdout}{result.stderr}", file=sys.stderr)
            return 1
        fresh, committed = copy / "llama_nb", ROOT / "llama_nb"
        names = sorted({p.name for p in fresh.glob("*.py")} | {p.name for p in committed.glob("*.py")})
        stale = [
            n
            for n in names
            if not (fresh / n).exists()
            or not (committed / n).exists()
            or not filecmp.cmp(fresh / n, committed / n, shallow=False)
        ]
    if stale:
        print(
            "llama_nb/ is out of sync with the notebooks: "
            + ", ".join(f"llama_nb/{n}" for n in stale)
            + " differ from a fresh export.\nRun `make export` (nbdev-export) and commit the result. "
            "Edit the notebooks, never llama_nb/ by hand.",
            file=sys.stderr,
        )
        return 1
    print(f"llama_nb/ matches a fresh export of notebooks/ ({len(names)} modules).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
