"""Tests for llama_nb.swiglu (chapter 4): reference equality, Llama sizes, properties, bad input, the seed's variant."""

import math

import pytest
import torch
from torch import nn

from llama_nb.swiglu import SwiGLU, llama_hidden_dim
from llama_nb.testing import matches_mlp_budget, zero_in_zero_out


def n_params(module):
    return sum(p.numel() for p in module.parameters())


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


def swiglu_reference(x, w1, w2, w3):
    "w2 (silu(w1 x) * w3 x) in float64, with SiLU written out: silu(a) = a / (1 + e^-a) (no torch activation)."
    x, w1, w2, w3 = (t.detach().double() for t in (x, w1, w2, w3))
    gate = torch.einsum("...d,hd->...h", x, w1)
    up = torch.einsum("...d,hd->...h", x, w3)
    return torch.einsum("...h,dh->...d", gate / (1 + torch.exp(-gate)) * up, w2)


@pytest.mark.parametrize("dim,hidden", [(64, 192), (96, 128), (256, 704)])
def test_matches_formula(dim, hidden):
    torch.manual_seed(0)
    ffn = SwiGLU(dim, hidden)
    x = torch.randn(3, 7, dim)
    out = ffn(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    expected = swiglu_reference(x, ffn.w1.weight, ffn.w2.weight, ffn.w3.weight)
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-6)


def test_identity_weights_give_silu_gate_times_input_by_hand():
    "With w1 = w3 = w2 = I the network is silu(x) * x: values worked out by hand (silu(1) = 1 / (1 + 1/e))."
    ffn = SwiGLU(3, 3)
    with torch.no_grad():
        for w in (ffn.w1, ffn.w2, ffn.w3):
            w.weight.copy_(torch.eye(3))
    x = torch.tensor([[0.0, 1.0, -2.0]])
    silu = [0.0, 1 / (1 + math.exp(-1.0)), -2 / (1 + math.exp(2.0))]  # 0, 0.7311, -0.2384
    expected = torch.tensor([[s * v for s, v in zip(silu, [0.0, 1.0, -2.0])]])  # 0, 0.7311, 0.4768
    torch.testing.assert_close(ffn(x), expected)
    # gate and up are not interchangeable: silu(w1 x) * (w3 x) with w3 = 2 I doubles the output, w1 = 2 I does not
    with torch.no_grad():
        ffn.w3.weight.mul_(2)
    torch.testing.assert_close(ffn(x), 2 * expected)


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
