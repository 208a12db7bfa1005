"""Copy a notebook executed on a GPU (benchmarks/gpu_session.sh) over Chapter 7, only when it is a complete full GPU
run; otherwise say why not and write nothing.

    python benchmarks/accept_gpu_notebook.py OUT/07_gpu_training.ipynb [--ladder OUT/ch7_ladder.json]

It refuses (exit code 1, nothing written) unless
- the outputs of the first code cells hold a line `mode: full GPU run | ... | CUDA <version> | <GPU name>` (the
  chapter's second code cell prints it): not smoke mode, and a CUDA device named;
- no cell has an error output (benchmarks/run_notebook.py also leaves one on a cell that timed out or whose
  kernel died);
- every code cell was executed (has an execution count; empty cells and cells tagged skip-execution aside);
- every cell's source is that of the target (`--allow-source-changes` to copy anyway): the chapter must not have
  changed since the run, or copying would undo the change;
- with `--ladder`: the ladder file says complete, has rows, and was not run on the CPU.
Then it replaces the target (default notebooks/07_gpu_training.ipynb) atomically: a temporary file in the target's
folder, then os.replace."""

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "notebooks" / "07_gpu_training.ipynb"
MODE_CELLS = 4  # the mode line is looked for in the outputs of this many code cells from the top
FULL = "mode: full GPU run"


class Refused(Exception):
    "The notebook is not to be copied over the chapter; the message says why."


def _text(value) -> str:
    "nbformat stores source and stream text as a string or a list of strings."
    return "".join(value) if isinstance(value, list) else (value or "")


def _code_cells(nb: dict) -> list[tuple[int, dict]]:
    return [(i, c) for i, c in enumerate(nb.get("cells", [])) if c.get("cell_type") == "code"]


def mode_line(nb: dict) -> str | None:
    "The first line starting `mode: ` in the outputs of the first MODE_CELLS code cells, or None."
    for _, cell in _code_cells(nb)[:MODE_CELLS]:
        for output in cell.get("outputs", []):
            text = _text(output.get("text")) or _text(output.get("data", {}).get("text/plain"))
            for line in text.splitlines():
                if line.startswith("mode: "):
                    return line.strip()
    return None


def cuda_device(line: str) -> str | None:
    """The GPU a `mode: full GPU run | torch X | CUDA V | NAME` line names, or None when it names none (no
    `CUDA <version>` field, or no device after it, or one that is not a GPU)."""
    fields = [f.strip() for f in line.split("|")]
    at = next((i for i, f in enumerate(fields) if re.fullmatch(r"CUDA \d+(\.\d+)*", f)), None)
    if at is None or at + 1 >= len(fields):
        return None
    name = " ".join(fields[at + 1 :]).strip()
    if not name or re.search(r"\bno\b|\bcpu\b|\bnone\b|\bmps\b", name, flags=re.IGNORECASE):
        return None
    return name


def check_notebook(nb: dict) -> str:
    "The GPU the run names, or Refused with the reason."
    line = mode_line(nb)
    if line is None:
        raise Refused(
            f"no line starting 'mode: ' in the outputs of the first {MODE_CELLS} code cells: not Chapter 7 "
            "as executed by benchmarks/run_notebook.py, or its first cells did not run"
        )
    if not line.startswith(FULL):
        raise Refused(f"not a full GPU run: the notebook says {line!r}")
    if (device := cuda_device(line)) is None:
        raise Refused(
            f"the mode line names no CUDA device (expected '{FULL} | torch ... | CUDA <version> | <GPU>'): {line!r}"
        )
    for index, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                raise Refused(
                    f"cell {index} has an error output: {output.get('ename')}: {str(output.get('evalue'))[:300]}"
                )
    skipped = [
        i
        for i, c in _code_cells(nb)
        if _text(c.get("source")).strip()
        and "skip-execution" not in c.get("metadata", {}).get("tags", [])
        and not isinstance(c.get("execution_count"), int)
    ]
    if skipped:
        raise Refused(
            f"{len(skipped)} code cell(s) were not executed (no execution count), the first: cell "
            f"{skipped[0]}; the run stopped early"
        )
    return device


def check_sources(nb: dict, target_nb: dict) -> None:
    "Refused unless every cell of `nb` has the type and source of the target's cell at the same place."
    ours = [(c.get("cell_type"), _text(c.get("source"))) for c in nb.get("cells", [])]
    theirs = [(c.get("cell_type"), _text(c.get("source"))) for c in target_nb.get("cells", [])]
    if ours == theirs:
        return
    if len(ours) != len(theirs):
        where = f"{len(ours)} cells in the run, {len(theirs)} in the target"
    else:
        where = f"cell {next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)} differs"
    raise Refused(
        f"the chapter changed since this run ({where}): copying the run over it would undo that change. "
        "Run the session again on the current chapter, or pass --allow-source-changes"
    )


def check_ladder(ladder: object) -> int:
    "The number of ladder rows, or Refused with the reason."
    if not isinstance(ladder, dict):
        raise Refused("the ladder file is not a JSON object")
    rows = ladder.get("rows")
    if not isinstance(rows, list) or not rows:
        raise Refused("the ladder file has no rows: the ladder did not run")
    if ladder.get("complete") is not True:
        raise Refused(f"the ladder is not complete ({len(rows)} row(s) written before the run stopped)")
    if re.match(r"\s*cpu\b", str(ladder.get("device", "")), flags=re.IGNORECASE):
        raise Refused(f"the ladder ran on {ladder.get('device')!r}, not on a GPU")
    return len(rows)


def replace_atomically(source: Path, target: Path) -> None:
    "Copy `source`'s bytes over `target`: a temporary file in target's folder, then os.replace (same mode as before)."
    data = source.read_bytes()
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebook", type=Path, help="the executed notebook (OUT/07_gpu_training.ipynb)")
    p.add_argument("--ladder", type=Path, help="the ladder's results (OUT/ch7_ladder.json): must be complete")
    p.add_argument("--target", type=Path, default=TARGET, help=f"the notebook to replace (default {TARGET})")
    p.add_argument(
        "--allow-source-changes", action="store_true", help="copy even when the target's cells differ from the run's"
    )
    args = p.parse_args(argv)
    try:
        try:
            nb = json.loads(args.notebook.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise Refused(f"cannot read {args.notebook}: {e}") from e
        if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
            raise Refused(f"{args.notebook} is not a notebook (no list of cells)")
        device = check_notebook(nb)
        rows = None
        if args.ladder is not None:
            try:
                ladder = json.loads(args.ladder.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise Refused(f"cannot read the ladder file {args.ladder}: {e}") from e
            rows = check_ladder(ladder)
        if not args.target.parent.is_dir():
            raise Refused(f"the target's folder {args.target.parent} does not exist")
        if args.target.exists() and not args.allow_source_changes:
            try:
                current = json.loads(args.target.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise Refused(
                    f"cannot read the target to compare its cells ({e}): pass --allow-source-changes "
                    "to replace it anyway"
                ) from e
            check_sources(nb, current)
    except Refused as e:
        print(f"accept_gpu_notebook: REFUSED, {args.target} left as it is: {e}", file=sys.stderr)
        return 1
    replace_atomically(args.notebook, args.target)
    print(
        f"accepted: a full GPU run on {device}"
        + (f", ladder complete with {rows} row(s)" if rows else "")
        + f"; copied {args.notebook} over {args.target}. Next: read every output, bring the prose in line, "
        "make export, make test, commit."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
