"""The drawings of the model's structure (part of make_figures.py): the whole Llama, its attention layer, and
SwiGLU. Each `draw_NAME(f)` takes the facts measured from the code (facts.py) and returns a Canvas; coordinates
are in inches from the top-left corner.
"""

from __future__ import annotations

from matplotlib.patches import Circle, Rectangle
from style import INK, KINDS, LABEL_PT, MUTED, NAME_PT, TEXT_PT, Box, Canvas

X_MODEL, W_MODEL, X_NOTES = 1.75, 2.05, 3.02  # llama_model: the column's centre, its boxes' width, the notes' x


def draw_llama_model(f: dict) -> Canvas:
    "The whole model with one TransformerBlock opened up: code names, shapes, and what differs from 2017 in red."
    s = f["model"]
    c = Canvas(9.3)
    ids = c.box(X_MODEL, 0.3, 1.1, 0.34, "tensor", name="idx", round_=0.15)
    c.text(X_MODEL + 0.65, 0.3, "token ids", color=MUTED, ha="left")
    emb = c.box(X_MODEL, 1.0, W_MODEL, 0.5, "embedding", "tok_embeddings", "nn.Embedding(vocab_size, dim)")
    c.arrow(ids.bottom, emb.top, label=f["idx"])
    c.note(X_NOTES, emb.y, "★ no position embedding:\nRoPE brings position in,\ninside attention")
    add2, bottom = _transformer_block(c, s, emb)

    fnorm = c.box(X_MODEL, bottom + 0.55, W_MODEL, 0.48, "norm", "norm", "RMSNorm(dim)")
    c.arrow(add2.bottom, fnorm.top, label=s["layers.0"], at=0.65)
    c.note(X_NOTES, fnorm.y, "★ a final RMSNorm: the\nresidual stream is not\nnormalised before")
    head = c.box(X_MODEL, fnorm.y + 0.8, W_MODEL, 0.5, "embedding", "output", "nn.Linear(dim, vocab_size)")
    c.arrow(fnorm.bottom, head.top, label=s["norm"])
    c.note(X_NOTES, head.y, "tie_embeddings=True:\nthe same matrix as\ntok_embeddings", color=MUTED)
    logits = c.box(X_MODEL, head.y + 0.75, 1.1, 0.34, "tensor", name="logits", round_=0.15)
    c.arrow(head.bottom, logits.top, label=s["output"])
    c.note(
        0.12,
        logits.y + 0.45,
        "★ red: what differs from the original Transformer (2017).\nAlso new: no linear layer has a bias.",
    )
    return c


def _transformer_block(c: Canvas, s: dict, emb: Box) -> tuple[Box, float]:
    "layers[i], below `emb`: two sub-layers in a frame, with their notes. Returns the last residual add, the bottom."
    top, split1 = 1.62, 2.12
    c.arrow(emb.bottom, (X_MODEL, split1), label=s["tok_embeddings"], at=0.2)
    norm1, attn, add1 = _sublayer(c, s, split1, "attention_norm", "attention", "attention", "Attention: GQA, RoPE", "x")
    split2 = add1.y + 0.25
    c.arrow(add1.bottom, (X_MODEL, split2), head=False)
    norm2, ffn, add2 = _sublayer(c, s, split2, "ffn_norm", "feed_forward", "ffn", "SwiGLU: w2(silu(w1 x)·w3 x)", "h")
    bottom = add2.y + 0.3
    c.frame(0.12, top, 2.95, bottom)
    c.ax.patches[-1].set_zorder(0)  # behind what is inside it
    c.text(0.22, top + 0.15, "layers[i]:", size=TEXT_PT, mono=True, bold=True, ha="left")
    c.text(0.22, top + 0.33, "TransformerBlock", size=TEXT_PT, mono=True, bold=True, ha="left")
    c.text(2.88, bottom - 0.14, "× n_layers", size=TEXT_PT, bold=True, ha="right")
    c.note(X_NOTES, norm1.y, "★ pre-norm: RMSNorm on\nthe sub-layer's input;\nthe stream itself is\nnever normalised")
    c.note(X_NOTES, attn.y + 0.04, "★ RoPE rotates q and k;\nfewer key/value heads\nthan query heads (GQA)")
    c.note(X_NOTES, norm2.y, "its own RMSNorm, not\nattention_norm again", color=MUTED)
    c.note(X_NOTES, ffn.y, "★ SwiGLU instead of\nReLU(x W₁) W₂")
    return add2, bottom


