"""The look of the book's figures and the canvas they are drawn on (part of make_figures.py).

One palette, one font family, the same box for the same kind of thing in every figure; a `Canvas` whose
coordinates are inches from the top-left corner, with the few shapes the drawings are made of (boxes, arrows,
circles, cells, frames, notes). Text is rendered as paths (RC below), so a figure needs no fonts to look right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

WIDTH = 4.8  # inches: 461 CSS pixels, so that a figure scaled to a phone's width keeps its text readable
INK, MUTED, FAINT, PAPER = "#24292f", "#57606a", "#afb8c1", "#ffffff"
ACCENT = "#c2185b"  # what differs from the original Transformer; what a step writes
KINDS = {  # fill, edge
    "embedding": ("#dcf2e3", "#2e7d4f"),  # token embedding and output layer
    "norm": ("#fff3c4", "#9a7400"),  # RMSNorm
    "attention": ("#fde2d2", "#b5531c"),  # attention and what belongs to it
    "ffn": ("#dde9f8", "#2b62a3"),  # the SwiGLU feed-forward network
    "linear": ("#eef1f4", "#57606a"),  # a bias-free nn.Linear, a model copy
    "tensor": ("#efe6f8", "#6f42a1"),  # data: token ids, q/k/v, cached keys and values, gradients, logits
    "op": ("#ffffff", "#24292f"),  # a parameter-free operation: RoPE, softmax, SiLU, a reshape, a collective
    "frame": ("#f6f8fa", "#8c959f"),  # a group of things: a block repeated n_layers times, a process
}
NAME_PT, TEXT_PT, LABEL_PT, NOTE_PT, TITLE_PT = 9.5, 8.5, 8, 8, 10  # font sizes in points
RC = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: identical glyphs everywhere, no system fonts needed
    "font.monospace": ["DejaVu Sans Mono"],
    "mathtext.fontset": "dejavusans",
    "svg.fonttype": "path",  # glyphs as outlines: the SVG does not depend on the reader's fonts
    "svg.hashsalt": "baby-llama-figures",  # fixed ids inside the SVG: reproducible files
    "path.simplify": False,
}


@dataclass(frozen=True)
class Box:
    "Where a drawn box is (inches from the top-left corner; y grows downwards)."

    x: float
    y: float
    w: float
    h: float

    @property
    def top(self) -> tuple[float, float]:
        return (self.x, self.y - self.h / 2)

    @property
    def bottom(self) -> tuple[float, float]:
        return (self.x, self.y + self.h / 2)

    @property
    def left(self) -> tuple[float, float]:
        return (self.x - self.w / 2, self.y)

    @property
    def right(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y)


class Canvas:
    "A figure whose coordinates are inches from its top-left corner (y grows downwards); fonts in points."

    def __init__(self, height: float, width: float = WIDTH):
        self.fig = plt.figure(figsize=(width, height), facecolor=PAPER)
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(height, 0)
        self.ax.set_axis_off()
        self.width, self.height = width, height

    def text(self, x, y, s, size=TEXT_PT, color=INK, mono=False, bold=False, ha="center", va="center", **kw):
        family = "monospace" if mono else "sans-serif"
        return self.ax.text(
            x,
            y,
            s,
            fontsize=size,
            color=color,
            family=family,
            ha=ha,
            va=va,
            fontweight="bold" if bold else "normal",
            linespacing=1.25,
            **kw,
        )

    def box(self, x, y, w, h, kind, name=None, desc=None, dashed=False, round_=0.06, lw=1.1) -> Box:
        "A rounded box of `kind`, centred at (x, y): `name` (the code's name, monospace) over `desc`."
        fill, edge = KINDS[kind]
        self.ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - h / 2),
                w,
                h,
                boxstyle=f"round,pad=0,rounding_size={round_}",
                facecolor=fill,
                edgecolor=edge,
                lw=lw,
                ls=(0, (4, 2)) if dashed else "-",
            )
        )
        if name and desc:
            self.text(x, y - 0.085, name, size=NAME_PT, mono=True, bold=True)
            self.text(x, y + 0.095, desc, size=TEXT_PT, color=MUTED)
        elif name or desc:
            self.text(x, y, name or desc, size=NAME_PT if name else TEXT_PT, mono=bool(name), bold=bool(name))
        return Box(x, y, w, h)

    def arrow(self, *points, label=None, mono=True, color=INK, lw=1.1, dashed=False, head=True, at=0.5):
        "A polyline from the first point to the last, with an arrowhead; `label` right of segment 0 at fraction `at`."
        style = "-|>" if head else "-"
        self.ax.add_patch(
            FancyArrowPatch(
                path=MplPath(points),
                arrowstyle=style,
                mutation_scale=9,
                color=color,
                lw=lw,
                ls=(0, (3, 2)) if dashed else "-",
                shrinkA=0,
                shrinkB=0,
            )
        )
        if label:
            (x0, y0), (x1, y1) = points[0], points[1]
            x, y = x0 + at * (x1 - x0), y0 + at * (y1 - y0)
            self.text(x + 0.07, y, label, size=LABEL_PT, mono=mono, color=MUTED, ha="left")

    def circle_op(self, x, y, symbol="+", r=0.105) -> Box:
        "A small circle: + (residual add) or x (elementwise product)."
        self.ax.add_patch(Circle((x, y), r, facecolor=PAPER, edgecolor=INK, lw=1.1))
        d = r * 0.55
        if symbol == "+":
            self.ax.plot([x - d, x + d], [y, y], color=INK, lw=1.2, solid_capstyle="butt")
            self.ax.plot([x, x], [y - d, y + d], color=INK, lw=1.2, solid_capstyle="butt")
        else:
            d *= 0.75
            self.ax.plot([x - d, x + d], [y - d, y + d], color=INK, lw=1.2, solid_capstyle="butt")
            self.ax.plot([x - d, x + d], [y + d, y - d], color=INK, lw=1.2, solid_capstyle="butt")
        return Box(x, y, 2 * r, 2 * r)

    def cell(self, x, y, w, h, fill, edge=INK, lw=0.8, dashed=False):
        "A plain rectangle with its top-left corner at (x, y): one entry of a vector, a cache slot."
        self.ax.add_patch(
            Rectangle((x, y), w, h, facecolor=fill, edgecolor=edge, lw=lw, ls=(0, (2, 1.5)) if dashed else "-")
        )

    def frame(self, x0, y0, x1, y1, kind="frame", dashed=True):
        fill, edge = KINDS[kind]
        self.ax.add_patch(
            FancyBboxPatch(
                (x0, y0),
                x1 - x0,
                y1 - y0,
                boxstyle="round,pad=0,rounding_size=0.1",
                facecolor=fill,
                edgecolor=edge,
                lw=1.0,
                ls=(0, (4, 2)) if dashed else "-",
            )
        )

    def note(self, x, y, s, color=ACCENT, size=NOTE_PT, ha="left", va="center", **kw):
        return self.text(x, y, s, size=size, color=color, ha=ha, va=va, **kw)

    def close(self) -> None:
        "Free the figure (pyplot keeps every figure it made until it is closed)."
        plt.close(self.fig)


# ---------------------------------------------------------------------------------------------------------------
# How numbers are written in the figures and their alt texts.


def subscript(i: int) -> str:
    "The digit i as a subscript: g₀, θ₃."
    return "₀₁₂₃₄₅₆₇₈₉"[i]


def degrees(radians: float) -> str:
    "An angle in degrees, as the figures print it: 115, 11, 1.1, 0.11."
    deg = math.degrees(radians)
    return f"{deg:.0f}" if deg >= 10 else f"{deg:.2g}"
