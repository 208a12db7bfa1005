"""The list of the book's figures (part of make_figures.py): each one's name (NAME.svg, and the figure cells that
show it), the function that draws it, and its alt text, whose numbers come from the same facts as the drawing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from draw_attention import draw_gqa, draw_kv_cache, draw_rope
from draw_model import draw_llama_attention, draw_llama_model, draw_swiglu
from draw_training import draw_ddp
from facts import facts
from style import Canvas, degrees


@dataclass(frozen=True)
class Figure:
    "One figure: its name, how it is drawn, and what a reader who cannot see it is told."

    name: str
    draw: Callable[[dict], Canvas]
    alt: str  # what a reader who cannot see the figure needs to know; {fields} from alt_fields()

    def alt_text(self) -> str:
        return self.alt.format(**alt_fields(facts()))


def alt_fields(f: dict) -> dict:
    "The numbers the alt texts quote, from the same facts as the drawings."
    r, m = f["rope"], 2
    fields = {f"deg{i}": degrees(m * t) for i, t in enumerate(r["theta"])}
    fields.update(dim=f["swiglu"]["llama7b"][0], hidden=f["swiglu"]["llama7b"][1])
    q, k = r["rotate2"]([1.0, 0.0], 3), r["rotate2"]([0.7, 0.0], 1)
    fields["score"] = f"{q[0] * k[0] + q[1] * k[1]:.3f}"
    return fields


FIGURES = [
    Figure(
        "llama_model",
        draw_llama_model,
        "The Llama model from top to bottom: token ids idx of shape (B, T) go through tok_embeddings to (B, T, "
        "dim), then n_layers TransformerBlocks. In each block, x goes through attention_norm (RMSNorm) and "
        "attention, and is added back to x (residual) to give h; h goes through ffn_norm (RMSNorm) and "
        "feed_forward (SwiGLU) and is added back to h. Every arrow keeps the shape (B, T, dim). A final norm "
        "(RMSNorm) and output, a linear layer to vocab_size, give logits of shape (B, T, vocab_size). Notes in "
        "red mark what differs from the original Transformer: no position embedding (RoPE inside attention), "
        "pre-norm with RMSNorm, grouped-query attention, a separate norm per sub-layer, SwiGLU, a final "
        "RMSNorm and no biases.",
    ),
    Figure(
        "llama_attention",
        draw_llama_attention,
        "Inside the attention layer: x of shape (B, T, dim) is projected by wq, wk and wv and split into heads: "
        "q of shape (B, n_heads, T, head_dim), k and v of shape (B, n_kv_heads, T, head_dim). apply_rotary "
        "rotates q and k (RoPE), not v. During generation cache.update stores the new k and v and returns all "
        "S stored positions. causal_attention computes softmax(q k-transposed / sqrt(head_dim) + causal mask) v, "
        "each key/value head serving a group of query heads, giving (B, n_heads, T, head_dim); the heads are "
        "merged back to (B, T, dim) and projected by wo.",
    ),
    Figure(
        "gqa",
        draw_gqa,
        "Three rows of 8 query heads connected to their key/value heads. Multi-head attention: 8 key/value "
        "heads, one per query head. Grouped-query attention with 2 key/value heads: query heads 0 to 3 share "
        "key/value head 0, heads 4 to 7 share head 1, and the KV cache is a quarter of MHA's. Multi-query "
        "attention: all 8 query heads share one key/value head.",
    ),
    Figure(
        "rope",
        draw_rope,
        "Top: a vector of 8 features drawn as 4 pairs, feature i paired with feature i + 4. Four circles show "
        "each pair as a 2-D arrow at position 0 and at position 2: pair 0 (theta 1) turns by about {deg0} "
        "degrees, pair 1 by about {deg1}, pair 2 by {deg2} and pair 3 by {deg3}. Bottom: one pair of q and k at "
        "positions (3, 1) and at (6, 4); both arrows have turned further in the second case, but the angle "
        "between them is the same, and so is the score q dot k, {score}.",
    ),
    Figure(
        "swiglu",
        draw_swiglu,
        "SwiGLU: x of width dim goes through two projections, w1 (gate) and w3 (up), each to width hidden_dim. "
        "The gate goes through SiLU and is multiplied elementwise with the up projection; w2 (down) maps the "
        "product back to width dim. Bars are drawn to scale for Llama 7B: dim {dim}, hidden_dim {hidden}.",
    ),
    Figure(
        "kv_cache",
        draw_kv_cache,
        "Three steps of generation with a KV cache of 8 slots. Prefill: 5 prompt tokens are fed, their keys "
        "and values are written to slots 0 to 4, and attention is a 5 by 5 causal triangle. Decode step: only "
        "token 5 is fed; its key and value are written to slot 5, slots 0 to 4 are read from the cache, and "
        "its one query attends to 6 keys. Next step: token 6 is written to slot 6 and attends to 7 keys. Past "
        "tokens are never recomputed and queries are never stored.",
    ),
    Figure(
        "ddp",
        draw_ddp,
        "Training on 4 GPUs with DistributedDataParallel: torchrun starts 4 processes, ranks 0 to 3. Every "
        "rank draws the same global batch of 8 sequences and keeps its own 2 (rank_slice). Each runs forward "
        "and backward on its copy of the model, giving gradients g0 to g3; an all-reduce gives every rank "
        "their mean, so every rank takes the same AdamW step. Rank 0 alone writes the checkpoint while the "
        "others wait at a barrier.",
    ),
]
BY_NAME = {fig.name: fig for fig in FIGURES}