def _sublayer(c: Canvas, s: dict, y0, norm_name, layer_name, kind, desc, stream) -> tuple[Box, Box, Box]:
    "stream -> norm -> layer -> + stream, the residual connection on the left. Returns the three parts."
    norm = c.box(X_MODEL, y0 + 0.42, W_MODEL, 0.48, "norm", norm_name, "RMSNorm(dim)")
    layer = c.box(X_MODEL, y0 + 1.18, W_MODEL, 0.6, kind, layer_name, desc)
    add = c.circle_op(X_MODEL, y0 + 1.88)
    c.arrow((X_MODEL, y0), norm.top)
    c.arrow(norm.bottom, layer.top, label=s[f"layers.0.{norm_name}"])
    c.arrow(layer.bottom, add.top, label=s[f"layers.0.{layer_name}"])
    c.arrow((X_MODEL, y0), (0.45, y0), (0.45, add.y), add.left)  # the residual connection
    c.ax.add_patch(Circle((X_MODEL, y0), 0.03, color=INK))
    c.text(0.52, (y0 + add.y) / 2, "residual", size=LABEL_PT, color=MUTED, rotation=90, ha="left")
    c.text(X_MODEL + 0.07, y0 - 0.03, stream, size=LABEL_PT, mono=True, color=MUTED, ha="left", va="bottom")
    return norm, layer, add


XS, CW = (0.8, 2.4, 4.0), 1.45  # llama_attention: the q, k and v columns and their width


def draw_llama_attention(f: dict) -> Canvas:
    "Inside Attention: projections, the split into heads, RoPE, the cache, grouped-query attention, wo."
    a = f["attention"]
    c = Canvas(7.1)
    vecs, rope = _qkv(c, a)
    cache = c.box(3.2, 3.35, 3.05, 0.62, "tensor", dashed=True)
    c.text(cache.x, 3.2, "cache.update(layer_idx, k, v)", size=NAME_PT, mono=True, bold=True)
    c.text(
        cache.x,
        3.46,
        "generation only: store the new k, v, read\nall S = cache.pos + T positions",
        size=LABEL_PT,
        color=MUTED,
    )
    c.arrow(rope["k"].bottom, (XS[1], cache.y - cache.h / 2))
    c.arrow(vecs["v"].bottom, (XS[2], cache.y - cache.h / 2))
    att = c.box(2.4, 4.65, 4.6, 0.85, "attention")
    c.arrow(rope["q"].bottom, (XS[0], att.y - att.h / 2))
    for x0 in XS[1:]:
        c.arrow((x0, cache.y + cache.h / 2), (x0, att.y - att.h / 2))
    c.text(
        XS[1] + 0.07,
        3.93,
        "k, v: " + a["k_cached"].replace(", S", ",\nS", 1),
        size=LABEL_PT,
        mono=True,
        color=MUTED,
        ha="left",
    )
    c.text(att.x, att.y - 0.23, "causal_attention(q, k, v)", size=NAME_PT, mono=True, bold=True)
    c.text(att.x, att.y + 0.02, "softmax(q kᵀ / √head_dim + causal mask) v, for every head", size=LABEL_PT)
    c.text(
        att.x,
        att.y + 0.24,
        "each k, v head is shared by n_heads / n_kv_heads query heads (GQA)",
        size=LABEL_PT,
        color=MUTED,
    )
    merge = c.box(2.4, 5.67, 2.6, 0.44, "op", None, "merge heads: transpose, reshape")
    c.arrow(att.bottom, merge.top, label=a["y"])
    wo = c.box(2.4, 6.4, 0.9, 0.44, "linear", name="wo")
    c.arrow(merge.bottom, wo.top, label=a["wo_in"])
    c.arrow(wo.bottom, (2.4, 7.0), label=a["out"] + ": to the residual add")
    return c


def _qkv(c: Canvas, a: dict) -> tuple[dict[str, Box], dict[str, Box]]:
    "x through wq, wk, wv, split into heads; q and k through RoPE. Returns the q, k, v boxes and the RoPE boxes."
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
    return vecs, rope


def draw_swiglu(f: dict) -> Canvas:
    "SwiGLU: two input projections, the SiLU gate, the product, the output projection; bars to scale."
    dim, hidden = f["swiglu"]["llama7b"]
    s = f["model"]
    c = Canvas(5.65)
    unit = 1.85 / hidden  # inches per feature: a hidden_dim bar is 1.85 in long
    X, XL, XR = 2.4, 1.15, 3.65

    def bar(x, y, n, label=None):
        c.ax.add_patch(
            Rectangle(
                (x - n * unit / 2, y - 0.07),
                n * unit,
                0.14,
                facecolor=KINDS["tensor"][0],
                edgecolor=KINDS["tensor"][1],
                lw=1.0,
            )
        )
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
    c.text(
        0.1,
        5.3,
        f"Bars to scale for Llama 7B: dim = {dim}, hidden_dim = llama_hidden_dim({dim})\n"
        f"= {hidden}. Three bias-free dim × hidden_dim matrices hold {3 * hidden / dim:.1f}·dim² weights,\n"
        "as many as the two matrices of a classic MLP of hidden size 4·dim (8·dim²).",
        size=LABEL_PT,
        color=MUTED,
        ha="left",
    )
    return c
