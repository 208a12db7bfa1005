"""The book's diagrams, drawn by a script: `python notebooks/figures/make_figures.py`.

Each figure is a small function that places boxes and arrows with matplotlib (already in the pinned set), and
as little as possible is typed by hand: every module name in a box is looked up in a real `Llama`, every tensor
shape on an arrow is measured by running one, and the GQA head mapping, the RoPE angles and scores, the SwiGLU
sizes and the ranks' shares of a batch come from llama_nb's own functions. Rename a module or change a shape in
the code and this script either redraws the figure or stops with an error that names what changed.

This file is the entry point; the rest of the script lives beside it, one job per module:

- style.py: the palette, the fonts, and the Canvas that the figures are drawn on;
- facts.py: what the figures show, looked up in llama_nb and measured by running it;
- draw_model.py, draw_attention.py, draw_training.py: the drawings, one `draw_NAME` function per figure;
- catalog.py: the list of figures, each with its name, its drawing and its alt text;
- rendering.py: the layout check, and a figure as SVG and PNG with the stamp that identifies them;
- notebook_cells.py: the figure cells of the notebooks, and how a stale one is rewritten.

It writes two things:

- `notebooks/figures/NAME.svg`, the figures as vector graphics, for the book's pages (book/intro.md) and for
  review. Text is drawn as paths (svg.fonttype "path", DejaVu Sans, which ships with matplotlib), so a figure
  looks the same in every browser and offline, whatever fonts the reader has.
- the copies embedded in the notebooks. A figure cell is a markdown cell holding the line
  `<!-- figure: NAME STAMP ... -->` followed by an `<img>` tag whose source is the figure as a PNG data URI;
  STAMP is a hash of the SVG and the alt text. When the stamp is out of date the script rewrites those two lines
  and leaves everything else in the notebook untouched. Why an embedded PNG rather than a link to the SVG: Colab
  opens a notebook alone, without the folder beside it, and renders neither cell attachments nor SVG data URIs,
  and the book's Markdown parser (markdown-it) refuses SVG data URIs. A PNG data URI shows in JupyterLab, in
  Colab and in the book alike.

The SVGs are byte-for-byte reproducible with the pinned matplotlib (fixed svg.hashsalt, no date); the PNGs are
checked through their stamps, because their bytes also depend on Pillow and zlib. tests/test_figures.py
regenerates everything and fails when a committed copy is stale. Each figure's layout is checked as it is drawn:
no text off the figure, no overlapping text, nothing under MIN_FONT_PT (rendering.py).

    python notebooks/figures/make_figures.py           # write the SVGs, refresh the notebooks' figure cells
    python notebooks/figures/make_figures.py --check   # change nothing; exit 1 and list what is stale
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from catalog import FIGURES
from notebook_cells import dump_notebook, figure_cell_source, refresh_notebook
from rendering import render

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE.parent
__all__ = ["figure_cell_source", "main", "run"]  # figure_cell_source: to start a new figure cell in a notebook


def _write_atomic(path: Path, data: bytes) -> None:
    "Write via a temporary file and a rename: a reader sees the old file or the new one, never half of one."
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run(out_dir: Path = HERE, notebooks_dir: Path = NOTEBOOKS, check: bool = False) -> list[str]:
    "Render every figure; write the stale SVGs and notebooks (unless `check`). Returns what was, or is, stale."
    rendered = {fig.name: render(fig) for fig in FIGURES}
    stale = []
    for name, r in rendered.items():
        path = out_dir / f"{name}.svg"
        if not path.is_file() or path.read_bytes() != r.svg:
            stale.append(str(path))
            if not check:
                _write_atomic(path, r.svg)
    for path in sorted(notebooks_dir.glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        if refresh_notebook(nb, rendered, where=str(path)):
            stale.append(str(path))
            if not check:
                _write_atomic(path, dump_notebook(nb).encode("utf-8"))
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is stale")
    args = parser.parse_args(argv)
    stale = run(check=args.check)
    for path in stale:
        print(("stale: " if args.check else "wrote: ") + path)
    if not stale:
        print("all figures up to date")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
