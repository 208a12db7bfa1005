"""Tests for llama_nb.rmsnorm (chapter 2): reference equality, properties, bad input, and the buggy variant."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llama_nb.rmsnorm import RMSNorm
from llama_nb.testing import normalises_each_position


class SequenceRMSNorm(nn.Module):
    """BUGGY: one RMS over the sequence and the features (leaks future positions)."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x):
        rms = torch.linalg.norm(x, dim=(1, 2)) * x[0].numel() ** -0.5
        return x / (rms[:, None, None] + self.eps) * self.weight


def test_init_and_output_dtype():
    norm = RMSNorm(8)
    assert norm.weight.shape == (8,)
    assert torch.equal(norm.weight, torch.ones(8))
    for dtype in [torch.float32, torch.bfloat16, torch.float16]:
        assert norm(torch.randn(2, 3, 8).to(dtype)).dtype == dtype


@pytest.mark.parametrize("shape", [(4, 16), (2, 7, 64), (3, 5, 2, 128)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("eps", [1e-5, 1e-6])
def test_matches_torch_rmsnorm(shape, dtype, eps):
    torch.manual_seed(0)
    d = shape[-1]
    gain = 1 + 0.1 * torch.randn(d)
    ours, ref = RMSNorm(d, eps=eps), nn.RMSNorm(d, eps=eps)
    with torch.no_grad():
        ours.weight.copy_(gain)
        ref.weight.copy_(gain)
    ours, ref = ours.to(dtype), ref.to(dtype)
    x = (3 * torch.randn(shape)).to(dtype)
    out = ours(x)
    assert out.dtype == dtype
    torch.testing.assert_close(out, ref(x))
    torch.testing.assert_close(out, F.rms_norm(x, (d,), ref.weight, eps=eps))


def test_float32_weight_with_half_input_matches_float32_reference():
    torch.manual_seed(0)
    norm = RMSNorm(64)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(64))
    for dtype in [torch.bfloat16, torch.float16]:
        x = torch.randn(4, 64).to(dtype)
        expected = F.rms_norm(x.float(), (64,), norm.weight, eps=1e-5).to(dtype)
        torch.testing.assert_close(norm(x), expected)


def test_no_overflow_in_float16():
    torch.manual_seed(0)
    big = (300 * torch.randn(4, 64)).half()
    assert torch.isinf(big.pow(2)).any()  # the naive formula would overflow
    out = RMSNorm(64)(big)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, nn.RMSNorm(64, eps=1e-5)(big.float()).half())


def test_unit_rms_with_unit_gain():
    torch.manual_seed(0)
    y = RMSNorm(32)(5 * torch.randn(3, 7, 32))
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(3, 7), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("c", [1e-3, 0.5, 2.0, 1e3])
def test_scale_invariance(c):
    torch.manual_seed(0)
    x = torch.randn(3, 10, 32)
    norm = RMSNorm(32, eps=1e-12)
    torch.testing.assert_close(norm(c * x), norm(x), rtol=1e-5, atol=1e-5)


def test_eps_breaks_scale_invariance_for_tiny_inputs():
    torch.manual_seed(0)
    x = torch.randn(3, 10, 32)
    norm = RMSNorm(32, eps=1e-5)
    assert not torch.allclose(norm(1e-3 * x), norm(x), rtol=1e-3, atol=1e-3)


def test_zero_input_is_finite():
    out = RMSNorm(16)(torch.zeros(2, 16))
    assert torch.equal(out, torch.zeros(2, 16))


def test_normalises_each_position():
    assert normalises_each_position(RMSNorm(16))


def test_sequence_norm_bug_is_detected():
    assert not normalises_each_position(SequenceRMSNorm(16))


def test_gain_is_learnable():
    norm = RMSNorm(8)
    norm(torch.randn(2, 8)).sum().backward()
    assert norm.weight.grad is not None and norm.weight.grad.shape == (8,)


def test_wrong_last_dimension():
    with pytest.raises(ValueError, match=r"expected the last dimension of the input to be 64, got 32"):
        RMSNorm(64)(torch.randn(2, 3, 32))


@pytest.mark.parametrize("dim", [0, -4])
def test_bad_dim(dim):
    with pytest.raises(ValueError, match="dim must be positive"):
        RMSNorm(dim)


def test_bad_eps():
    with pytest.raises(ValueError, match="eps must be non-negative"):
        RMSNorm(8, eps=-1.0)
