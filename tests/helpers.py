"""Small helpers shared by several test files (pytest puts tests/ on sys.path): constants, model configurations and
a subprocess runner. The shared fixtures (the corpus, its splits, the book's tokenizer, prepared data) are in
conftest.py."""

import subprocess
import sys
from pathlib import Path

import torch

from llama_nb.hf import randomise  # the book's own checker (Chapter 5.4), so notebooks and tests cannot drift
from llama_nb.model import Llama, LlamaConfig

__all__ = [
    "QUIET",
    "ROOT",
    "SMALL",
    "TINY_128",
    "VOCAB",
    "randomise",
    "run_python",
    "small_model",
    "tiny_config",
    "two_layer_config",
]

ROOT = Path(__file__).resolve().parents[1]

QUIET = dict(progress=False, log=lambda message: None)  # train(..., **QUIET): no progress bar, no log lines

VOCAB = 512  # the vocabulary of conftest.py's `data`


def tiny_config(**overrides) -> LlamaConfig:
    "The smallest model the loop tests train on conftest.py's `data`: one layer of width 16, a context of 16 tokens."
    return LlamaConfig(**{"vocab_size": VOCAB, "dim": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": 16, **overrides})


def two_layer_config(**overrides) -> LlamaConfig:
    "A model a little larger than `tiny_config`'s, for `data` too: two layers of width 32, a context of 32 tokens."
    return LlamaConfig(**{"vocab_size": VOCAB, "dim": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 32, **overrides})


# The model tests' configuration (test_model.py, test_hf.py), for random token ids (no tokenizer).
SMALL = dict(vocab_size=97, dim=32, n_layers=2, n_heads=4, max_seq_len=24)


def small_model(seed: int = 0, **overrides) -> Llama:
    "A freshly initialised (seeded) Llama of SMALL's configuration with `overrides`, in eval mode."
    torch.manual_seed(seed)
    return Llama(LlamaConfig(**{**SMALL, **overrides})).eval()


# Vocabulary 128 and two layers of width 32, for batches of random token ids (no tokenizer, no data).
TINY_128 = LlamaConfig(vocab_size=128, dim=32, n_layers=2, n_heads=2, multiple_of=16, max_seq_len=16)


def run_python(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    "`python *args` with this interpreter, in the project's root, its output captured as text (kwargs: `env`, ...)."
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kwargs)
