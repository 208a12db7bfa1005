"""The drawing of training on several GPUs (part of make_figures.py): data parallelism with DDP. `draw_ddp(f)`
takes the facts measured from the code (facts.py) and returns a Canvas; coordinates are in inches from the
top-left corner.
"""

from __future__ import annotations

from style import KINDS, LABEL_PT, MUTED, TEXT_PT, WIDTH, Canvas, subscript

FRAME_TOP, FRAME_BOTTOM, BAND_Y = 1.5, 5.2, 4.15  # the ranks' frames, the all-reduce band across them


def draw_ddp(f: dict) -> Canvas:
    "Data parallelism: N processes, their shares of the global batch, the gradient all-reduce, rank 0 saving."
    B, N, shares = f["ddp"]["batch"], f["ddp"]["world"], f["ddp"]["shares"]
    c = Canvas(6.55)
    colw = (WIDTH - 0.2) / N
    xs = [0.1 + colw * (r + 0.5) for r in range(N)]
    c.text(
        0.1,
        0.25,
        f"torchrun --nproc_per_node={N} starts {N} processes, each told its RANK,\nLOCAL_RANK and WORLD_SIZE.",
        size=LABEL_PT,
        ha="left",
    )
    c.text(
        0.1,
        0.7,
        f"Every rank draws the same global batch of {B} sequences (get_batch, same\n"
        f"seed) and keeps its own share, rank_slice({B}, rank, {N}):",
        size=LABEL_PT,
        color=MUTED,
        ha="left",
    )
    sw = 0.22
    for r, share in enumerate(shares):
        for j in range(share.start, share.stop):
            x = xs[r] + (j - share.start - (share.stop - share.start) / 2) * sw
            c.cell(x, 1.0, sw, 0.26, KINDS["tensor"][0], edge=KINDS["tensor"][1], lw=0.9)
            c.text(x + sw / 2, 1.13, str(j), size=LABEL_PT - 0.5, mono=True)
        c.arrow((xs[r], 1.28), (xs[r], FRAME_TOP), lw=0.9)
    for r, x in enumerate(xs):
        _rank(c, r, x, colw)
    c.box(WIDTH / 2, BAND_Y, WIDTH - 0.3, 0.5, "op")
    c.text(
        WIDTH / 2,
        BAND_Y,
        "all-reduce, inside DDP's backward: every rank gets\n"
        f"the mean ḡ = (g₀ + g₁ + … + g{subscript(N - 1)}) / {N}, so every step is the same",
        size=LABEL_PT,
    )
    ck = c.box(0.8, 5.75, 1.35, 0.5, "embedding", "save_checkpoint", "rank 0 only")
    c.arrow((xs[0], FRAME_BOTTOM - 0.12), (xs[0], ck.y - ck.h / 2))
    c.text(
        1.6,
        5.75,
        "rank 0 alone logs, samples and saves;\nthe others wait for it at a barrier",
        size=LABEL_PT,
        ha="left",
    )
    c.text(
        0.1,
        6.3,
        "wrap_ddp(model) puts the model in DistributedDataParallel; all_reduce_mean\n"
        "averages the logged loss over the ranks.",
        size=LABEL_PT,
        color=MUTED,
        ha="left",
    )
    return c


def _rank(c: Canvas, r: int, x: float, colw: float) -> None:
    "Process r, a column centred at x: its model copy, forward and backward, its gradient, its optimiser step."
    c.frame(x - colw / 2 + 0.04, FRAME_TOP, x + colw / 2 - 0.04, FRAME_BOTTOM, dashed=False)
    c.text(x, 1.68, f"rank {r}", size=TEXT_PT, bold=True)
    c.text(x, 1.9, f"cuda:{r}", size=LABEL_PT, mono=True, color=MUTED)
    model = c.box(x, 2.35, colw - 0.22, 0.42, "linear", None, "model copy")
    fb = c.box(x, 2.98, colw - 0.22, 0.5, "op", None, "forward,\nbackward")
    c.arrow(model.bottom, fb.top)
    g = c.box(x, 3.55, 0.5, 0.3, "tensor", None, f"g{subscript(r)}")
    c.arrow(fb.bottom, g.top)
    c.arrow(g.bottom, (x, BAND_Y - 0.25))
    step = c.box(x, 4.85, colw - 0.22, 0.46, "op", None, "AdamW\nstep")
    c.arrow((x, BAND_Y + 0.25), step.top)
