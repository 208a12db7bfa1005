"""The book's diagrams, drawn by a script: `python notebooks/figures/make_figures.py`.

Each figure is a small function that places boxes and arrows with matplotlib (already in the pinned set), and
as little as possible is typed by hand: every module name in a box is looked up in a real `Llama`, every tensor
shape on an arrow is measured by running one, and the GQA head mapping, the RoPE angles and scores, the SwiGLU
sizes and the ranks' shares of a batch come from llama_nb's own functions. Rename a module or change a shape in
the code and this script either redraws the figure or stops with an error that names what changed.

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
no text off the figure, no overlapping text, nothing under MIN_FONT_PT.

    python notebooks/figures/make_figures.py           # write the SVGs, refresh the notebooks' figure cells
    python notebooks/figures/make_figures.py --check   # change nothing; exit 1 and list what is stale
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import html
import io
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Arc, Circle, FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE.parent

# ---------------------------------------------------------------------------------------------------------------
# The look: one palette, one font family, the same box for the same kind of thing in every figure.

WIDTH = 4.8  # inches: 461 CSS pixels, so that a figure scaled to a phone's width keeps its text readable
PNG_DPI = 192  # twice the CSS pixel density: sharp on high-resolution screens
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
SVG_METADATA = {"Date": None, "Creator": "notebooks/figures/make_figures.py"}  # no timestamp, no version
PNG_METADATA = {"Software": None}


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
        return self.ax.text(x, y, s, fontsize=size, color=color, family=family, ha=ha, va=va,
                            fontweight="bold" if bold else "normal", linespacing=1.25, **kw)

    def box(self, x, y, w, h, kind, name=None, desc=None, dashed=False, round_=0.06, lw=1.1) -> Box:
        "A rounded box of `kind`, centred at (x, y): `name` (the code's name, monospace) over `desc`."
        fill, edge = KINDS[kind]
        self.ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle=f"round,pad=0,rounding_size={round_}",
                                         facecolor=fill, edgecolor=edge, lw=lw, ls=(0, (4, 2)) if dashed else "-"))
        if name and desc:
            self.text(x, y - 0.085, name, size=NAME_PT, mono=True, bold=True)
            self.text(x, y + 0.095, desc, size=TEXT_PT, color=MUTED)
        elif name or desc:
            self.text(x, y, name or desc, size=NAME_PT if name else TEXT_PT, mono=bool(name), bold=bool(name))
        return Box(x, y, w, h)

    def arrow(self, *points, label=None, mono=True, color=INK, lw=1.1, dashed=False, head=True, at=0.5):
        "A polyline from the first point to the last, with an arrowhead; `label` right of segment 0 at fraction `at`."
        style = "-|>" if head else "-"
        self.ax.add_patch(FancyArrowPatch(path=MplPath(points), arrowstyle=style, mutation_scale=9, color=color,
                                          lw=lw, ls=(0, (3, 2)) if dashed else "-", shrinkA=0, shrinkB=0))
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
        self.ax.add_patch(Rectangle((x, y), w, h, facecolor=fill, edgecolor=edge, lw=lw,
                                    ls=(0, (2, 1.5)) if dashed else "-"))

    def frame(self, x0, y0, x1, y1, kind="frame", dashed=True):
        fill, edge = KINDS[kind]
        self.ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0,rounding_size=0.1",
                                         facecolor=fill, edgecolor=edge, lw=1.0, ls=(0, (4, 2)) if dashed else "-"))

    def note(self, x, y, s, color=ACCENT, size=NOTE_PT, ha="left", va="center", **kw):
        return self.text(x, y, s, size=size, color=color, ha=ha, va=va, **kw)


# ---------------------------------------------------------------------------------------------------------------
# What the figures show, taken from the code.

# Sizes of the model that is run to measure the shapes: all different, so that every number in a measured shape
# names exactly one symbol. CHUNK is a second call of 7 tokens after 5 cached ones, so S = 5 + 7 keys.
SIZES = dict(B=2, T=5, dim=48, n_heads=6, n_kv_heads=3, head_dim=8, hidden_dim=70, vocab_size=11, n_layers=4,
             max_seq_len=16)
CHUNK = dict(SIZES, T=7, S=12)
# The modules whose names appear in the figures (layer 0 stands for every layer).
DRAWN_MODULES = ["tok_embeddings", "layers.0", "layers.0.attention_norm", "layers.0.attention",
                 "layers.0.attention.wq", "layers.0.attention.wk", "layers.0.attention.wv", "layers.0.attention.wo",
                 "layers.0.ffn_norm", "layers.0.feed_forward", "layers.0.feed_forward.w1",
                 "layers.0.feed_forward.w3", "layers.0.feed_forward.w2", "norm", "output"]
PROJECTIONS = {f"layers.0.attention.w{t}" for t in "qkv"}  # outputs before the split into heads: not drawn
# Other names the figures print, checked to exist somewhere in llama_nb ("Class.attribute" for attributes), so
# that a rename in the code cannot leave a figure behind.
DRAWN_NAMES = ["Llama", "TransformerBlock", "Attention", "causal_attention", "repeat_kv", "KVCache.update",
               "LlamaConfig.tie_embeddings", "LlamaConfig.n_kv_heads", "apply_rotary", "rotate_half",
               "rope_frequencies", "SwiGLU", "llama_hidden_dim", "distributed", "rank_slice", "wrap_ddp",
               "all_reduce_mean", "barrier", "get_batch", "save_checkpoint"]


def _symbolic(shape, sizes: dict) -> str:
    "A measured shape written with the names of its sizes, e.g. (2, 5, 48) -> '(B, T, dim)'."
    names = {v: k for k, v in sizes.items()}
    unknown = [n for n in shape if n not in names]
    if unknown:
        raise RuntimeError(f"make_figures: a tensor of shape {tuple(shape)} has sizes {unknown} that are none of "
                           f"{sizes}: the code changed in a way the figures do not know; update make_figures.py")
    return "(" + ", ".join(names[n] for n in shape) + ")"


def _check_names() -> None:
    import importlib
    import pkgutil

    import llama_nb

    modules = [importlib.import_module(f"llama_nb.{info.name}") for info in pkgutil.iter_modules(llama_nb.__path__)
               if not info.name.startswith("_")]
    missing = []
    for name in DRAWN_NAMES:
        owner, _, attr = name.partition(".")
        found = [getattr(mod, owner) for mod in modules if hasattr(mod, owner)]
        fields = getattr(found[0], "__dataclass_fields__", {}) if found else {}
        if not found or (attr and not hasattr(found[0], attr) and attr not in fields):
            missing.append(name)
    if missing:
        raise RuntimeError(f"make_figures: the figures name {missing}, which llama_nb no longer has: update the "
                           "figures to the code")


@functools.cache
def facts() -> dict:
    "Everything the figures take from the code: measured shapes, the GQA mapping, RoPE angles, sizes, shares."
    import torch

    from llama_nb import gpu, rope, swiglu
    from llama_nb import model as m

    _check_names()
    s = SIZES
    config = m.LlamaConfig(vocab_size=s["vocab_size"], dim=s["dim"], n_layers=s["n_layers"], n_heads=s["n_heads"],
                           n_kv_heads=s["n_kv_heads"], hidden_dim=s["hidden_dim"], max_seq_len=s["max_seq_len"])
    if config.head_dim != s["head_dim"]:
        raise RuntimeError(f"make_figures: expected head_dim {s['head_dim']}, the config gives {config.head_dim}")
    with torch.random.fork_rng(devices=[]):  # the random initial weights do not matter; leave the caller's RNG be
        model = m.Llama(config).eval()
    modules = dict(model.named_modules())
    missing = [n for n in DRAWN_MODULES if n not in modules]
    if missing:
        raise RuntimeError(f"make_figures: the figures show modules {missing}, which Llama no longer has")

    out, inner, sizes = {}, {}, {"now": SIZES}
    inputs = {}  # raw shapes (wk's output, (B, T, n_kv_heads * head_dim), has no single name)

    def hook(mod, args, y, name):
        out[name], inputs[name] = tuple(y.shape), tuple(args[0].shape)

    hooks = [modules[n].register_forward_hook(functools.partial(hook, name=n)) for n in DRAWN_MODULES]
    home = sys.modules[m.Attention.__module__]  # Attention.forward calls these two as globals of its module
    real_rotary, real_attention = home.apply_rotary, home.causal_attention

    def rotary(x, cos, sin, offset=0):  # records q or k as RoPE sees them
        inner["q" if x.shape[1] == config.n_heads else "k"] = _symbolic(x.shape, sizes["now"])
        return real_rotary(x, cos, sin, offset)

    def attention(q, k, v, dropout_p=0.0):  # records what attention reads (k and v from the cache) and returns
        inner.update(q_attn=_symbolic(q.shape, sizes["now"]), k_attn=_symbolic(k.shape, sizes["now"]),
                     v_attn=_symbolic(v.shape, sizes["now"]))
        y = real_attention(q, k, v, dropout_p)
        inner["y"] = _symbolic(y.shape, sizes["now"])
        return y

    home.apply_rotary, home.causal_attention = rotary, attention
    try:
        with torch.no_grad():
            idx = torch.zeros(s["B"], s["T"], dtype=torch.long)
            logits, _ = model(idx)
            out["logits"], idx_shape = tuple(logits.shape), _symbolic(idx.shape, SIZES)
            model_shapes = {n: _symbolic(shape, SIZES) for n, shape in out.items() if n not in PROJECTIONS}
            no_cache = dict(inner)
            cache = model.new_cache(s["B"])
            model(idx, cache=cache)  # prefill 5 tokens, then a chunk of 7: attention reads S = 12 keys
            sizes["now"] = CHUNK
            model(torch.zeros(s["B"], CHUNK["T"], dtype=torch.long), cache=cache)
            wo_in = _symbolic(inputs["layers.0.attention.wo"], CHUNK)
    finally:
        home.apply_rotary, home.causal_attention = real_rotary, real_attention
        for h in hooks:
            h.remove()
    if not {"q", "k", "y"} <= no_cache.keys() or "k_attn" not in inner:
        raise RuntimeError("make_figures: Attention.forward no longer calls apply_rotary and causal_attention as "
                           f"globals of {home.__name__}; update facts() to observe q, k, v another way")
    cache_shape = _symbolic(cache.k.shape, SIZES)
    if _symbolic(cache.v.shape, SIZES) != cache_shape:
        raise RuntimeError("make_figures: the cache's keys and values have different shapes")

    def kv_head_of_query(n_heads: int, n_kv_heads: int) -> list[int]:  # as repeat_kv lays the heads out
        heads = torch.arange(n_kv_heads, dtype=torch.float32).view(1, n_kv_heads, 1, 1)
        return [int(h) for h in m.repeat_kv(heads, n_heads // n_kv_heads).flatten()]

    d_rope = 8
    partner = rope.rotate_half(torch.eye(d_rope)).abs().argmax(dim=-1).tolist()  # feature c is paired with this
    cos, sin = rope.precompute_rope_cache(d_rope, 16)
    start = torch.tensor([1.0] * (d_rope // 2) + [0.0] * (d_rope // 2)).view(1, 1, 1, d_rope)  # every pair (1, 0)
    rotated = {pos: rope.apply_rotary(start, cos, sin, offset=pos).flatten().tolist() for pos in (0, 2)}
    cos2, sin2 = rope.precompute_rope_cache(2, 16)  # one pair, for the relative-position picture

    def rotate2(vec, pos):
        return rope.apply_rotary(torch.tensor(vec).view(1, 1, 1, 2), cos2, sin2, offset=pos).flatten().tolist()

    return {
        "idx": idx_shape,
        "model": model_shapes,
        "attention": {"x": model_shapes["layers.0.attention_norm"], "q": no_cache["q"], "k": no_cache["k"],
                      "q_chunk": inner["q"], "k_chunk": inner["k"], "k_cached": inner["k_attn"],
                      "y": inner["y"], "wo_in": wo_in, "out": model_shapes["layers.0.attention"]},
        "cache_shape": cache_shape,
        "gqa": {name: (8, n_kv, kv_head_of_query(8, n_kv)) for name, n_kv in (("MHA", 8), ("GQA", 2), ("MQA", 1))},
        "rope": {"head_dim": d_rope, "partner": partner, "theta": rope.rope_frequencies(d_rope).tolist(),
                 "rotated": rotated, "rotate2": rotate2, "theta2": rope.rope_frequencies(2).tolist()[0]},
        "swiglu": {"llama7b": (4096, swiglu.llama_hidden_dim(4096, 256))},
        "ddp": {"batch": 8, "world": 4, "shares": [gpu.rank_slice(8, r, 4) for r in range(4)]},
    }


# ---------------------------------------------------------------------------------------------------------------
# The figures. Coordinates in inches from the top-left corner.


def _sub(i: int) -> str:
    return "₀₁₂₃₄₅₆₇₈₉"[i]


def _degrees(radians: float) -> str:
    deg = math.degrees(radians)
    return f"{deg:.0f}" if deg >= 10 else f"{deg:.2g}"


def draw_llama_model(f: dict) -> Canvas:
    "The whole model with one TransformerBlock opened up: code names, shapes, and what differs from 2017 in red."
    s = f["model"]
    c = Canvas(9.3)
    X, BW, NX = 1.75, 2.05, 3.02  # the column's centre, its boxes' width, where the notes start
    ids = c.box(X, 0.3, 1.1, 0.34, "tensor", name="idx", round_=0.15)
    c.text(X + 0.65, 0.3, "token ids", color=MUTED, ha="left")
    emb = c.box(X, 1.0, BW, 0.5, "embedding", "tok_embeddings", "nn.Embedding(vocab_size, dim)")
    c.arrow(ids.bottom, emb.top, label=f["idx"])
    c.note(NX, emb.y, "★ no position embedding:\nRoPE brings position in,\ninside attention")

    top, split1 = 1.62, 2.12
    c.arrow(emb.bottom, (X, split1), label=s["tok_embeddings"], at=0.2)

    def sublayer(y0, norm_name, layer_name, kind, desc, stream):
        "stream -> norm -> layer -> + stream, the residual connection on the left. Returns the three parts."
        norm = c.box(X, y0 + 0.42, BW, 0.48, "norm", norm_name, "RMSNorm(dim)")
        layer = c.box(X, y0 + 1.18, BW, 0.6, kind, layer_name, desc)
        add = c.circle_op(X, y0 + 1.88)
        c.arrow((X, y0), norm.top)
        c.arrow(norm.bottom, layer.top, label=s[f"layers.0.{norm_name}"])
        c.arrow(layer.bottom, add.top, label=s[f"layers.0.{layer_name}"])
        c.arrow((X, y0), (0.45, y0), (0.45, add.y), add.left)  # the residual connection
        c.ax.add_patch(Circle((X, y0), 0.03, color=INK))
        c.text(0.52, (y0 + add.y) / 2, "residual", size=LABEL_PT, color=MUTED, rotation=90, ha="left")
        c.text(X + 0.07, y0 - 0.03, stream, size=LABEL_PT, mono=True, color=MUTED, ha="left", va="bottom")
        return norm, layer, add

    norm1, attn, add1 = sublayer(split1, "attention_norm", "attention", "attention", "Attention: GQA, RoPE", "x")
    split2 = add1.y + 0.25
    c.arrow(add1.bottom, (X, split2), head=False)
    norm2, ffn, add2 = sublayer(split2, "ffn_norm", "feed_forward", "ffn", "SwiGLU: w2(silu(w1 x)·w3 x)", "h")
    bottom = add2.y + 0.3
    c.frame(0.12, top, 2.95, bottom)
    c.ax.patches[-1].set_zorder(0)  # behind what is inside it
    c.text(0.22, top + 0.15, "layers[i]:", size=TEXT_PT, mono=True, bold=True, ha="left")
    c.text(0.22, top + 0.33, "TransformerBlock", size=TEXT_PT, mono=True, bold=True, ha="left")
    c.text(2.88, bottom - 0.14, "× n_layers", size=TEXT_PT, bold=True, ha="right")
    c.note(NX, norm1.y, "★ pre-norm: RMSNorm on\nthe sub-layer's input;\nthe stream itself is\nnever normalised")
    c.note(NX, attn.y + 0.04, "★ RoPE rotates q and k;\nfewer key/value heads\nthan query heads (GQA)")
    c.note(NX, norm2.y, "its own RMSNorm, not\nattention_norm again", color=MUTED)
    c.note(NX, ffn.y, "★ SwiGLU instead of\nReLU(x W₁) W₂")

    fnorm = c.box(X, bottom + 0.55, BW, 0.48, "norm", "norm", "RMSNorm(dim)")
    c.arrow(add2.bottom, fnorm.top, label=s["layers.0"], at=0.65)
    c.note(NX, fnorm.y, "★ a final RMSNorm: the\nresidual stream is not\nnormalised before")
    head = c.box(X, fnorm.y + 0.8, BW, 0.5, "embedding", "output", "nn.Linear(dim, vocab_size)")
    c.arrow(fnorm.bottom, head.top, label=s["norm"])
    c.note(NX, head.y, "tie_embeddings=True:\nthe same matrix as\ntok_embeddings", color=MUTED)
    logits = c.box(X, head.y + 0.75, 1.1, 0.34, "tensor", name="logits", round_=0.15)
    c.arrow(head.bottom, logits.top, label=s["output"])
    c.note(0.12, logits.y + 0.45, "★ red: what differs from the original Transformer (2017).\n"
           "Also new: no linear layer has a bias.")
    return c


def draw_llama_attention(f: dict) -> Canvas:
    "Inside Attention: projections, the split into heads, RoPE, the cache, grouped-query attention, wo."
    a = f["attention"]
    c = Canvas(7.1)
    XS, CW = (0.8, 2.4, 4.0), 1.45  # the q, k and v columns and their width
    x = c.box(2.4, 0.3, 0.9, 0.34, "tensor", name="x", round_=0.15)
    c.text(2.95, 0.3, a["x"], size=LABEL_PT, mono=True, color=MUTED, ha="left")
    c.text(0.1, 0.3, "from attention_norm", size=LABEL_PT, color=MUTED, ha="left")
    proj, vecs = {}, {}
    for t, x0 in zip("qkv", XS):
        proj[t] = c.box(x0, 0.95, 0.9, 0.38, "linear", name=f"w{t}")
        if x0 == x.x:
            c.arrow(x.bottom, proj[t].top)
        else:
            c.arrow(x.bottom, (x.x, 0.6), (x0, 0.6), proj[t].top)
        vecs[t] = c.box(x0, 1.72, CW, 0.66, "tensor")
        c.text(x0, 1.53, t, size=NAME_PT, mono=True, bold=True)
        shape = a["q"] if t == "q" else a["k"]
        c.text(x0, 1.8, shape.replace(", T", ",\nT", 1), size=LABEL_PT, mono=True, color=MUTED)
        c.arrow(proj[t].bottom, vecs[t].top, label="split into heads" if t == "q" else None, mono=False)
    rope = {t: c.box(XS[i], 2.5, CW, 0.44, "op", "apply_rotary", "RoPE") for i, t in enumerate("qk")}
    for t in "qk":
        c.arrow(vecs[t].bottom, rope[t].top)
    c.text(XS[2] + 0.08, 2.5, "not\nrotated", size=LABEL_PT, color=MUTED, ha="left")

    cache = c.box(3.2, 3.35, 3.05, 0.62, "tensor", dashed=True)
    c.text(cache.x, 3.2, "cache.update(layer_idx, k, v)", size=NAME_PT, mono=True, bold=True)
    c.text(cache.x, 3.46, "generation only: store the new k, v, read\nall S = cache.pos + T positions",
           size=LABEL_PT, color=MUTED)
    c.arrow(rope["k"].bottom, (XS[1], cache.y - cache.h / 2))
    c.arrow(vecs["v"].bottom, (XS[2], cache.y - cache.h / 2))
    att = c.box(2.4, 4.65, 4.6, 0.85, "attention")
    c.arrow(rope["q"].bottom, (XS[0], att.y - att.h / 2))
    for x0 in XS[1:]:
        c.arrow((x0, cache.y + cache.h / 2), (x0, att.y - att.h / 2))
    c.text(XS[1] + 0.07, 3.93, "k, v: " + a["k_cached"].replace(", S", ",\nS", 1), size=LABEL_PT, mono=True,
           color=MUTED, ha="left")
    c.text(att.x, att.y - 0.23, "causal_attention(q, k, v)", size=NAME_PT, mono=True, bold=True)
    c.text(att.x, att.y + 0.02, "softmax(q kᵀ / √head_dim + causal mask) v, for every head", size=LABEL_PT)
    c.text(att.x, att.y + 0.24, "each k, v head is shared by n_heads / n_kv_heads query heads (GQA)",
           size=LABEL_PT, color=MUTED)
    merge = c.box(2.4, 5.67, 2.6, 0.44, "op", None, "merge heads: transpose, reshape")
    c.arrow(att.bottom, merge.top, label=a["y"])
    wo = c.box(2.4, 6.4, 0.9, 0.44, "linear", name="wo")
    c.arrow(merge.bottom, wo.top, label=a["wo_in"])
    c.arrow(wo.bottom, (2.4, 7.0), label=a["out"] + ": to the residual add")
    return c


def draw_gqa(f: dict) -> Canvas:
    "Which key/value head each query head reads, for MHA, GQA and MQA, as repeat_kv lays them out."
    c = Canvas(5.4)
    desc = {"MHA": "multi-head: one key/value head per query head",
            "GQA": "grouped-query: a group of query heads shares one",
            "MQA": "multi-query: all query heads share one"}
    size, gap, x0 = 0.34, 0.08, 0.15
    for row, (name, (n_heads, n_kv, mapping)) in enumerate(f["gqa"].items()):
        y = 0.25 + row * 1.65
        c.text(0.1, y, name, size=TITLE_PT, bold=True, ha="left")
        c.text(0.62, y, desc[name], size=TEXT_PT, color=MUTED, ha="left")
        qy, ky = y + 0.3, y + 1.0
        qx = [x0 + i * (size + gap) for i in range(n_heads)]
        group = n_heads // n_kv
        for g in range(n_kv if group > 1 else 0):  # shade each group of query heads that share a key/value head
            left, right = qx[g * group] - 0.05, qx[(g + 1) * group - 1] + size + 0.05
            c.ax.add_patch(FancyBboxPatch((left, qy - 0.05), right - left, size + 0.1, facecolor=KINDS["frame"][0],
                                          boxstyle="round,pad=0,rounding_size=0.05", edgecolor=FAINT, lw=0.8))
        kx = {}
        for g in range(n_kv):  # each key/value head sits under the middle of the query heads that read it
            readers = [qx[h] for h in range(n_heads) if mapping[h] == g]
            kx[g] = (min(readers) + max(readers)) / 2
            c.cell(kx[g], ky, size, size, KINDS["tensor"][0], edge=KINDS["tensor"][1], lw=1.0)
            c.text(kx[g] + size / 2, ky + size / 2, str(g), size=LABEL_PT, mono=True)
        for h in range(n_heads):
            c.cell(qx[h], qy, size, size, KINDS["attention"][0], edge=KINDS["attention"][1], lw=1.0)
            c.text(qx[h] + size / 2, qy + size / 2, str(h), size=LABEL_PT, mono=True)
            c.ax.plot([qx[h] + size / 2, kx[mapping[h]] + size / 2], [qy + size, ky], color=MUTED, lw=0.9)
        right = qx[-1] + size + 0.15
        c.text(right, qy + size / 2, f"{n_heads} query\nheads", size=LABEL_PT, color=MUTED, ha="left")
        c.text(right, ky + size / 2, f"n_kv_heads\n= {n_kv}", size=LABEL_PT, color=KINDS["tensor"][1], ha="left")
    c.text(0.1, 5.12, "Query head h reads key/value head h // (n_heads / n_kv_heads), in repeat_kv's\n"
           "order. The KV cache holds n_kv_heads heads per layer: here 8, 2 and 1.", size=LABEL_PT, ha="left")
    return c


def draw_rope(f: dict) -> Canvas:
    "A query as pairs, each rotated by its own angle; and why the score depends only on the distance."
    r = f["rope"]
    d, theta, partner = r["head_dim"], r["theta"], r["partner"]
    colors = ["#b5531c", "#2b62a3", "#2e7d4f", "#6f42a1"]  # one per pair (the edges of the box kinds)
    c = Canvas(6.05)
    c.text(0.1, 0.2, f"1. A query or key of head_dim {d} is {d // 2} pairs", size=TITLE_PT, bold=True, ha="left")
    w, x0, y0 = 0.4, 0.15, 0.45
    for i in range(d):  # feature c is paired with partner[c]: split-half, c + head_dim/2
        pair = min(i, partner[i])
        c.cell(x0 + i * w, y0, w, 0.34, colors[pair] + "30", edge=colors[pair], lw=1.1)
        c.text(x0 + i * w + w / 2, y0 + 0.17, f"x{i}", size=LABEL_PT, mono=True)
    for i in range(d // 2):
        a, b, depth = x0 + i * w + w / 2, x0 + partner[i] * w + w / 2, 0.1 + 0.07 * i
        c.ax.plot([a, a, b, b], [y0 + 0.36, y0 + 0.36 + depth, y0 + 0.36 + depth, y0 + 0.36], color=colors[i],
                  lw=1.0)
    c.text(x0 + d * w + 0.12, y0 + 0.3, "pair i is\n$(x_i,\\ x_{i+4})$,\nsplit-half, as in\nrotate_half",
           size=LABEL_PT, color=MUTED, ha="left")

    m = 2
    c.text(0.1, 1.42, f"Each pair turns by its own angle $m\\,\\theta_i$, with $\\theta_i = 10000^{{-2i/{d}}}$",
           size=TEXT_PT, ha="left")
    R, cy = 0.4, 2.15
    for i in range(d // 2):
        cx = 0.6 + i * 1.2
        c.ax.add_patch(Circle((cx, cy), R, fill=False, edgecolor=FAINT, lw=0.8))
        c.ax.plot([cx - R - 0.05, cx + R + 0.05], [cy, cy], color=FAINT, lw=0.6)
        c.ax.plot([cx, cx], [cy - R - 0.05, cy + R + 0.05], color=FAINT, lw=0.6)
        for pos, color, lw in ((0, FAINT, 1.2), (m, colors[i], 1.6)):
            v = r["rotated"][pos]
            px, py = v[i], v[partner[i]]  # the pair (x_i, x_i+4) as a point of the plane; screen y points down
            c.ax.add_patch(FancyArrowPatch((cx, cy), (cx + R * px, cy - R * py), arrowstyle="-|>",
                                           mutation_scale=8, shrinkA=0, shrinkB=0, color=color, lw=lw))
        c.text(cx, cy + R + 0.15, f"pair {i}", size=LABEL_PT)
        c.text(cx, cy + R + 0.34, f"θ{_sub(i)} = {theta[i]:g}", size=LABEL_PT)
        c.text(cx, cy + R + 0.53, _degrees(m * theta[i]) + "°", size=LABEL_PT, color=colors[i])
    c.text(0.1, 3.3, f"Grey: position 0. Colour: position {m}, turned by {m}·θᵢ. The fast pairs tell nearby\n"
           "positions apart, the slow pairs distant ones.", size=LABEL_PT, color=MUTED, ha="left")

    c.text(0.1, 3.85, "2. Only the distance m − n matters (one pair, θ₀ = 1)", size=TITLE_PT, bold=True, ha="left")
    q0, k0 = [1.0, 0.0], [0.7, 0.0]
    for j, (mq, nk) in enumerate(((3, 1), (6, 4))):
        cx, cy2, R2 = 0.75 + j * 2.3, 4.75, 0.55
        c.ax.add_patch(Circle((cx, cy2), R2, fill=False, edgecolor=FAINT, lw=0.8))
        q, k = r["rotate2"](q0, mq), r["rotate2"](k0, nk)
        for vec, color in ((q, KINDS["attention"][1]), (k, KINDS["tensor"][1])):
            c.ax.add_patch(FancyArrowPatch((cx, cy2), (cx + R2 * vec[0], cy2 - R2 * vec[1]), arrowstyle="-|>",
                                           mutation_scale=9, color=color, lw=1.6, shrinkA=0, shrinkB=0))
        ang_q, ang_k = (math.degrees(math.atan2(v[1], v[0])) for v in (q, k))
        lo, hi = sorted((ang_k, ang_q))
        if hi - lo > 180:
            lo, hi = hi, lo + 360
        c.ax.add_patch(Arc((cx, cy2), 0.45, 0.45, theta1=-hi, theta2=-lo, color=ACCENT, lw=1.2))  # y is flipped
        lx = cx + R2 + 0.12
        c.text(lx, cy2 - 0.36, f"q at m = {mq}", size=LABEL_PT, color=KINDS["attention"][1], ha="left")
        c.text(lx, cy2 - 0.12, f"k at n = {nk}", size=LABEL_PT, color=KINDS["tensor"][1], ha="left")
        c.text(lx, cy2 + 0.12, f"m − n = {mq - nk}", size=LABEL_PT, color=ACCENT, ha="left")
        c.text(lx, cy2 + 0.36, f"q·k = {q[0] * k[0] + q[1] * k[1]:.3f}".replace("-", "−"), size=LABEL_PT, mono=True,
               ha="left")
    c.text(0.1, 5.75, "Both arrows turn further, but the angle between them stays (m − n)·θ₀, and so\n"
           "does the score: $\\mathrm{RoPE}_m(q)\\cdot\\mathrm{RoPE}_n(k) = q\\cdot\\mathrm{RoPE}_{n-m}(k)$.",
           size=LABEL_PT, ha="left")
    return c


def draw_swiglu(f: dict) -> Canvas:
    "SwiGLU: two input projections, the SiLU gate, the product, the output projection; bars to scale."
    dim, hidden = f["swiglu"]["llama7b"]
    s = f["model"]
    c = Canvas(5.65)
    unit = 1.85 / hidden  # inches per feature: a hidden_dim bar is 1.85 in long
    X, XL, XR = 2.4, 1.15, 3.65

    def bar(x, y, n, label=None):
        c.ax.add_patch(Rectangle((x - n * unit / 2, y - 0.07), n * unit, 0.14, facecolor=KINDS["tensor"][0],
                                 edgecolor=KINDS["tensor"][1], lw=1.0))
        if label:
            c.text(x + n * unit / 2 + 0.1, y, label, size=LABEL_PT, mono=True, color=MUTED, ha="left")

    bar(X, 0.3, dim, "x " + s["layers.0.ffn_norm"])
    w1 = c.box(XL, 1.0, 1.6, 0.5, "linear", "w1", "gate: dim → hidden_dim")
    w3 = c.box(XR, 1.0, 1.6, 0.5, "linear", "w3", "up: dim → hidden_dim")
    c.arrow((X, 0.37), (X, 0.52), (XL, 0.52), w1.top)
    c.arrow((X, 0.37), (X, 0.52), (XR, 0.52), w3.top)
    for x0, box in ((XL, w1), (XR, w3)):
        bar(x0, 1.62, hidden)
        c.arrow(box.bottom, (x0, 1.55))
    c.text(X, 1.87, s["layers.0.feed_forward.w1"], size=LABEL_PT, mono=True, color=MUTED)
    silu = c.box(XL, 2.4, 1.1, 0.46, "op", "F.silu", "z·σ(z)")
    c.arrow((XL, 1.69), silu.top)
    prod = c.circle_op(X, 3.05, "x")
    c.arrow(silu.bottom, (XL, prod.y), prod.left)
    c.arrow((XR, 1.69), (XR, prod.y), prod.right)
    c.text(X, prod.y - 0.2, "elementwise", size=LABEL_PT, color=MUTED, va="bottom")
    bar(X, 3.62, hidden, s["layers.0.feed_forward.w3"])
    c.arrow(prod.bottom, (X, 3.55))
    w2 = c.box(X, 4.2, 1.6, 0.5, "linear", "w2", "down: hidden_dim → dim")
    c.arrow((X, 3.69), w2.top)
    bar(X, 4.8, dim, s["layers.0.feed_forward"])
    c.arrow(w2.bottom, (X, 4.73))
    c.text(0.1, 5.3, f"Bars to scale for Llama 7B: dim = {dim}, hidden_dim = llama_hidden_dim({dim})\n"
           f"= {hidden}. Three bias-free dim × hidden_dim matrices hold {3 * hidden / dim:.1f}·dim² weights,\n"
           "as many as the two matrices of a classic MLP of hidden size 4·dim (8·dim²).", size=LABEL_PT,
           color=MUTED, ha="left")
    return c


def draw_kv_cache(f: dict) -> Canvas:
    "Prefill, then one token at a time: what is fed, what is written, what is read, what attention sees."
    c = Canvas(6.1)
    n_slots, cw, sx = 8, 0.3, 0.75  # cache slots, their width, the x of slot 0
    written, read = ACCENT + "40", KINDS["tensor"][0]
    steps = [(range(0, 5), 0, "1. prefill t0…t4 (T = 5, cache.pos = 0), predict t5"),
             (range(5, 6), 5, "2. decode t5 (T = 1, cache.pos = 5), predict t6"),
             (range(6, 7), 6, "3. decode t6 (T = 1, cache.pos = 6), predict t7")]
    for k, (new, pos, title) in enumerate(steps):
        y = 0.22 + k * 1.6
        c.text(0.1, y, title, size=TEXT_PT, bold=True, ha="left")
        ty, cy = y + 0.3, y + 0.82
        c.text(sx - 0.1, ty + 0.14, "fed", size=LABEL_PT, color=MUTED, ha="right")
        c.text(sx - 0.1, cy + 0.14, "cache", size=LABEL_PT, color=MUTED, ha="right")
        for j in range(n_slots):
            x = sx + j * cw
            if j in new:
                c.cell(x, ty, cw, 0.28, KINDS["attention"][0], edge=KINDS["attention"][1], lw=1.0)
                c.text(x + cw / 2, ty + 0.14, f"t{j}", size=LABEL_PT - 0.5, mono=True)
                c.arrow((x + cw / 2, ty + 0.3), (x + cw / 2, cy - 0.02), lw=0.8)
                c.cell(x, cy, cw, 0.28, written, edge=ACCENT, lw=1.2)
            elif j < pos:
                c.cell(x, cy, cw, 0.28, read, edge=KINDS["tensor"][1])
            else:
                c.cell(x, cy, cw, 0.28, PAPER, edge=FAINT, dashed=True)
            c.text(x + cw / 2, cy + 0.42, str(j), size=LABEL_PT - 0.5, mono=True, color=MUTED)
        T, S, g = len(new), pos + len(new), 0.13  # attention: the T new queries (rows) read S keys (columns)
        ax0 = sx + n_slots * cw + 0.35
        for i in range(T):
            for j in range(S):
                c.cell(ax0 + j * g, ty + i * g, g, g, KINDS["attention"][1] if j <= pos + i else PAPER, edge=FAINT,
                       lw=0.4)
        c.text(ax0, ty + T * g + 0.08, f"attention: {T} quer{'ies' if T > 1 else 'y'}\n× {S} keys", size=LABEL_PT,
               color=MUTED, ha="left", va="top")
    y = 5.0
    for i, (fill, edge, dashed, label) in enumerate([(written, ACCENT, False, "written this step"),
                                                     (read, KINDS["tensor"][1], False, "read from the cache"),
                                                     (PAPER, FAINT, True, "allocated, empty")]):
        x = 0.1 + i * 1.6
        c.cell(x, y, 0.22, 0.2, fill, edge=edge, dashed=dashed, lw=1.0)
        c.text(x + 0.3, y + 0.1, label, size=LABEL_PT, color=MUTED, ha="left")
    c.text(0.1, 5.35, "Each layer stores k (after RoPE) and v: cache.k and cache.v, each of shape\n"
           f"{f['cache_shape']}. Only the new tokens go\n"
           "through the model; past keys and values are read, never recomputed; no\nquery is stored.",
           size=LABEL_PT, ha="left", va="top")
    return c


def draw_ddp(f: dict) -> Canvas:
    "Data parallelism: N processes, their shares of the global batch, the gradient all-reduce, rank 0 saving."
    B, N, shares = f["ddp"]["batch"], f["ddp"]["world"], f["ddp"]["shares"]
    c = Canvas(6.55)
    colw = (WIDTH - 0.2) / N
    xs = [0.1 + colw * (r + 0.5) for r in range(N)]
    c.text(0.1, 0.25, f"torchrun --nproc_per_node={N} starts {N} processes, each told its RANK,\n"
           "LOCAL_RANK and WORLD_SIZE.", size=LABEL_PT, ha="left")
    c.text(0.1, 0.7, f"Every rank draws the same global batch of {B} sequences (get_batch, same\n"
           f"seed) and keeps its own share, rank_slice({B}, rank, {N}):", size=LABEL_PT, color=MUTED, ha="left")
    sw, frame_top, frame_bottom = 0.22, 1.5, 5.2
    for r, share in enumerate(shares):
        for j in range(share.start, share.stop):
            x = xs[r] + (j - share.start - (share.stop - share.start) / 2) * sw
            c.cell(x, 1.0, sw, 0.26, KINDS["tensor"][0], edge=KINDS["tensor"][1], lw=0.9)
            c.text(x + sw / 2, 1.13, str(j), size=LABEL_PT - 0.5, mono=True)
        c.arrow((xs[r], 1.28), (xs[r], frame_top), lw=0.9)
    band_y = 4.15
    for r, x in enumerate(xs):
        c.frame(x - colw / 2 + 0.04, frame_top, x + colw / 2 - 0.04, frame_bottom, dashed=False)
        c.text(x, 1.68, f"rank {r}", size=TEXT_PT, bold=True)
        c.text(x, 1.9, f"cuda:{r}", size=LABEL_PT, mono=True, color=MUTED)
        model = c.box(x, 2.35, colw - 0.22, 0.42, "linear", None, "model copy")
        fb = c.box(x, 2.98, colw - 0.22, 0.5, "op", None, "forward,\nbackward")
        c.arrow(model.bottom, fb.top)
        g = c.box(x, 3.55, 0.5, 0.3, "tensor", None, f"g{_sub(r)}")
        c.arrow(fb.bottom, g.top)
        c.arrow(g.bottom, (x, band_y - 0.25))
        step = c.box(x, 4.85, colw - 0.22, 0.46, "op", None, "AdamW\nstep")
        c.arrow((x, band_y + 0.25), step.top)
    c.box(WIDTH / 2, band_y, WIDTH - 0.3, 0.5, "op")
    c.text(WIDTH / 2, band_y, "all-reduce, inside DDP's backward: every rank gets\n"
           f"the mean ḡ = (g₀ + g₁ + … + g{_sub(N - 1)}) / {N}, so every step is the same",
           size=LABEL_PT)
    ck = c.box(0.8, 5.75, 1.35, 0.5, "embedding", "save_checkpoint", "rank 0 only")
    c.arrow((xs[0], frame_bottom - 0.12), (xs[0], ck.y - ck.h / 2))
    c.text(1.6, 5.75, "rank 0 alone logs, samples and saves;\nthe others wait for it at a barrier", size=LABEL_PT,
           ha="left")
    c.text(0.1, 6.3, "wrap_ddp(model) puts the model in DistributedDataParallel; all_reduce_mean\n"
           "averages the logged loss over the ranks.", size=LABEL_PT, color=MUTED, ha="left")
    return c


@dataclass(frozen=True)
class Figure:
    name: str
    draw: Callable[[dict], Canvas]
    alt: str  # what a reader who cannot see the figure needs to know; {fields} from alt_fields()

    def alt_text(self) -> str:
        return self.alt.format(**alt_fields(facts()))


def alt_fields(f: dict) -> dict:
    "The numbers the alt texts quote, from the same facts as the drawings."
    r, m = f["rope"], 2
    fields = {f"deg{i}": _degrees(m * t) for i, t in enumerate(r["theta"])}
    fields.update(dim=f["swiglu"]["llama7b"][0], hidden=f["swiglu"]["llama7b"][1])
    q, k = r["rotate2"]([1.0, 0.0], 3), r["rotate2"]([0.7, 0.0], 1)
    fields["score"] = f"{q[0] * k[0] + q[1] * k[1]:.3f}"
    return fields


FIGURES = [
    Figure("llama_model", draw_llama_model,
           "The Llama model from top to bottom: token ids idx of shape (B, T) go through tok_embeddings to (B, T, "
           "dim), then n_layers TransformerBlocks. In each block, x goes through attention_norm (RMSNorm) and "
           "attention, and is added back to x (residual) to give h; h goes through ffn_norm (RMSNorm) and "
           "feed_forward (SwiGLU) and is added back to h. Every arrow keeps the shape (B, T, dim). A final norm "
           "(RMSNorm) and output, a linear layer to vocab_size, give logits of shape (B, T, vocab_size). Notes in "
           "red mark what differs from the original Transformer: no position embedding (RoPE inside attention), "
           "pre-norm with RMSNorm, grouped-query attention, a separate norm per sub-layer, SwiGLU, a final "
           "RMSNorm and no biases."),
    Figure("llama_attention", draw_llama_attention,
           "Inside the attention layer: x of shape (B, T, dim) is projected by wq, wk and wv and split into heads: "
           "q of shape (B, n_heads, T, head_dim), k and v of shape (B, n_kv_heads, T, head_dim). apply_rotary "
           "rotates q and k (RoPE), not v. During generation cache.update stores the new k and v and returns all "
           "S stored positions. causal_attention computes softmax(q k-transposed / sqrt(head_dim) + causal mask) v, "
           "each key/value head serving a group of query heads, giving (B, n_heads, T, head_dim); the heads are "
           "merged back to (B, T, dim) and projected by wo."),
    Figure("gqa", draw_gqa,
           "Three rows of 8 query heads connected to their key/value heads. Multi-head attention: 8 key/value "
           "heads, one per query head. Grouped-query attention with 2 key/value heads: query heads 0 to 3 share "
           "key/value head 0, heads 4 to 7 share head 1, and the KV cache is a quarter of MHA's. Multi-query "
           "attention: all 8 query heads share one key/value head."),
    Figure("rope", draw_rope,
           "Top: a vector of 8 features drawn as 4 pairs, feature i paired with feature i + 4. Four circles show "
           "each pair as a 2-D arrow at position 0 and at position 2: pair 0 (theta 1) turns by about {deg0} "
           "degrees, pair 1 by about {deg1}, pair 2 by {deg2} and pair 3 by {deg3}. Bottom: one pair of q and k at "
           "positions (3, 1) and at (6, 4); both arrows have turned further in the second case, but the angle "
           "between them is the same, and so is the score q dot k, {score}."),
    Figure("swiglu", draw_swiglu,
           "SwiGLU: x of width dim goes through two projections, w1 (gate) and w3 (up), each to width hidden_dim. "
           "The gate goes through SiLU and is multiplied elementwise with the up projection; w2 (down) maps the "
           "product back to width dim. Bars are drawn to scale for Llama 7B: dim {dim}, hidden_dim {hidden}."),
    Figure("kv_cache", draw_kv_cache,
           "Three steps of generation with a KV cache of 8 slots. Prefill: 5 prompt tokens are fed, their keys "
           "and values are written to slots 0 to 4, and attention is a 5 by 5 causal triangle. Decode step: only "
           "token 5 is fed; its key and value are written to slot 5, slots 0 to 4 are read from the cache, and "
           "its one query attends to 6 keys. Next step: token 6 is written to slot 6 and attends to 7 keys. Past "
           "tokens are never recomputed and queries are never stored."),
    Figure("ddp", draw_ddp,
           "Training on 4 GPUs with DistributedDataParallel: torchrun starts 4 processes, ranks 0 to 3. Every "
           "rank draws the same global batch of 8 sequences and keeps its own 2 (rank_slice). Each runs forward "
           "and backward on its copy of the model, giving gradients g0 to g3; an all-reduce gives every rank "
           "their mean, so every rank takes the same AdamW step. Rank 0 alone writes the checkpoint while the "
           "others wait at a barrier."),
]
BY_NAME = {fig.name: fig for fig in FIGURES}


# ---------------------------------------------------------------------------------------------------------------
# Rendering, embedding, writing.


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
    with plt.rc_context(RC):
        canvas = fig.draw(facts())
        try:
            if problems := layout_problems(canvas):
                raise RuntimeError(f"make_figures: figure {fig.name}: " + "; ".join(problems))
            svg, png = io.BytesIO(), io.BytesIO()
            canvas.fig.savefig(svg, format="svg", metadata=SVG_METADATA, facecolor=PAPER)
            canvas.fig.savefig(png, format="png", dpi=PNG_DPI, metadata=PNG_METADATA, facecolor=PAPER)
        finally:
            plt.close(canvas.fig)
    stamp = hashlib.sha256(svg.getvalue() + fig.alt_text().encode()).hexdigest()[:16]
    return Rendered(svg.getvalue(), _small_png(png.getvalue()), stamp)


def _small_png(png: bytes) -> bytes:
    """The PNG with a palette of 128 colours instead of 8-bit RGBA: a third of the size, which matters because
    every notebook carries its figures, and no visible difference for flat-coloured diagrams."""
    from PIL import Image  # Pillow: installed with matplotlib

    image = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, "PNG",
                                                                                                   optimize=True)
    return out.getvalue()


def css_width(svg: bytes) -> int:
    "The figure's width in CSS pixels, read from the SVG (in points: 1 pt = 4/3 px)."
    m = re.search(rb'<svg[^>]*\swidth="([0-9.]+)pt"', svg)
    return round(float(m.group(1)) * 4 / 3)


# A figure cell holds this marker line, then the <img> line, then anything (a caption). The script rewrites the two
# lines when the stamp differs; the PNG bytes themselves may differ between Pillow versions, the stamp does not.
MARKER = re.compile(r"<!-- figure: (?P<name>[a-z0-9_]+) (?P<stamp>[0-9a-f]{16}) [^\n]*-->\n(?P<img><img [^\n]*>)")


def figure_html(name: str, r: Rendered) -> str:
    "The marker line and the <img> line of a figure cell."
    alt = html.escape(BY_NAME[name].alt_text(), quote=True)
    data = base64.b64encode(r.png).decode("ascii")
    return (f"<!-- figure: {name} {r.stamp} (drawn by notebooks/figures/make_figures.py, which rewrites this line "
            f"and the next: edit the script, not them) -->\n"
            f'<img alt="{alt}" width="{css_width(r.svg)}" src="data:image/png;base64,{data}">')


def figure_cell_source(name: str, caption: str) -> str:
    "The source of a new figure cell showing `name`, with the markdown `caption` below the image."
    return f"{figure_html(name, render(BY_NAME[name]))}\n\n{caption}"


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


def dump_notebook(nb: dict) -> str:
    "The notebook as Jupyter writes it (keys in the order read, one-space indent, UTF-8, final newline)."
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def figure_cells(nb: dict) -> list[tuple[dict, re.Match]]:
    "(cell, marker match) for every figure shown in the notebook's markdown cells."
    return [(cell, m) for cell in nb["cells"] if cell["cell_type"] == "markdown"
            for m in MARKER.finditer("".join(cell["source"]))]


def refresh_notebook(nb: dict, rendered: dict[str, Rendered], where: str = "notebook") -> bool:
    "Rewrite the stale figure cells of `nb` in place; True if anything changed."
    changed = False
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        src = "".join(cell["source"])

        def fresh(m: re.Match) -> str:
            if m["name"] not in rendered:
                raise RuntimeError(f"{where}: a figure cell shows {m['name']!r}, which make_figures.py does not draw "
                                   f"(it draws {', '.join(rendered)})")
            r = rendered[m["name"]]
            return m[0] if m["stamp"] == r.stamp else figure_html(m["name"], r)

        new = MARKER.sub(fresh, src)
        if new != src:
            cell["source"], changed = new.splitlines(keepends=True), True
    return changed


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
