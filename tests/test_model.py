"""Tests for Chapter 5: llama_nb.attention (5.1), llama_nb.kv_cache (5.2) and llama_nb.model (5.3). Saving and
loading in Hugging Face's format (llama_nb.hf, 5.4) is tested in test_hf.py."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import SMALL, randomise, run_python, small_model
from torch.testing import assert_close

from llama_nb import model as llama_model
from llama_nb.attention import causal_attention, causal_mask, naive_causal_attention, repeat_kv
from llama_nb.core import ArgumentError
from llama_nb.kv_cache import KVCache
from llama_nb.model import Llama, LlamaConfig, count_parameters, parameter_breakdown
from llama_nb.rope import apply_rotary
from llama_nb.testing import is_causal_model


def ids(B: int, T: int, vocab: int = SMALL["vocab_size"], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------- attention


def prefix_softmax_reference(q, k, v):
    "Per query position i (the last T of S): softmax over keys 0..S-T+i only, no mask. MHA only."
    T, S = q.shape[-2], k.shape[-2]
    rows = []
    for i in range(T):
        end = S - T + i + 1
        w = torch.softmax(q[:, :, i : i + 1] @ k[:, :, :end].transpose(-2, -1) / math.sqrt(q.shape[-1]), -1)
        rows.append(w @ v[:, :, :end])
    return torch.cat(rows, dim=2)


@pytest.mark.parametrize("T,S", [(7, 7), (1, 7), (3, 7)])
def test_attention_matches_prefix_softmax(T, S):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, T, 8), torch.randn(2, 3, S, 8), torch.randn(2, 3, S, 8)
    ref = prefix_softmax_reference(q, k, v)
    assert_close(naive_causal_attention(q, k, v), ref)
    assert_close(causal_attention(q, k, v), ref)


def test_attention_matches_torch_sdpa_and_weights_are_causal():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 9, 16).unbind(0)
    out, w = naive_causal_attention(q, k, v, return_weights=True)
    assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert_close(w.sum(-1), torch.ones(2, 4, 9))
    assert bool((w.triu(diagonal=1) == 0).all())


def test_causal_mask_bottom_right_and_errors():
    assert torch.equal(causal_mask(3), torch.ones(3, 3, dtype=torch.bool).tril())
    assert torch.equal(causal_mask(2, 4), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match="1 <= T <= S"):
        causal_mask(5, 3)


@pytest.mark.parametrize("n_kv", [8, 4, 2, 1])
def test_grouped_query_attention_matches_per_head_reference(n_kv):
    torch.manual_seed(0)
    H, r = 8, 8 // n_kv
    q, k, v = torch.randn(2, H, 5, 8), torch.randn(2, n_kv, 5, 8), torch.randn(2, n_kv, 5, 8)
    per_head = torch.cat(
        [
            prefix_softmax_reference(q[:, h : h + 1], k[:, h // r : h // r + 1], v[:, h // r : h // r + 1])
            for h in range(H)
        ],
        dim=1,
    )
    assert_close(repeat_kv(k, r), k.repeat_interleave(r, dim=1))
    assert_close(naive_causal_attention(q, k, v), per_head)
    assert_close(causal_attention(q, k, v), per_head)


def test_wrong_gqa_grouping_is_detected():
    "Sharing kv heads round-robin (tile) instead of in consecutive groups gives different results."
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    tiled = naive_causal_attention(q, k.repeat(1, 2, 1, 1), v.repeat(1, 2, 1, 1))
    assert not torch.allclose(tiled, causal_attention(q, k, v), atol=1e-4)


# ---------------------------------------------------------------------------------------------------- config


def test_config_defaults_are_filled_in_and_round_trip():
    cfg = LlamaConfig(dim=64, n_heads=4, multiple_of=16)
    assert cfg.n_kv_heads == 4 and cfg.head_dim == 16
    assert cfg.hidden_dim == 176  # int(8 * 64 / 3) = 170, rounded up to a multiple of 16
    assert LlamaConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        LlamaConfig.from_dict({**cfg.to_dict(), "n_embd": 3})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dim=100, n_heads=8), "divisible by n_heads"),
        (dict(n_heads=8, n_kv_heads=3), "divisible by n_kv_heads"),
        (dict(dim=24, n_heads=8), "head_dim .* must be even"),
        (dict(vocab_size=0), "vocab_size must be an int >= 1"),
        (dict(n_layers=2.0), "n_layers must be an int"),
        (dict(n_heads=True), "n_heads must be an int"),
        (dict(n_kv_heads=0), "n_kv_heads must be an int >= 1"),
        (dict(max_seq_len=-1), "max_seq_len"),
        (dict(hidden_dim=0), "hidden_dim"),
        (dict(dropout=1.0), "dropout must be a number in"),
        (dict(dropout=-0.1), "dropout"),
        (dict(norm_eps=0.0), "norm_eps"),
        (dict(rope_theta=float("nan")), "rope_theta"),
        (dict(tie_embeddings="yes"), "tie_embeddings"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LlamaConfig(**kwargs)


def test_llama_needs_a_config():
    with pytest.raises(ArgumentError, match="LlamaConfig"):
        Llama(SMALL)


# ---------------------------------------------------------------------------------------------------- model


def test_forward_shapes_loss_and_ignore_index():
    model = small_model()
    x = ids(3, 10)
    logits, loss = model(x)
    assert logits.shape == (3, 10, 97) and logits.dtype == torch.float32 and loss is None
    targets = ids(3, 10, seed=1)
    _, loss = model(x, targets)
    assert_close(loss, F.cross_entropy(logits.reshape(-1, 97), targets.reshape(-1)))
    assert abs(loss.item() - math.log(97)) < 0.1  # near-uniform predictions at initialisation
    masked = targets.clone()
    masked[:, :5] = -100
    _, loss_masked = model(x, masked)
    assert_close(loss_masked, F.cross_entropy(logits[:, 5:].reshape(-1, 97), targets[:, 5:].reshape(-1)))


def test_tied_and_untied_embeddings():
    tied, untied = small_model(), small_model(tie_embeddings=False)
    assert tied.output.weight is tied.tok_embeddings.weight
    assert untied.output.weight is not untied.tok_embeddings.weight
    assert "rope_cos" not in tied.state_dict()  # recomputed from the config, not saved


def test_initialisation_scales():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=1000, dim=256, n_layers=8, n_heads=8, max_seq_len=16, tie_embeddings=False)
    model = Llama(cfg)
    resid = 0.02 / math.sqrt(2 * cfg.n_layers)
    for layer in model.layers:
        assert abs(layer.attention.wo.weight.std().item() - resid) < 0.1 * resid
        assert abs(layer.feed_forward.w2.weight.std().item() - resid) < 0.1 * resid
        assert abs(layer.attention.wq.weight.std().item() - 0.02) < 0.002
        assert abs(layer.feed_forward.w1.weight.std().item() - 0.02) < 0.002
        assert torch.equal(layer.attention_norm.weight, torch.ones(256))
    for w in (model.tok_embeddings.weight, model.output.weight):
        assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.001


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(n_kv_heads=2),
        dict(n_kv_heads=1, tie_embeddings=False),
        dict(dim=48, n_heads=6, hidden_dim=100),
    ],
)
def test_parameter_count_formula(overrides):
    cfg = LlamaConfig(**{**SMALL, **overrides})
    model = Llama(cfg)
    assert count_parameters(cfg) == model.num_parameters() == sum(p.numel() for p in model.parameters())
    parts = parameter_breakdown(cfg)
    assert parts["norms"] == sum(p.numel() for n, p in model.named_parameters() if n.endswith("norm.weight"))
    assert parts["attention"] == sum(p.numel() for n, p in model.named_parameters() if ".attention.w" in n)


def test_parameter_count_matches_published_llama_sizes():
    llama2_7b = LlamaConfig(vocab_size=32000, dim=4096, n_layers=32, n_heads=32, hidden_dim=11008, tie_embeddings=False)
    llama3_8b = LlamaConfig(
        vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, hidden_dim=14336, tie_embeddings=False
    )
    assert count_parameters(llama2_7b) == 6_738_415_616
    assert count_parameters(llama3_8b) == 8_030_261_248


@pytest.mark.parametrize("n_kv", [4, 2, 1])
def test_model_is_causal(n_kv):
    assert is_causal_model(randomise(small_model(n_kv_heads=n_kv)))


def test_causality_test_catches_a_leaky_mask(monkeypatch):
    def leaky(q, k, v, dropout_p=0.0):  # each position also sees the next one
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril(diagonal=1)
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v

    monkeypatch.setattr(llama_model, "causal_attention", leaky)
    assert not is_causal_model(randomise(small_model()))


def test_dropout_only_in_training():
    model = randomise(small_model(dropout=0.5))
    x = ids(2, 8)
    with torch.no_grad():
        a, b = model(x)[0], model(x)[0]
        assert torch.equal(a, b)
        model.train()
        c = model(x)[0]
    assert not torch.allclose(a, c)


def test_backward_reaches_every_parameter():
    model = small_model(n_kv_heads=2, tie_embeddings=False).train()
    x = ids(2, 12)
    model(x[:, :-1], x[:, 1:])[1].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.tensor([[1, 2, 97]]), r"must be in \[0, 97\), got 97"),
        (torch.tensor([[1, -1]]), r"must be in \[0, 97\), got -1"),
        (torch.tensor([[1.0, 2.0]]), "integer tensor"),
        (torch.tensor([[True]]), "integer tensor"),
        (torch.tensor([1, 2, 3]), r"shape \(batch, seq_len\)"),
        ([[1, 2]], "torch.Tensor"),
        (torch.zeros(0, 4, dtype=torch.long), "empty"),
        (torch.zeros(2, 0, dtype=torch.long), "empty"),
        (torch.zeros(1, 25, dtype=torch.long), "sequence too long"),
    ],
)
def test_bad_input_ids(bad, match):
    with pytest.raises(ValueError, match=match):
        small_model()(bad)


def test_bad_targets():
    model, x = small_model(), ids(2, 5)
    with pytest.raises(ValueError, match="targets must have the shape of idx"):
        model(x, ids(2, 4))
    with pytest.raises(ValueError, match="targets must be in"):
        model(x, torch.full((2, 5), 97))
    with pytest.raises(ValueError, match="targets must be in"):
        model(x, torch.full((2, 5), -5))
    with pytest.raises(ValueError, match="targets must be an integer tensor"):
        model(x, x.float())


# ---------------------------------------------------------------------------------------------------- KV cache


@pytest.mark.parametrize("n_kv", [4, 2, 1])
@pytest.mark.parametrize("chunks", [[1] * 16, [5] + [1] * 11, [3, 1, 6, 2, 4]])
def test_kv_cache_matches_full_forward(n_kv, chunks):
    model = randomise(small_model(n_kv_heads=n_kv))
    x = ids(2, 16)
    with torch.no_grad():
        full, _ = model(x)
        cache, out, start = model.new_cache(2), [], 0
        for n in chunks:
            out.append(model(x[:, start : start + n], cache=cache)[0])
            start += n
    assert cache.pos == 16
    assert_close(torch.cat(out, dim=1), full)
    cache.reset()
    assert cache.pos == 0
    with torch.no_grad():  # a reset cache is reusable
        assert_close(model(x[:, :4], cache=cache)[0], full[:, :4])


def test_kv_cache_stores_keys_and_values_at_their_absolute_positions():
    "RoPE is relative, so a uniform shift of every position leaves all logits unchanged: check the stored keys."
    model = randomise(small_model(n_kv_heads=2))
    x = ids(2, 9)
    with torch.no_grad():
        cache = model.new_cache(2)
        model(x[:, :4], cache=cache)
        model(x[:, 4:], cache=cache)
        a = model.layers[0].attention
        h = model.layers[0].attention_norm(model.tok_embeddings(x))  # (B, T, dim): what layer 0's attention reads
        k = a.wk(h).view(2, 9, 2, 8).transpose(1, 2)  # (B, n_kv_heads, T, head_dim)
        v = a.wv(h).view(2, 9, 2, 8).transpose(1, 2)
    assert_close(cache.k[0, :, :, :9], apply_rotary(k, model.rope_cos, model.rope_sin))  # key t rotated by t
    assert_close(cache.v[0, :, :, :9], v)
    assert not cache.k[:, :, :, 9:].any()  # nothing written beyond pos


@pytest.mark.parametrize("prefill", [24, 20, 1])
def test_kv_cache_filled_to_exactly_max_seq_len(prefill):
    "The last position of the context (max_seq_len - 1) is reachable through the cache and matches a full pass."
    model = randomise(small_model(n_kv_heads=2))
    x = ids(1, SMALL["max_seq_len"])
    with torch.no_grad():
        full, _ = model(x)
        cache = model.new_cache(1)
        steps = [model(x[:, :prefill], cache=cache)[0]]
        steps += [model(x[:, t : t + 1], cache=cache)[0] for t in range(prefill, SMALL["max_seq_len"])]
        assert cache.pos == SMALL["max_seq_len"]
        assert_close(torch.cat(steps, dim=1), full)
        with pytest.raises(ValueError, match="sequence too long: 24 cached"):
            model(x[:, :1], cache=cache)


def test_decoding_after_a_prompt_of_max_seq_len_minus_one():
    model = randomise(small_model())
    x = ids(2, SMALL["max_seq_len"])
    with torch.no_grad():
        full, _ = model(x)
        cache = model.new_cache(2)
        prompt_logits, _ = model(x[:, :-1], cache=cache)
        last, _ = model(x[:, -1:], cache=cache)
    assert_close(prompt_logits, full[:, :-1])
    assert_close(last, full[:, -1:])


def test_kv_cache_sizes_and_errors():
    model = small_model(n_kv_heads=2)
    cache = model.new_cache(3, max_seq_len=10)
    assert isinstance(cache, KVCache)
    assert cache.k.shape == (2, 3, 2, 10, 8) and cache.k.dtype == torch.float32
    assert cache.batch_size == 3 and cache.max_seq_len == 10 and cache.pos == 0
    with torch.no_grad():
        with pytest.raises(ValueError, match="batch size"):
            model(ids(2, 3), cache=cache)
        model(ids(3, 8), cache=cache)
        with pytest.raises(ValueError, match="sequence too long: 8 cached"):
            model(ids(3, 3), cache=cache)
    with pytest.raises(ValueError, match="max_seq_len"):
        model.new_cache(1, max_seq_len=25)
    with pytest.raises(ValueError, match="batch_size"):
        model.new_cache(0)


def test_model_module_does_not_import_transformers():
    code = "import sys, llama_nb.model; assert 'transformers' not in sys.modules"
    proc = run_python("-c", code)
    assert proc.returncode == 0, proc.stderr
