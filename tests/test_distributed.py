"""Multi-process training (Chapter 7): `torchrun --nproc_per_node=2 -m llama_nb.train_cli` with DDP on the CPU (gloo)
computes the run of one process with the same global batch, and rank 0 alone prints and writes checkpoints."""

import os
import subprocess

import pytest
import torch
from helpers import QUIET, run_python, tiny_config
from safetensors.torch import load_file

import llama_nb.gpu as gpu_module
import llama_nb.loop as loop_module
from llama_nb.checkpoint import LATEST_FILE, MODEL_FILE, read_checkpoint
from llama_nb.config import TrainConfig
from llama_nb.gpu import GPURuntime

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="this PyTorch build has no gloo backend",
)
# tiny preset, batch 8 in 2 micro-batches per step (so DDP's no_sync path runs too), no dropout (the runs must equal
# one process's), no samples
ARGS = [
    "--preset",
    "tiny",
    "--max-steps",
    "8",
    "--eval-interval",
    "4",
    "--grad-accum-steps",
    "2",
    "--sample-tokens",
    "0",
    "--device",
    "cpu",
    "--no-progress",
]


def launch(n_procs: int, *args: str) -> subprocess.CompletedProcess:
    "`python -m llama_nb.train_cli` alone, or under torchrun with `n_procs` processes (a free port, found by torchrun)."
    prefix = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_procs}"] if n_procs > 1 else []
    return run_python(
        *prefix, "-m", "llama_nb.train_cli", *args, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )


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


@pytest.mark.slow  # 1 and 2 training processes
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


@pytest.mark.slow  # the 2-process run above
def test_only_rank_zero_writes_and_prints(runs):
    two, proc = runs[2]
    # one checkpoint directory: all ranks saving would leave step_000008-1 (or a half-written temporary)
    assert sorted(p.name for p in two.iterdir()) == [LATEST_FILE, "step_000008"]
    assert proc.stdout.count("done: 8 steps") == 1
    assert proc.stdout.count("model: ") == 1 and proc.stdout.count("step     4 |") == 1


@pytest.mark.slow  # three 2-process runs
def test_two_processes_resume_exactly_with_dropout(tmp_path, corpus_file):
    """Interrupted after 4 of 8 steps and resumed, a 2-process run with dropout is the uninterrupted one: the same
    batches (the shared data generator is restored) and the same dropout masks on every rank (not only rank 0,
    whose RNG state the checkpoint holds)."""
    args = [*ARGS, "--dropout", "0.1", "--data", str(corpus_file)]
    straight = launch(2, *args, "--out-dir", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = launch(2, *args, "--out-dir", str(tmp_path / "resumed"), "--stop-at", "4")
    assert first.returncode == 0, first.stderr[-3000:]
    second = launch(2, *args, "--out-dir", str(tmp_path / "resumed"), "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout and "at step 4" in second.stdout
    h1, h2 = read_checkpoint(tmp_path / "straight")[1]["history"], read_checkpoint(tmp_path / "resumed")[1]["history"]
    assert len(h1["loss"]) == 8 and h2["loss"] == h1["loss"]  # every loss identical, not just close
    w1 = load_file(tmp_path / "straight" / "step_000008" / MODEL_FILE)
    w2 = load_file(tmp_path / "resumed" / "step_000008" / MODEL_FILE)
    assert all(torch.equal(w1[name], w2[name]) for name in w1)


@pytest.mark.slow  # 2 processes
def test_a_batch_that_does_not_split_fails_cleanly(corpus_file, tmp_path):
    proc = launch(2, *ARGS, "--batch-size", "7", "--data", str(corpus_file), "--out-dir", str(tmp_path / "odd"))
    assert proc.returncode != 0
    assert "batch_size 7 is not divisible by the 2 processes" in proc.stderr
    assert not (tmp_path / "odd" / LATEST_FILE).exists()


def test_each_rank_trains_on_its_share_of_the_global_batch(monkeypatch, data):
    """In-process, with the collectives stubbed out: the batches that ranks 0 and 1 of 2 train on are the two
    halves, in order, of the batch one process trains on. (Every rank training on the whole batch would also give
    equal losses in the runs above, at twice the cost; per-rank seeds would give different batches.)"""
    config = tiny_config()
    tc = TrainConfig(
        batch_size=8, seq_len=16, max_steps=3, warmup_steps=1, eval_interval=0, sample_tokens=0, device="cpu"
    )
    seen: dict[tuple[int, int], list[torch.Tensor]] = {}

    def record_step(model, optimizer, next_batch, lr, *args, **kwargs):
        seen.setdefault(who, []).append(next_batch()[0])
        return torch.tensor(1.0), torch.tensor(0.0)

    monkeypatch.setattr(loop_module, "train_step", record_step)
    monkeypatch.setattr(gpu_module, "all_reduce_mean", lambda values, info: values)
    monkeypatch.setattr(gpu_module, "barrier", lambda info: None)
    monkeypatch.setattr(gpu_module, "wrap_ddp", lambda model, info: model)
    for who in [(0, 1), (0, 2), (1, 2)]:
        runtime = GPURuntime(torch.device("cpu"), rank=who[0], world_size=who[1], local_rank=who[0])
        loop_module.train(config, tc, data, runtime=runtime, **QUIET)
    for step in range(3):
        halves = seen[(0, 2)][step], seen[(1, 2)][step]
        assert [len(h) for h in halves] == [4, 4]
        assert torch.equal(torch.cat(halves), seen[(0, 1)][step])


def test_each_rank_draws_its_own_dropout_masks(monkeypatch, data):
    """In-process, collectives stubbed out as above: with dropout, ranks 0 and 1 of 2 drop different units at
    every step (each seeds its dropout apart), while their weights start equal. Were the ranks seeded alike, both
    would drop the same units of their halves of the batch, and the N-process run would drop less independently
    than one process does."""
    config = tiny_config(dropout=0.5)
    tc = TrainConfig(
        batch_size=8, seq_len=16, max_steps=3, warmup_steps=1, eval_interval=0, sample_tokens=0, device="cpu"
    )
    masks: dict[int, list[torch.Tensor]] = {}
    first_weights: dict[int, torch.Tensor] = {}
    real_step = loop_module.train_step

    def record_masks(model, *args, **kwargs):
        if rank not in first_weights:
            first_weights[rank] = model.tok_embeddings.weight.detach().clone()
            model.layers[0].ffn_dropout.register_forward_hook(  # training passes only, not the evaluation
                lambda module, inputs, out: masks.setdefault(rank, []).append(out == 0) if module.training else None
            )
        return real_step(model, *args, **kwargs)

    monkeypatch.setattr(loop_module, "train_step", record_masks)
    monkeypatch.setattr(gpu_module, "all_reduce_mean", lambda values, info: values)
    monkeypatch.setattr(gpu_module, "barrier", lambda info: None)
    monkeypatch.setattr(gpu_module, "wrap_ddp", lambda model, info: model)
    for rank in (0, 1):
        runtime = GPURuntime(torch.device("cpu"), rank=rank, world_size=2, local_rank=rank)
        loop_module.train(config, tc, data, runtime=runtime, **QUIET)
    assert torch.equal(first_weights[0], first_weights[1])  # the same initialisation in every process
    assert len(masks[0]) == len(masks[1]) == 3
    for m0, m1 in zip(masks[0], masks[1]):
        assert m0.shape == (4, 16, 16) and 0.3 < m0.float().mean().item() < 0.7  # half of the units dropped
        assert not torch.equal(m0, m1)  # ... but not the same half on both ranks
