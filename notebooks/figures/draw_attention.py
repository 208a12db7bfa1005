"""The drawings of how attention uses its heads and positions (part of make_figures.py): grouped-query attention,
RoPE, and the KV cache. Each `draw_NAME(f)` takes the facts measured from the code (facts.py) and returns a
Canvas; coordinates are in inches from the top-left corner.
"""

from __future__ import annotations

import math

from matplotlib.patches import Arc, Circle, FancyArrowPatch, FancyBboxPatch
from style import ACCENT, FAINT, KINDS, LABEL_PT, MUTED, PAPER, TEXT_PT, TITLE_PT, Canvas, degrees, subscript


def draw_gqa(f: dict) -> Canvas:
    "Which key/value head each query head reads, for MHA, GQA and MQA, as repeat_kv lays them out."
    c = Canvas(5.4)
    desc = {
        "MHA": "multi-head: one key/value head per query head",
        "GQA": "grouped-query: a group of query heads shares one",
        "MQA": "multi-query: all query heads share one",
    }
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
            c.ax.add_patch(
                FancyBboxPatch(
                    (left, qy - 0.05),
                    right - left,
                    size + 0.1,
                    facecolor=KINDS["frame"][0],
                    boxstyle="round,pad=0,rounding_size=0.05",
                    edgecolor=FAINT,
                    lw=0.8,
                )
            )
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
    c.text(
        0.1,
        5.12,
        "Query head h reads key/value head h // (n_heads / n_kv_heads), in repeat_kv's\n"
        "order. The KV cache holds n_kv_heads heads per layer: here 8, 2 and 1.",
        size=LABEL_PT,
        ha="left",
    )
    return c


ROPE_COLORS = ["#b5531c", "#2b62a3", "#2e7d4f", "#6f42a1"]  # one per pair (the edges of the box kinds)


def draw_rope(f: dict) -> Canvas:
    "A query as pairs, each rotated by its own angle; and why the score depends only on the distance."
    r = f["rope"]
    c = Canvas(6.05)
    _rope_pairs(c, r)
    _rope_angles(c, r)
    _rope_distance(c, r)
    return c


