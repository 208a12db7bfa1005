"""Chapter 9.1: the quantizers written by hand equal the `gguf` package's port of llama.cpp's reference quantizers
byte for byte, on tensors built to be hard; each block keeps section 8.1's error bound; bad tensors are refused."""

import ctypes
import ctypes.util

import gguf
import numpy as np
import pytest
import torch
from gguf.quants import quantize as gguf_quantize

import llama_nb.quantize as quant
from llama_nb.quantize import BLOCK, QuantizationError, error_bound, quantize, round_half_away, roundtrip

BELOW_HALF = np.nextafter(np.float32(0.5), np.float32(0))  # 0.49999997: floor(x + 0.5) gets it wrong


def _hard_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    tensors = {
        "weights": rng.normal(0, 0.02, (64, 256)),
        "wide range": rng.normal(0, 1, (32, 128)) * 10 ** rng.uniform(-8, 4, (32, 128)),
        "zeros": np.zeros((2, 64)),
        "constant": np.full((2, 64), -0.3),
        "Q8_0 ties": np.concatenate([[127], np.arange(-15, 16) + 0.5]),
        "Q4_1 ties": np.concatenate([[0, 15], np.arange(15) + 0.5, np.full(15, 7.0)]),
        "below one half": np.concatenate([[127, BELOW_HALF, -BELOW_HALF], np.zeros(29)]),
        "one long row": rng.normal(0, 0.02, 4096),
    }
    return {name: np.asarray(x, dtype=np.float32) for name, x in tensors.items()}


def _differences(qtype: str) -> list[str]:
    "The hard tensors on which our bytes differ from gguf's."
    return [
        name
        for name, x in _hard_tensors().items()
        if not np.array_equal(quantize(x, qtype), gguf_quantize(x, gguf.GGMLQuantizationType[qtype]))
    ]


def test_round_half_away_is_c_roundf():
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.roundf.restype, libm.roundf.argtypes = ctypes.c_float, [ctypes.c_float]
    x = np.concatenate([np.arange(-130.5, 131, 0.5), [BELOW_HALF, -BELOW_HALF, 0.0, -0.0, 8388607.5, 1e30]])
    x = np.concatenate([x, np.random.default_rng(0).normal(0, 50, 20_000)]).astype(np.float32)
    assert np.array_equal(round_half_away(x), np.array([libm.roundf(v) for v in x], dtype=np.float32))


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_1", "F16", "F32"])
def test_bytes_equal_gguf_on_hard_tensors(qtype):
    assert _differences(qtype) == []


@pytest.mark.parametrize(
    "slip, caught_by",
    [
        (np.round, "Q8_0 ties"),  # halves to even
        (lambda x: np.sign(x) * np.floor(np.abs(x) + np.float32(0.5)), "below one half"),  # the school recipe
    ],
)
def test_a_wrong_rounding_rule_is_caught(monkeypatch, slip, caught_by):
    monkeypatch.setattr(quant, "round_half_away", slip)
    assert caught_by in _differences("Q8_0")


def test_shapes_and_sizes():
    x = torch.randn(3, 64)
    assert quantize(x, "Q8_0").shape == (3, 2 * 34) and quantize(x, "Q4_1").shape == (3, 2 * 20)
    assert quantize(x, "F16").dtype == np.float16 and quantize(x, "F32").dtype == np.float32
    assert roundtrip(x, "F32").equal(x) and roundtrip(x, "Q8_0").shape == x.shape


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_1"])
def test_every_block_keeps_the_bound_and_the_bound_is_tight(qtype):
    torch.manual_seed(0)
    w = torch.randn(128, 256) * 0.02
    error = (w - roundtrip(w, qtype)).abs().reshape(-1, BLOCK).max(dim=1).values.numpy()
    bound = error_bound(w, qtype)
    assert (error <= bound * (1 + 1e-6)).all()
    assert (error / bound).max() > 0.8  # not a bound so loose that it could never fail


def test_a_bound_that_ignores_float16_storage_fails():
    torch.manual_seed(0)
    w = torch.randn(128, 256) * 0.02
    error = (w - roundtrip(w, "Q8_0")).abs().reshape(-1, BLOCK).max(dim=1).values.numpy()
    half_step = np.abs(w.numpy().reshape(-1, BLOCK)).max(axis=1) / 127 / 2
    assert (error > half_step * (1 + 1e-6)).any()  # so the float16 term of error_bound is needed


@pytest.mark.parametrize(
    "w, qtype, words",
    [
        (torch.zeros(4, 100), "Q8_0", ["demo", "100 values", "multiple of the block size 32", "F16 or F32"]),
        (torch.full((1, 32), float("nan")), "Q4_1", ["demo", "NaN"]),
        (torch.full((1, 32), float("inf")), "F16", ["demo", "NaN or infinite"]),
        (torch.full((1, 32), 1e7), "Q8_0", ["demo", "float16's range", "F32"]),
        (torch.full((1, 32), 1e5), "F16", ["demo", "float16's range"]),
        (torch.zeros(1, 32), "Q5_0", ["demo", "unknown type", "Q8_0"]),
    ],
)
def test_bad_tensors_are_refused_with_their_name(w, qtype, words):
    with pytest.raises(QuantizationError) as e:
        quantize(w, qtype, name="demo")
    assert all(word in str(e.value) for word in words), str(e.value)
