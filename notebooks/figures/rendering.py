"""Rendering a figure (part of make_figures.py): its layout checked, then saved as SVG for the book's pages and
as a small PNG for the notebooks, with the stamp that tells whether a copy is current.

The SVGs are byte-for-byte reproducible with the pinned matplotlib (fixed svg.hashsalt, no date); the PNGs are
checked through their stamps, because their bytes also depend on Pillow and zlib.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass

import matplotlib
from catalog import Figure
from facts import facts
from style import PAPER, RC, Canvas

PNG_DPI = 192  # twice the CSS pixel density: sharp on high-resolution screens
SVG_METADATA = {"Date": None, "Creator": "notebooks/figures/make_figures.py"}  # no timestamp, no version
PNG_METADATA = {"Software": None}
MIN_FONT_PT = 7.5  # smaller text is unreadable once a figure is scaled down to a phone's width


def layout_problems(canvas: Canvas) -> list[str]:
    "Text that runs off the figure, overlaps other text or is too small: layouts break silently otherwise."
    fig = canvas.fig
    renderer = fig.canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    problems, placed = [], []
    for t in canvas.ax.texts:
        text = t.get_text()
        if not text.strip():
            continue
        if t.get_fontsize() < MIN_FONT_PT:
            problems.append(f"text {text!r} is smaller than {MIN_FONT_PT} pt")
        bb = t.get_window_extent(renderer)
        if bb.x0 < 0 or bb.y0 < 0 or bb.x1 > width or bb.y1 > height:
            problems.append(f"text {text!r} runs off the figure")
        bb = bb.padded(-1.0)  # touching is fine, overlapping is not
        problems += [f"texts {other!r} and {text!r} overlap" for other, obb in placed if bb.overlaps(obb)]
        placed.append((text, bb))
    return problems


@dataclass(frozen=True)
class Rendered:
    "One figure, rendered: the SVG file, the PNG for the notebooks, and the stamp that identifies both."

    svg: bytes
    png: bytes
    stamp: str  # a hash of the SVG and the alt text: a figure cell with another stamp is stale


def render(fig: Figure) -> Rendered:
    "Draw `fig` (checking its layout) and return it as SVG and PNG."
    with matplotlib.rc_context(RC):
        canvas = fig.draw(facts())
        try:
            if problems := layout_problems(canvas):
                raise RuntimeError(f"make_figures: figure {fig.name}: " + "; ".join(problems))
            svg, png = io.BytesIO(), io.BytesIO()
            canvas.fig.savefig(svg, format="svg", metadata=SVG_METADATA, facecolor=PAPER)
            canvas.fig.savefig(png, format="png", dpi=PNG_DPI, metadata=PNG_METADATA, facecolor=PAPER)
        finally:
            canvas.close()
    stamp = hashlib.sha256(svg.getvalue() + fig.alt_text().encode()).hexdigest()[:16]
    return Rendered(svg.getvalue(), _small_png(png.getvalue()), stamp)


def _small_png(png: bytes) -> bytes:
    """The PNG with a palette of 128 colours instead of 8-bit RGBA: a third of the size, which matters because
    every notebook carries its figures, and no visible difference for flat-coloured diagrams."""
    from PIL import Image  # Pillow: installed with matplotlib

    image = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out, "PNG", optimize=True
    )
    return out.getvalue()


def css_width(svg: bytes) -> int:
    "The figure's width in CSS pixels, read from the SVG (in points: 1 pt = 4/3 px)."
    m = re.search(rb'<svg[^>]*\swidth="([0-9.]+)pt"', svg)
    return round(float(m.group(1)) * 4 / 3)