def _rope_pairs(c: Canvas, r: dict) -> None:
    "1. The features of a vector, coloured and joined by the pair they belong to (split-half)."
    d, partner, colors = r["head_dim"], r["partner"], ROPE_COLORS
    c.text(0.1, 0.2, f"1. A query or key of head_dim {d} is {d // 2} pairs", size=TITLE_PT, bold=True, ha="left")
    w, x0, y0 = 0.4, 0.15, 0.45
    for i in range(d):  # feature c is paired with partner[c]: split-half, c + head_dim/2
        pair = min(i, partner[i])
        c.cell(x0 + i * w, y0, w, 0.34, colors[pair] + "30", edge=colors[pair], lw=1.1)
        c.text(x0 + i * w + w / 2, y0 + 0.17, f"x{i}", size=LABEL_PT, mono=True)
    for i in range(d // 2):
        a, b, depth = x0 + i * w + w / 2, x0 + partner[i] * w + w / 2, 0.1 + 0.07 * i
        c.ax.plot([a, a, b, b], [y0 + 0.36, y0 + 0.36 + depth, y0 + 0.36 + depth, y0 + 0.36], color=colors[i], lw=1.0)
    c.text(
        x0 + d * w + 0.12,
        y0 + 0.3,
        "pair i is\n$(x_i,\\ x_{i+4})$,\nsplit-half, as in\nrotate_half",
        size=LABEL_PT,
        color=MUTED,
        ha="left",
    )


def _rope_angles(c: Canvas, r: dict) -> None:
    "Each pair as an arrow in its plane, at position 0 and at position m, turned by m θᵢ."
    d, theta, partner, colors = r["head_dim"], r["theta"], r["partner"], ROPE_COLORS
    m = 2
    c.text(
        0.1,
        1.42,
        f"Each pair turns by its own angle $m\\,\\theta_i$, with $\\theta_i = 10000^{{-2i/{d}}}$",
        size=TEXT_PT,
        ha="left",
    )
    R, cy = 0.4, 2.15
    for i in range(d // 2):
        cx = 0.6 + i * 1.2
        c.ax.add_patch(Circle((cx, cy), R, fill=False, edgecolor=FAINT, lw=0.8))
        c.ax.plot([cx - R - 0.05, cx + R + 0.05], [cy, cy], color=FAINT, lw=0.6)
        c.ax.plot([cx, cx], [cy - R - 0.05, cy + R + 0.05], color=FAINT, lw=0.6)
        for pos, color, lw in ((0, FAINT, 1.2), (m, colors[i], 1.6)):
            v = r["rotated"][pos]
            px, py = v[i], v[partner[i]]  # the pair (x_i, x_i+4) as a point of the plane; screen y points down
            c.ax.add_patch(
                FancyArrowPatch(
                    (cx, cy),
                    (cx + R * px, cy - R * py),
                    arrowstyle="-|>",
                    mutation_scale=8,
                    shrinkA=0,
                    shrinkB=0,
                    color=color,
                    lw=lw,
                )
            )
        c.text(cx, cy + R + 0.15, f"pair {i}", size=LABEL_PT)
        c.text(cx, cy + R + 0.34, f"θ{subscript(i)} = {theta[i]:g}", size=LABEL_PT)
        c.text(cx, cy + R + 0.53, degrees(m * theta[i]) + "°", size=LABEL_PT, color=colors[i])
    c.text(
        0.1,
        3.3,
        f"Grey: position 0. Colour: position {m}, turned by {m}·θᵢ. The fast pairs tell nearby\n"
        "positions apart, the slow pairs distant ones.",
        size=LABEL_PT,
        color=MUTED,
        ha="left",
    )


def _rope_distance(c: Canvas, r: dict) -> None:
    "2. One pair of q and k at two pairs of positions the same distance apart: the same angle, the same score."
    c.text(0.1, 3.85, "2. Only the distance m − n matters (one pair, θ₀ = 1)", size=TITLE_PT, bold=True, ha="left")
    q0, k0 = [1.0, 0.0], [0.7, 0.0]
    for j, (mq, nk) in enumerate(((3, 1), (6, 4))):
        cx, cy2, R2 = 0.75 + j * 2.3, 4.75, 0.55
        c.ax.add_patch(Circle((cx, cy2), R2, fill=False, edgecolor=FAINT, lw=0.8))
        q, k = r["rotate2"](q0, mq), r["rotate2"](k0, nk)
        for vec, color in ((q, KINDS["attention"][1]), (k, KINDS["tensor"][1])):
            c.ax.add_patch(
                FancyArrowPatch(
                    (cx, cy2),
                    (cx + R2 * vec[0], cy2 - R2 * vec[1]),
                    arrowstyle="-|>",
                    mutation_scale=9,
                    color=color,
                    lw=1.6,
                    shrinkA=0,
                    shrinkB=0,
                )
            )
        ang_q, ang_k = (math.degrees(math.atan2(v[1], v[0])) for v in (q, k))
        lo, hi = sorted((ang_k, ang_q))
        if hi - lo > 180:
            lo, hi = hi, lo + 360
        c.ax.add_patch(Arc((cx, cy2), 0.45, 0.45, theta1=-hi, theta2=-lo, color=ACCENT, lw=1.2))  # y is flipped
        lx = cx + R2 + 0.12
        c.text(lx, cy2 - 0.36, f"q at m = {mq}", size=LABEL_PT, color=KINDS["attention"][1], ha="left")
        c.text(lx, cy2 - 0.12, f"k at n = {nk}", size=LABEL_PT, color=KINDS["tensor"][1], ha="left")
        c.text(lx, cy2 + 0.12, f"m − n = {mq - nk}", size=LABEL_PT, color=ACCENT, ha="left")
        c.text(
            lx,
            cy2 + 0.36,
            f"q·k = {q[0] * k[0] + q[1] * k[1]:.3f}".replace("-", "−"),
            size=LABEL_PT,
            mono=True,
            ha="left",
        )
    c.text(
        0.1,
        5.75,
        "Both arrows turn further, but the angle between them stays (m − n)·θ₀, and so\n"
        "does the score: $\\mathrm{RoPE}_m(q)\\cdot\\mathrm{RoPE}_n(k) = q\\cdot\\mathrm{RoPE}_{n-m}(k)$.",
        size=LABEL_PT,
        ha="left",
    )


WRITTEN, READ = ACCENT + "40", KINDS["tensor"][0]  # kv_cache: the fill of a slot written, of a slot read


def draw_kv_cache(f: dict) -> Canvas:
    "Prefill, then one token at a time: what is fed, what is written, what is read, what attention sees."
    c = Canvas(6.1)
    steps = [
        (range(0, 5), 0, "1. prefill t0…t4 (T = 5, cache.pos = 0), predict t5"),
        (range(5, 6), 5, "2. decode t5 (T = 1, cache.pos = 5), predict t6"),
        (range(6, 7), 6, "3. decode t6 (T = 1, cache.pos = 6), predict t7"),
    ]
    for k, (new, pos, title) in enumerate(steps):
        _kv_step(c, 0.22 + k * 1.6, new, pos, title)
    y = 5.0
    for i, (fill, edge, dashed, label) in enumerate(
        [
            (WRITTEN, ACCENT, False, "written this step"),
            (READ, KINDS["tensor"][1], False, "read from the cache"),
            (PAPER, FAINT, True, "allocated, empty"),
        ]
    ):
        x = 0.1 + i * 1.6
        c.cell(x, y, 0.22, 0.2, fill, edge=edge, dashed=dashed, lw=1.0)
        c.text(x + 0.3, y + 0.1, label, size=LABEL_PT, color=MUTED, ha="left")
    c.text(
        0.1,
        5.35,
        "Each layer stores k (after RoPE) and v: cache.k and cache.v, each of shape\n"
        f"{f['cache_shape']}. Only the new tokens go\n"
        "through the model; past keys and values are read, never recomputed; no\nquery is stored.",
        size=LABEL_PT,
        ha="left",
        va="top",
    )
    return c


def _kv_step(c: Canvas, y: float, new: range, pos: int, title: str) -> None:
    "One step at height y: the tokens fed, the cache slots written and read, the attention pattern."
    n_slots, cw, sx = 8, 0.3, 0.75  # cache slots, their width, the x of slot 0
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
            c.cell(x, cy, cw, 0.28, WRITTEN, edge=ACCENT, lw=1.2)
        elif j < pos:
            c.cell(x, cy, cw, 0.28, READ, edge=KINDS["tensor"][1])
        else:
            c.cell(x, cy, cw, 0.28, PAPER, edge=FAINT, dashed=True)
        c.text(x + cw / 2, cy + 0.42, str(j), size=LABEL_PT - 0.5, mono=True, color=MUTED)
    T, S, g = len(new), pos + len(new), 0.13  # attention: the T new queries (rows) read S keys (columns)
    ax0 = sx + n_slots * cw + 0.35
    for i in range(T):
        for j in range(S):
            c.cell(ax0 + j * g, ty + i * g, g, g, KINDS["attention"][1] if j <= pos + i else PAPER, edge=FAINT, lw=0.4)
    c.text(
        ax0,
        ty + T * g + 0.08,
        f"attention: {T} quer{'ies' if T > 1 else 'y'}\n× {S} keys",
        size=LABEL_PT,
        color=MUTED,
        ha="left",
        va="top",
    )
