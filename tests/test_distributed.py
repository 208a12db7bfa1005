"""Multi-process training (Chapter 7): `torchrun --nproc_per_node=2 -m llama_nb.train` with DDP on the CPU (gloo)
computes the run of one process with the same global batch, and rank 0 alone prints and writes checkpoints."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import llama_nb.train as train_module
from llama_nb.gpu import DistInfo
from llama_nb.model import LlamaConfig
from llama_nb.train import LATEST_FILE, MODEL_FILE, TrainConfig, prepare_data, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this PyTorch build has no gloo backend")
# tiny preset, batch 8 in 2 micro-batches per step (so DDP's no_sync path runs too), no dropout, no samples
ARGS = ["--preset", "tiny", "--max-steps", "8", "--eval-interval", "4", "--grad-accum-steps", "2",
        "--sample-tokens", "0", "--device", "cpu", "--no-progress"]


def launch(n_procs: int, *args: str) -> subprocess.CompletedProcess:
    "`python -m llama_nb.train` alone, or under torchrun with `n_procs` processes (a free port, found by torchrun)."
    prefix = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_procs}"] if n_procs > 1 else []
    return subprocess.run([sys.executable, *prefix, "-m", "llama_nb.train", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus_file) -> dict:
    "The same 8-step run as 1 process and as 2 processes; their output directories and the launches' results."
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for n in (1, 2):
        proc = launch(n, *ARGS, "--data", str(corpus_file), "--out-dir", str(root / f"n{n}"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[n] = (root / f"n{n}", proc)
    return out


def _rel(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) / abs(x) for x, y in zip(a, b))


def test_two_processes_compute_the_one_process_run(runs):
    (one, _), (two, _) = runs[1], runs[2]
    h1, h2 = read_checkpoint(one)[1]["history"], read_checkpoint(two)[1]["history"]
    assert len(h2["loss"]) == 8 and h2["eval_step"] == [4, 8]
    assert _rel(h1["loss"], h2["loss"]) < 1e-5  # the logged loss is the all-reduced global mean
    assert _rel(h1["grad_norm"], h2["grad_norm"]) < 1e-4  # gradients are averaged over the ranks
    assert _rel(h1["val_nats_per_token"], h2["val_nats_per_token"]) < 1e-5
    w1, w2 = load_file(one / "step_000008" / MODEL_FILE), load_file(two / "step_000008" / MODEL_FILE)
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-4, atol=1e-5)
    assert h1["loss"] != [h1["loss"][0]] * 8  # and the run is not trivially constant


def test_only_rank_zero_writes_and_prints(runs):
    two, proc = runs[2]
    # one checkpoint directory: all ranks saving would leave step_000008-1 (or a half-written temporary)
    assert sorted(p.name for p in two.iterdir()) == [LATEST_FILE, "step_000008"]
    assert proc.stdout.count("done: 8 steps") == 1
    assert proc.stdout.count("model: ") == 1 and proc.stdout.count("step     4 |") == 1


def test_two_processes_resume_exactly(tmp_path, corpus_file, runs):
    out = tmp_path / "resumed"
    first = launch(2, *ARGS, "--data", str(corpus_file), "--out-dir", str(out), "--stop-at", "4")
    assert first.returncode == 0, first.stderr[-3000:]
    second = launch(2, *ARGS, "--data", str(corpus_file), "--out-dir", str(out), "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    straight = read_checkpoint(runs[2][0])[1]["history"]["loss"]
    assert read_checkpoint(out)[1]["history"]["loss"] == straight  # the shared data generator was restored


def test_a_batch_that_does_not_split_fails_cleanly(corpus_file, tmp_path):
    proc = launch(2, *ARGS, "--batch-size", "7", "--data", str(corpus_file), "--out-dir", str(tmp_path / "odd"))
    assert proc.returncode != 0
    assert "batch_size 7 is not divisible by the 2 processes" in proc.stderr
    assert not (tmp_path / "odd" / LATEST_FILE).exists()


def test_each_rank_trains_on_its_share_of_the_global_batch(monkeypatch, corpus_text):
    """In-process, with the collectives stubbed out: the batches that ranks 0 and 1 of 2 train on are the two
    halves, in order, of the batch one process trains on. (Every rank training on the whole batch would also give
    equal losses in the runs above, at twice the cost; per-rank seeds would give different batches.)"""
    data = prepare_data(corpus_text[:20_000], 512)
    config = LlamaConfig(vocab_size=512, dim=16, n_layers=1, n_heads=2, max_seq_len=16)
    tc = TrainConfig(batch_size=8, seq_len=16, max_steps=3, warmup_steps=1, eval_interval=0, sample_tokens=0,
                     device="cpu")
    seen: dict[tuple[int, int], list[torch.Tensor]] = {}

    def record_step(model, optimizer, next_batch, lr, *args, **kwargs):
        seen.setdefault(who, []).append(next_batch()[0])
        return 1.0, 0.0

    monkeypatch.setattr(train_module, "train_step", record_step)
    monkeypatch.setattr(train_module, "all_reduce_mean", lambda values, info: list(values))
    monkeypatch.setattr(train_module, "barrier", lambda info: None)
    monkeypatch.setattr(train_module, "wrap_ddp", lambda model, info: model)
    for who in [(0, 1), (0, 2), (1, 2)]:
        info = DistInfo(rank=who[0], local_rank=who[0], world_size=who[1])
        train_module._train_loop(config, tc, data, info, torch.float32, out_dir=None, resume=False, stop_at=None,
                                 progress=False, log=lambda message: None)
    for step in range(3):
        halves = seen[(0, 2)][step], seen[(1, 2)][step]
        assert [len(h) for h in halves] == [4, 4]
        assert torch.equal(torch.cat(halves), seen[(0, 1)][step])
