"""Tests for llama_nb.rope (chapter 3): reference equality, properties, layouts, bad input, and the einsum bug."""

import math

import pytest
import torch

from llama_nb.rope import (
    apply_rotary,
    permute_hf_to_meta,
    permute_meta_to_hf,
    precompute_rope_cache,
    rope_frequencies,
    rotate_half,
)
from llama_nb.testing import scores_depend_only_on_distance


def rotation_matrices(head_dim, L, base=10000.0):
    """R[m] (head_dim, head_dim) with R[m] @ x = split-half RoPE of x at position m."""
    cos, sin = precompute_rope_cache(head_dim, L, base)
    h, idx = head_dim // 2, torch.arange(head_dim // 2)
    R = torch.zeros(L, head_dim, head_dim)
    R[:, idx, idx], R[:, idx + h, idx + h] = cos[:, :h], cos[:, :h]
    R[:, idx, idx + h], R[:, idx + h, idx] = -sin[:, :h], sin[:, :h]
    return R


def meta_freqs_cis(head_dim, max_seq_len, base=10000.0):
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), freqs)
    return torch.polar(torch.ones_like(angles), angles)


def meta_apply_rotary(x, freqs_cis):
    """Meta's interleaved RoPE on x (B, T, n_heads, head_dim)."""
    x_complex = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    rotated = x_complex * freqs_cis[None, : x.shape[1], None, :]
    return torch.view_as_real(rotated).flatten(3).type_as(x)


# ---------------------------------------------------------------- basics


def test_frequencies():
    theta = rope_frequencies(8, base=10000.0)
    assert theta.dtype == torch.float32 and theta.shape == (4,)
    torch.testing.assert_close(theta, torch.tensor([10000.0 ** (-2 * i / 8) for i in range(4)]))
    assert theta[0].item() == 1.0
    assert torch.all(theta[1:] < theta[:-1])


def test_cache_layout():
    cos, sin = precompute_rope_cache(16, 10, base=500000.0)
    assert cos.shape == sin.shape == (10, 16) and cos.dtype == sin.dtype == torch.float32
    torch.testing.assert_close(cos[:, :8], cos[:, 8:], rtol=0, atol=0)
    torch.testing.assert_close(sin[:, :8], sin[:, 8:], rtol=0, atol=0)
    assert torch.equal(cos[0], torch.ones(16)) and torch.equal(sin[0], torch.zeros(16))
    theta = rope_frequencies(16, 500000.0)
    torch.testing.assert_close(cos[7, :8], torch.cos(7 * theta))
    torch.testing.assert_close(sin[7, :8], torch.sin(7 * theta))


def test_rotate_half():
    x = torch.arange(8.0)
    assert torch.equal(rotate_half(x), torch.tensor([-4.0, -5, -6, -7, 0, 1, 2, 3]))
    assert torch.equal(rotate_half(rotate_half(x)), -x)


