"""Tests for llama_nb.swiglu (chapter 4): reference equality, Llama sizes, properties, bad input, the seed's variant."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llama_nb.swiglu import SwiGLU, llama_hidden_dim


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def matches_mlp_budget(ffn, dim, multiple_of):
    """True if ffn has as many parameters as a bias-free 4*dim two-matrix MLP (8 dim^2), up to the rounding."""
    return abs(n_params(ffn) - 8 * dim * dim) <= 3 * dim * multiple_of


def zero_in_zero_out(ffn, dim):
    with torch.no_grad():
        return bool((ffn(torch.zeros(1, dim)) == 0).all())


class SeedSwiGLU(nn.Module):
    """NOT Llama's SwiGLU: square biased layers and a learned beta, as in one inspiration."""

    def __init__(self, dim):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.linear_gate = nn.Linear(dim, dim)
        self.beta = nn.Parameter(torch.ones(1))

    def forward(self, x):
        x = self.linear(x)
        swish = x * torch.sigmoid(self.beta * x)
        return swish * self.linear_gate(x)


def seed_ffn(dim):
    return nn.Sequential(nn.Linear(dim, dim), SeedSwiGLU(dim))


def test_structure():
    ffn = SwiGLU(64, 192)
    assert ffn.w1.weight.shape == (192, 64)
    assert ffn.w3.weight.shape == (192, 64)
    assert ffn.w2.weight.shape == (64, 192)
    assert all(m.bias is None for m in (ffn.w1, ffn.w2, ffn.w3))
    assert set(ffn.state_dict()) == {"w1.weight", "w2.weight", "w3.weight"}


@pytest.mark.parametrize("dim,hidden", [(64, 192), (96, 128), (256, 704)])
def test_matches_formula(dim, hidden):
    torch.manual_seed(0)
    ffn = SwiGLU(dim, hidden)
    x = torch.randn(3, 7, dim)
    W1, W2, W3 = ffn.w1.weight, ffn.w2.weight, ffn.w3.weight
    torch.testing.assert_close(ffn(x), (F.silu(x @ W1.T) * (x @ W3.T)) @ W2.T)
    # SiLU is x * sigmoid(x): check the activation itself against its definition too
    h = x @ W1.T
    torch.testing.assert_close(F.silu(h), h * torch.sigmoid(h))


def test_matches_transformers_llama_mlp():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(0)
    dim, hidden = 64, 192
    ffn = SwiGLU(dim, hidden)
    cfg = transformers.LlamaConfig(
        hidden_size=dim, intermediate_size=hidden, num_attention_heads=4, hidden_act="silu", mlp_bias=False
    )
    hf = LlamaMLP(cfg)
    hf.load_state_dict(
        {"gate_proj.weight": ffn.w1.weight, "up_proj.weight": ffn.w3.weight, "down_proj.weight": ffn.w2.weight}
    )
    x = torch.randn(2, 5, dim)
    torch.testing.assert_close(ffn(x), hf(x))


@pytest.mark.parametrize(
    "dim,multiple_of,mult,expected",
    [
        (4096, 256, None, 11008),  # Llama 7B
        (5120, 256, None, 13824),  # Llama 13B
        (6656, 256, None, 17920),  # Llama 33B
        (8192, 256, None, 22016),  # Llama 65B
        (8192, 4096, 1.3, 28672),  # Llama 2 70B
    ],
)
def test_llama_published_hidden_sizes(dim, multiple_of, mult, expected):
    assert llama_hidden_dim(dim, multiple_of, mult) == expected


def test_hidden_dim_rounding():
    assert llama_hidden_dim(96, multiple_of=1) == 256  # 8 * 96 / 3 exactly
    assert llama_hidden_dim(64, multiple_of=1) == 170  # floor(170.67)
    assert llama_hidden_dim(64, multiple_of=32) == 192  # rounded up
    for dim in [8, 100, 288, 1000]:
        for m in [1, 8, 32, 256]:
            h = llama_hidden_dim(dim, m)
            assert h % m == 0 and h >= int(8 * dim / 3) and h - int(8 * dim / 3) < m


@pytest.mark.parametrize("dim,multiple_of", [(64, 32), (96, 1), (288, 32), (4096, 256)])
def test_parameter_budget_matches_4d_mlp(dim, multiple_of):
    with torch.device("meta"):
        ffn = SwiGLU(dim, llama_hidden_dim(dim, multiple_of))
        mlp = nn.Sequential(nn.Linear(dim, 4 * dim, bias=False), nn.GELU(), nn.Linear(4 * dim, dim, bias=False))
    assert n_params(mlp) == 8 * dim * dim
    assert n_params(ffn) == 3 * dim * llama_hidden_dim(dim, multiple_of)
    assert matches_mlp_budget(ffn, dim, multiple_of)


def test_zero_in_zero_out():
    assert zero_in_zero_out(SwiGLU(64, 192), 64)


def test_position_wise():
    torch.manual_seed(0)
    ffn = SwiGLU(32, 96)
    x = torch.randn(2, 6, 32)
    x2 = x.clone()
    x2[:, 3:] = torch.randn(2, 3, 32)
    torch.testing.assert_close(ffn(x2)[:, :3], ffn(x)[:, :3])


def test_seed_variant_fails_the_properties():
    torch.manual_seed(0)
    dim, multiple_of = 64, 32
    bad = seed_ffn(dim)
    assert not matches_mlp_budget(bad, dim, multiple_of)
    assert not zero_in_zero_out(bad, dim)
    assert n_params(bad) == 3 * dim * dim + 3 * dim + 1


def test_meta_state_dict_loads_into_ours_not_the_seed():
    state = {"w1.weight": torch.randn(192, 64), "w2.weight": torch.randn(64, 192), "w3.weight": torch.randn(192, 64)}
    SwiGLU(64, 192).load_state_dict(state)
    with pytest.raises(RuntimeError):
        seed_ffn(64).load_state_dict(state)


@pytest.mark.parametrize("dim,hidden", [(0, 128), (64, 0), (-1, 128), (64, -5)])
def test_bad_sizes(dim, hidden):
    with pytest.raises(ValueError, match="dim and hidden_dim must be positive"):
        SwiGLU(dim, hidden)


def test_bad_hidden_dim_args():
    with pytest.raises(ValueError, match="dim must be positive"):
        llama_hidden_dim(0)
    with pytest.raises(ValueError, match="multiple_of must be positive"):
        llama_hidden_dim(64, multiple_of=0)
    with pytest.raises(ValueError, match="ffn_dim_multiplier must be positive"):
        llama_hidden_dim(64, ffn_dim_multiplier=-1.0)


def test_wrong_input_dimension():
    with pytest.raises(ValueError, match=r"expected the last dimension of the input to be 64, got 32"):
        SwiGLU(64, 192)(torch.randn(2, 32))
