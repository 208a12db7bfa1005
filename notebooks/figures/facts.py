"""What the figures show, taken from the code (part of make_figures.py).

Every module name in a box is looked up in a real `Llama`, every tensor shape on an arrow is measured by running
one, and the GQA head mapping, the RoPE angles, the SwiGLU sizes and the ranks' shares of a batch come from
llama_nb's own functions. `facts()` gathers them all; a name the code no longer has, or a shape made of sizes the
figures do not know, stops the script with an error that names what changed.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# Sizes of the model that is run to measure the shapes: all different, so that every number in a measured shape
# names exactly one symbol. CHUNK is a second call of 7 tokens after 5 cached ones, so S = 5 + 7 keys.
SIZES = dict(
    B=2, T=5, dim=48, n_heads=6, n_kv_heads=3, head_dim=8, hidden_dim=70, vocab_size=11, n_layers=4, max_seq_len=16
)
CHUNK = dict(SIZES, T=7, S=12)
# The modules whose names appear in the figures (layer 0 stands for every layer).
DRAWN_MODULES = [
    "tok_embeddings",
    "layers.0",
    "layers.0.attention_norm",
    "layers.0.attention",
    "layers.0.attention.wq",
    "layers.0.attention.wk",
    "layers.0.attention.wv",
    "layers.0.attention.wo",
    "layers.0.ffn_norm",
    "layers.0.feed_forward",
    "layers.0.feed_forward.w1",
    "layers.0.feed_forward.w3",
    "layers.0.feed_forward.w2",
    "norm",
    "output",
]
PROJECTIONS = {f"layers.0.attention.w{t}" for t in "qkv"}  # outputs before the split into heads: not drawn
# Other names the figures print, checked to exist somewhere in llama_nb ("Class.attribute" for attributes), so
# that a rename in the code cannot leave a figure behind.
DRAWN_NAMES = [
    "Llama",
    "TransformerBlock",
    "Attention",
    "causal_attention",
    "repeat_kv",
    "KVCache.update",
    "LlamaConfig.tie_embeddings",
    "LlamaConfig.n_kv_heads",
    "apply_rotary",
    "rotate_half",
    "rope_frequencies",
    "SwiGLU",
    "llama_hidden_dim",
    "distributed",
    "rank_slice",
    "wrap_ddp",
    "all_reduce_mean",
    "barrier",
    "get_batch",
    "save_checkpoint",
]


def _symbolic(shape, sizes: dict) -> str:
    "A measured shape written with the names of its sizes, e.g. (2, 5, 48) -> '(B, T, dim)'."
    names = {v: k for k, v in sizes.items()}
    unknown = [n for n in shape if n not in names]
    if unknown:
        raise RuntimeError(
            f"make_figures: a tensor of shape {tuple(shape)} has sizes {unknown} that are none of "
            f"{sizes}: the code changed in a way the figures do not know; update facts.py"
        )
    return "(" + ", ".join(names[n] for n in shape) + ")"


def _check_names() -> None:
    "Stop if a name in DRAWN_NAMES is in no llama_nb module (an attribute: not in its class)."
    import importlib
    import pkgutil

    import llama_nb

    modules = [
        importlib.import_module(f"llama_nb.{info.name}")
        for info in pkgutil.iter_modules(llama_nb.__path__)
        if not info.name.startswith("_")
    ]
    missing = []
    for name in DRAWN_NAMES:
        owner, _, attr = name.partition(".")
        found = [getattr(mod, owner) for mod in modules if hasattr(mod, owner)]
        fields = getattr(found[0], "__dataclass_fields__", {}) if found else {}
        if not found or (attr and not hasattr(found[0], attr) and attr not in fields):
            missing.append(name)
    if missing:
        raise RuntimeError(
            f"make_figures: the figures name {missing}, which llama_nb no longer has: update the figures to the code"
        )


class _InsideAttention(TorchFunctionMode):
    """Records the shapes that one attention layer computes between its submodules, where module hooks cannot
    look: the q, k and v that causal_attention hands to F.scaled_dot_product_attention (k_read, v_read: what
    attention reads, from the cache if there is one) and the y it gets back, and the keys that KVCache.update
    writes into `cache.k` (k_written: the new tokens' keys). `start` and `stop` are the layer's forward pre-hook
    and forward hook, so only that layer is recorded; as a torch function mode it sees only the torch calls made
    inside its `with` block, and nothing global is replaced."""

    def __init__(self):
        super().__init__()
        self.on, self.cache, self.seen = False, None, {}

    def start(self, module, args) -> None:
        self.on = True

    def stop(self, module, args, output) -> None:
        self.on = False

    def take(self) -> dict:
        "What was recorded since the last take."
        seen, self.seen = self.seen, {}
        return seen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.on and func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            self.seen.update(q=tuple(q.shape), k_read=tuple(k.shape), v_read=tuple(v.shape), y=tuple(out.shape))
        elif self.on and func is torch.Tensor.__setitem__ and self.cache is not None and args[0] is self.cache.k:
            self.seen["k_written"] = tuple(args[2].shape)  # cache.k[layer, :, :, pos : pos + T] = k
        return out


def _small_llama():
    "A Llama of SIZES with random weights, checked to have every module the figures show."
    from llama_nb import model as m

    s = SIZES
    config = m.LlamaConfig(
        vocab_size=s["vocab_size"],
        dim=s["dim"],
        n_layers=s["n_layers"],
        n_heads=s["n_heads"],
        n_kv_heads=s["n_kv_heads"],
        hidden_dim=s["hidden_dim"],
        max_seq_len=s["max_seq_len"],
    )
    if config.head_dim != s["head_dim"]:
        raise RuntimeError(f"make_figures: expected head_dim {s['head_dim']}, the config gives {config.head_dim}")
    with torch.random.fork_rng(devices=[]):  # the random initial weights do not matter; leave the caller's RNG be
        model = m.Llama(config).eval()
    missing = [n for n in DRAWN_MODULES if n not in dict(model.named_modules())]
    if missing:
        raise RuntimeError(f"make_figures: the figures show modules {missing}, which Llama no longer has")
    return model


def _shapes() -> dict:
    """The shapes the figures print, measured while a small Llama runs three times: without a cache (the model's
    shapes), then a prefill of T tokens into a KV cache (q, and k as the layer stores it) and a chunk of CHUNK["T"]
    more tokens (what attention reads: S keys)."""
    model = _small_llama()
    modules = dict(model.named_modules())
    out, inputs = {}, {}  # raw shapes (wk's output, (B, T, n_kv_heads * head_dim), has no single name)

    def hook(mod, args, y, name):
        out[name], inputs[name] = tuple(y.shape), tuple(args[0].shape)

    inside, attention = _InsideAttention(), modules["layers.0.attention"]
    hooks = [modules[n].register_forward_hook(functools.partial(hook, name=n)) for n in DRAWN_MODULES]
    hooks += [attention.register_forward_pre_hook(inside.start), attention.register_forward_hook(inside.stop)]
    B = SIZES["B"]
    try:
        with torch.no_grad(), inside:
            idx = torch.zeros(B, SIZES["T"], dtype=torch.long)
            logits, _ = model(idx)
            out["logits"] = tuple(logits.shape)
            model_shapes = {n: _symbolic(shape, SIZES) for n, shape in out.items() if n not in PROJECTIONS}
            cache = inside.cache = model.new_cache(B)
            inside.take()
            model(idx, cache=cache)  # prefill 5 tokens
            prefill = inside.take()
            model(torch.zeros(B, CHUNK["T"], dtype=torch.long), cache=cache)  # then 7: attention reads S = 12 keys
            chunk = inside.take()
    finally:
        for h in hooks:
            h.remove()
    if not all({"q", "k_read", "y", "k_written"} <= seen.keys() for seen in (prefill, chunk)):
        raise RuntimeError(
            "make_figures: Attention no longer calls F.scaled_dot_product_attention (through "
            "causal_attention) or no longer writes its keys into cache.k; update facts.py to observe "
            "q, k, v another way"
        )
    cache_shape = _symbolic(cache.k.shape, SIZES)
    if _symbolic(cache.v.shape, SIZES) != cache_shape:
        raise RuntimeError("make_figures: the cache's keys and values have different shapes")
    return {
        "idx": _symbolic(idx.shape, SIZES),
        "model": model_shapes,
        "attention": {
            "x": model_shapes["layers.0.attention_norm"],
            "q": _symbolic(prefill["q"], SIZES),
            "k": _symbolic(prefill["k_written"], SIZES),
            "q_chunk": _symbolic(chunk["q"], CHUNK),
            "k_chunk": _symbolic(chunk["k_written"], CHUNK),
            "k_cached": _symbolic(chunk["k_read"], CHUNK),
            "y": _symbolic(chunk["y"], CHUNK),
            "wo_in": _symbolic(inputs["layers.0.attention.wo"], CHUNK),
            "out": model_shapes["layers.0.attention"],
        },
        "cache_shape": cache_shape,
    }


def _gqa() -> dict:
    "For MHA, GQA and MQA with 8 query heads: (n_heads, n_kv_heads, the key/value head each query head reads)."
    from llama_nb.attention import repeat_kv

    def kv_head_of_query(n_heads: int, n_kv_heads: int) -> list[int]:  # as repeat_kv lays the heads out
        heads = torch.arange(n_kv_heads, dtype=torch.float32).view(1, n_kv_heads, 1, 1)
        return [int(h) for h in repeat_kv(heads, n_heads // n_kv_heads).flatten()]

    return {name: (8, n_kv, kv_head_of_query(8, n_kv)) for name, n_kv in (("MHA", 8), ("GQA", 2), ("MQA", 1))}


def _rope() -> dict:
    "RoPE for head_dim 8: which feature pairs with which, the angles, and vectors rotated by llama_nb.rope."
    from llama_nb import rope

    d_rope = 8
    partner = rope.rotate_half(torch.eye(d_rope)).abs().argmax(dim=-1).tolist()  # feature c is paired with this
    cos, sin = rope.precompute_rope_cache(d_rope, 16)
    start = torch.tensor([1.0] * (d_rope // 2) + [0.0] * (d_rope // 2)).view(1, 1, 1, d_rope)  # every pair (1, 0)
    rotated = {pos: rope.apply_rotary(start, cos, sin, offset=pos).flatten().tolist() for pos in (0, 2)}
    cos2, sin2 = rope.precompute_rope_cache(2, 16)  # one pair, for the relative-position picture

    def rotate2(vec, pos):
        return rope.apply_rotary(torch.tensor(vec).view(1, 1, 1, 2), cos2, sin2, offset=pos).flatten().tolist()

    return {
        "head_dim": d_rope,
        "partner": partner,
        "theta": rope.rope_frequencies(d_rope).tolist(),
        "rotated": rotated,
        "rotate2": rotate2,
        "theta2": rope.rope_frequencies(2).tolist()[0],
    }


@functools.cache
def facts() -> dict:
    "Everything the figures take from the code: measured shapes, the GQA mapping, RoPE angles, sizes, shares."
    from llama_nb import gpu, swiglu

    _check_names()
    return {
        **_shapes(),
        "gqa": _gqa(),
        "rope": _rope(),
        "swiglu": {"llama7b": (4096, swiglu.llama_hidden_dim(4096, 256))},
        "ddp": {"batch": 8, "world": 4, "shares": [gpu.rank_slice(8, r, 4) for r in range(4)]},
    }