def complex_rope_reference(x, offset=0, base=10000.0):
    """RoPE written independently, in float64 complex numbers: in the split-half layout, pair i of a head is the
    complex number x_i + j x_(i + d/2), and position m multiplies it by e^(j m theta_i), theta_i = base^(-2i/d)."""
    d = x.shape[-1]
    x = x.double()
    theta = torch.tensor([base ** (-2 * i / d) for i in range(d // 2)], dtype=torch.float64)  # Python floats
    m = torch.arange(offset, offset + x.shape[-2], dtype=torch.float64)[:, None]  # (T, 1) absolute positions
    z = torch.complex(x[..., : d // 2], x[..., d // 2 :]) * torch.polar(torch.ones_like(m * theta), m * theta)
    return torch.cat([z.real, z.imag], dim=-1)


@pytest.mark.parametrize(
    "head_dim, base, offset", [(16, 10000.0, 0), (16, 10000.0, 37), (64, 500000.0, 5), (8, 10.0, 90)]
)
def test_matches_complex_number_rotation(head_dim, base, offset):
    torch.manual_seed(0)
    cos, sin = precompute_rope_cache(head_dim, 128, base)
    x = torch.randn(2, 3, 30, head_dim)
    out = apply_rotary(x, cos, sin, offset=offset)
    torch.testing.assert_close(out.double(), complex_rope_reference(x, offset, base), rtol=1e-4, atol=1e-4)


def test_position_zero_is_identity_and_dtype_kept():
    torch.manual_seed(0)
    cos, sin = precompute_rope_cache(16, 32)
    x = torch.randn(2, 3, 5, 16)
    assert torch.equal(apply_rotary(x, cos, sin)[:, :, 0], x[:, :, 0])
    for dtype in [torch.bfloat16, torch.float16]:
        xd = x.to(dtype)
        out = apply_rotary(xd, cos, sin, offset=4)
        assert out.dtype == dtype
        # computed in float32 and rounded once: the exact rotation rounded to dtype (arithmetic in dtype itself
        # would be off by an ulp in about a quarter of the entries); a 1% allowance for float32 ties
        exact = complex_rope_reference(xd, offset=4)
        torch.testing.assert_close(out.double(), exact, rtol=torch.finfo(dtype).eps, atol=1e-5)
        assert (out != exact.to(dtype)).double().mean().item() <= 0.01


# ---------------------------------------------------------------- properties


def test_norms_preserved():
    torch.manual_seed(0)
    cos, sin = precompute_rope_cache(64, 256)
    x = torch.randn(2, 4, 200, 64)
    torch.testing.assert_close(apply_rotary(x, cos, sin, offset=50).norm(dim=-1), x.norm(dim=-1))


@pytest.mark.parametrize("base", [10000.0, 500000.0])
def test_scores_depend_only_on_distance(base):
    cos, sin = precompute_rope_cache(32, 128, base)
    assert scores_depend_only_on_distance(lambda x: apply_rotary(x, cos, sin))


def test_relative_property_for_explicit_shifts():
    torch.manual_seed(0)
    cos, sin = precompute_rope_cache(64, 1024)
    q, k = torch.randn(64), torch.randn(64)

    def at(v, pos):
        return apply_rotary(v.view(1, 1, 1, -1), cos, sin, offset=pos).flatten()

    for m, n in [(0, 0), (3, 10), (50, 7), (100, 99)]:
        ref = at(q, m) @ at(k, n)
        for s in [1, 2, 17, 100, 333, 500]:
            torch.testing.assert_close(at(q, m + s) @ at(k, n + s), ref, rtol=1e-4, atol=1e-4)


def test_score_depends_on_distance():
    torch.manual_seed(0)
    cos, sin = precompute_rope_cache(32, 64)
    q = apply_rotary(torch.randn(32).expand(1, 1, 64, 32), cos, sin)[0, 0]
    k = apply_rotary(torch.randn(32).expand(1, 1, 64, 32), cos, sin)[0, 0]
    by_distance = torch.stack([q[32] @ k[32 - d] for d in range(8)])
    assert (by_distance.max() - by_distance.min()).item() > 0.1


def test_offset_chunks_equal_full_sequence():
    torch.manual_seed(0)
    cos, sin = precompute_rope_cache(16, 32)
    x = torch.randn(1, 2, 12, 16)
    chunks = torch.cat(
        [
            apply_rotary(x[:, :, :7], cos, sin, offset=0),
            apply_rotary(x[:, :, 7:11], cos, sin, offset=7),
            apply_rotary(x[:, :, 11:], cos, sin, offset=11),
        ],
        dim=2,
    )
    torch.testing.assert_close(chunks.double(), complex_rope_reference(x), rtol=1e-5, atol=1e-5)


def test_score_vs_distance_all_ones_closed_form():
    head_dim, L = 128, 64
    cos, sin = precompute_rope_cache(head_dim, L)
    rotated = apply_rotary(torch.ones(1, 1, L, head_dim), cos, sin)[0, 0]
    theta = rope_frequencies(head_dim).double()
    expected = torch.stack([2 * torch.cos(m * theta).sum() for m in range(L)]).float()
    torch.testing.assert_close(rotated @ rotated[0], expected, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------- the einsum bug


def test_correct_einsum_matches_and_buggy_einsum_is_cos_scaling():
    torch.manual_seed(0)
    L, head_dim = 64, 32
    R = rotation_matrices(head_dim, L)
    cos, sin = precompute_rope_cache(head_dim, L)
    x = torch.randn(2, 2, L, head_dim)
    torch.testing.assert_close(torch.einsum("lde,bhle->bhld", R, x), apply_rotary(x, cos, sin))
    torch.testing.assert_close(torch.einsum("bhld,ldd->bhld", x, R), x * cos)


def test_einsum_bug_fails_the_relative_property():
    L, head_dim = 128, 32
    R = rotation_matrices(head_dim, L)
    assert scores_depend_only_on_distance(lambda x: torch.einsum("lde,bhle->bhld", R, x))
    assert not scores_depend_only_on_distance(lambda x: torch.einsum("bhld,ldd->bhld", x, R))


def test_einsum_bug_fails_norm_preservation():
    torch.manual_seed(0)
    L, head_dim = 64, 32
    R = rotation_matrices(head_dim, L)
    x = torch.randn(1, 1, L, head_dim)
    assert not torch.allclose(torch.einsum("bhld,ldd->bhld", x, R).norm(dim=-1), x.norm(dim=-1))


# ---------------------------------------------------------------- transformers reference


@pytest.mark.parametrize("base", [10000.0, 500000.0])
@pytest.mark.parametrize("offset", [0, 37])
def test_matches_transformers(base, offset):
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    torch.manual_seed(0)
    n_heads, head_dim, max_len, T = 4, 16, 128, 10
    cfg = transformers.LlamaConfig(
        hidden_size=n_heads * head_dim, num_attention_heads=n_heads, max_position_embeddings=max_len, rope_theta=base
    )
    hf_rope = LlamaRotaryEmbedding(cfg)
    cos, sin = precompute_rope_cache(head_dim, max_len, base=base)
    hf_cos, hf_sin = hf_rope(torch.zeros(1), torch.arange(max_len)[None])
    torch.testing.assert_close(cos, hf_cos[0])
    torch.testing.assert_close(sin, hf_sin[0])

    q, k = torch.randn(2, n_heads, T, head_dim), torch.randn(2, n_heads, T, head_dim)
    hf_cos, hf_sin = hf_rope(q, torch.arange(offset, offset + T)[None])
    hf_q, hf_k = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    torch.testing.assert_close(apply_rotary(q, cos, sin, offset=offset), hf_q)
    torch.testing.assert_close(apply_rotary(k, cos, sin, offset=offset), hf_k)


# ---------------------------------------------------------------- Meta's interleaved layout


def test_permutation_round_trip_and_row_mapping():
    n_heads, head_dim, dim2 = 3, 8, 5
    w = torch.arange(n_heads * head_dim * dim2, dtype=torch.float32).view(n_heads * head_dim, dim2)
    hf = permute_meta_to_hf(w, n_heads)
    assert torch.equal(permute_hf_to_meta(hf, n_heads), w)
    assert torch.equal(permute_meta_to_hf(permute_hf_to_meta(w, n_heads), n_heads), w)
    for h in range(n_heads):
        for i in range(head_dim // 2):
            assert torch.equal(hf[h * head_dim + i], w[h * head_dim + 2 * i])
            assert torch.equal(hf[h * head_dim + head_dim // 2 + i], w[h * head_dim + 2 * i + 1])


@pytest.mark.parametrize("n_heads,n_kv_heads", [(4, 4), (4, 2)])
def test_interleaved_and_split_half_agree_after_permutation(n_heads, n_kv_heads):
    torch.manual_seed(0)
    B, T, head_dim = 2, 12, 16
    dim = n_heads * head_dim
    x = torch.randn(B, T, dim)
    wq = torch.randn(n_heads * head_dim, dim) / dim**0.5
    wk = torch.randn(n_kv_heads * head_dim, dim) / dim**0.5

    freqs_cis = meta_freqs_cis(head_dim, 64)
    q_meta = meta_apply_rotary((x @ wq.T).view(B, T, n_heads, head_dim), freqs_cis)
    k_meta = meta_apply_rotary((x @ wk.T).view(B, T, n_kv_heads, head_dim), freqs_cis)
    k_meta = k_meta.repeat_interleave(n_heads // n_kv_heads, dim=2)
    scores_meta = torch.einsum("bthd,bshd->bhts", q_meta, k_meta)

    cos, sin = precompute_rope_cache(head_dim, 64)
    wq_hf, wk_hf = permute_meta_to_hf(wq, n_heads), permute_meta_to_hf(wk, n_kv_heads)
    q_hf = apply_rotary((x @ wq_hf.T).view(B, T, n_heads, head_dim).transpose(1, 2), cos, sin)
    k_hf = apply_rotary((x @ wk_hf.T).view(B, T, n_kv_heads, head_dim).transpose(1, 2), cos, sin)
    k_hf = k_hf.repeat_interleave(n_heads // n_kv_heads, dim=1)
    torch.testing.assert_close(q_hf @ k_hf.transpose(-1, -2), scores_meta)

    q_back = permute_hf_to_meta(q_hf.transpose(1, 2).reshape(B * T, dim).T, n_heads).T
    torch.testing.assert_close(q_back.reshape(B, T, n_heads, head_dim), q_meta)

    # without the permutation, the layouts disagree
    q_wrong = apply_rotary((x @ wq.T).view(B, T, n_heads, head_dim).transpose(1, 2), cos, sin)
    k_wrong = apply_rotary((x @ wk.T).view(B, T, n_kv_heads, head_dim).transpose(1, 2), cos, sin)
    k_wrong = k_wrong.repeat_interleave(n_heads // n_kv_heads, dim=1)
    assert not torch.allclose(q_wrong @ k_wrong.transpose(-1, -2), scores_meta, atol=1e-3)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("head_dim", [7, 0, -2])
def test_bad_head_dim(head_dim):
    with pytest.raises(ValueError, match="positive, even head dimension"):
        rope_frequencies(head_dim)
    with pytest.raises(ValueError, match="positive, even head dimension"):
        precompute_rope_cache(head_dim, 16)


def test_odd_head_dim_in_apply():
    cos, sin = precompute_rope_cache(8, 16)
    with pytest.raises(ValueError, match="even head dimension"):
        apply_rotary(torch.randn(1, 1, 4, 7), cos[:, :7], sin[:, :7])


def test_positions_beyond_cache():
    cos, sin = precompute_rope_cache(16, 16)
    with pytest.raises(ValueError, match=r"8\.\.17 .*max_seq_len=16; enlarge max_seq_len"):
        apply_rotary(torch.randn(1, 1, 10, 16), cos, sin, offset=8)
    apply_rotary(torch.randn(1, 1, 10, 16), cos, sin, offset=6)  # exactly fits


def test_negative_offset_and_cache_mismatch():
    cos, sin = precompute_rope_cache(16, 16)
    with pytest.raises(ValueError, match="offset must be non-negative"):
        apply_rotary(torch.randn(1, 1, 2, 16), cos, sin, offset=-1)
    with pytest.raises(ValueError, match="RoPE cache must be"):
        apply_rotary(torch.randn(1, 1, 2, 8), cos, sin)


def test_bad_base_and_length():
    with pytest.raises(ValueError, match="greater than 1"):
        rope_frequencies(8, base=1.0)
    with pytest.raises(ValueError, match="max_seq_len must be positive"):
        precompute_rope_cache(8, 0)


def test_bad_permutation_input():
    with pytest.raises(ValueError, match="2-D projection weight"):
        permute_meta_to_hf(torch.randn(8), 2)
    with pytest.raises(ValueError, match="even head dimension"):
        permute_meta_to_hf(torch.randn(12, 4), 4)  # head_dim 3
    with pytest.raises(ValueError, match="even head dimension"):
        permute_hf_to_meta(torch.randn(10, 4), 3)


def test_frequency_ladder_extremes():
    theta = rope_frequencies(128, 10000.0)
    assert math.isclose(theta[-1].item(), 10000.0 ** (-126 / 128), rel_tol=1e-5)
