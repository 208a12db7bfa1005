"""The training loop's evaluation bookkeeping (Chapters 6.4-6.5, issue 9): keep the best checkpoint, stop early,
read the loss back from the device only every log_interval steps, and compile the forward pass without a break."""

import sys

import pytest
import torch
from helpers import QUIET, tiny_config

import llama_nb.loop as loop_module
from llama_nb.checkpoint import BEST_FILE, CheckpointError, find_checkpoint, load_model_from_checkpoint
from llama_nb.config import TrainConfig
from llama_nb.loop import best_evaluation, train
from llama_nb.model import Llama, LlamaConfig

# `data` (the first 60,000 characters of the corpus, a 512-token tokenizer) is conftest.py's.


def run_config(**kw) -> TrainConfig:
    base = dict(
        batch_size=4,
        seq_len=16,
        max_steps=12,
        warmup_steps=1,
        eval_interval=2,
        sample_tokens=0,
        device="cpu",
        keep_best=True,
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def scripted_validation(monkeypatch):
    "Make `evaluate` inside the loop return the given losses in order (nats/char), so the best step is known."

    def script(values):
        it = iter(values)

        def fake_evaluate(model, ids, n_chars, seq_len, batch_size=32):
            v = next(it)
            return {"nats_per_token": 2 * v, "nats_per_char": v, "tokens": 1}

        monkeypatch.setattr(loop_module, "evaluate", fake_evaluate)

    return script


def test_best_checkpoint_is_kept_beside_the_latest(tmp_path, data, scripted_validation):
    scripted_validation([3.0, 2.0, 1.5, 1.7, 1.8, 1.9, 2.0])  # best at the 3rd evaluation: step 6
    result = train(tiny_config(), run_config(), data, out_dir=tmp_path, **QUIET)
    assert result.best["step"] == 6 and result.best["nats_per_char"] == 1.5
    assert (tmp_path / BEST_FILE).read_text().strip() == "step_000006"
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_000006", "step_000012"]  # older ones pruned
    assert result.best["checkpoint"] == find_checkpoint(tmp_path, best=True) == tmp_path / "step_000006"
    model, _, state = load_model_from_checkpoint(tmp_path, best=True)
    assert state["step"] == 6 and isinstance(model, Llama)


def test_patience_stops_the_run_after_the_minimum(tmp_path, data, scripted_validation):
    scripted_validation([3.0, 2.0, 2.5, 2.6, 2.7, 9.9, 9.9])  # best at step 4, then three worse evaluations
    result = train(tiny_config(), run_config(patience=3), data, out_dir=tmp_path, **QUIET)
    assert result.stopped_early and result.steps == 10 and result.best["step"] == 4
    assert (tmp_path / BEST_FILE).read_text().strip() == "step_000004"


def test_a_resumed_run_keeps_its_best(tmp_path, data, scripted_validation):
    scripted_validation([3.0, 1.0, 2.0] + [2.5, 2.6, 2.7, 2.8, 2.9])  # best at step 4, before the interruption
    train(tiny_config(), run_config(), data, out_dir=tmp_path, stop_at=6, **QUIET)
    result = train(tiny_config(), run_config(), data, out_dir=tmp_path, resume=True, **QUIET)
    assert result.steps == 12 and result.best["step"] == 4
    assert (tmp_path / BEST_FILE).read_text().strip() == "step_000004"
    assert (tmp_path / "step_000004").is_dir()  # never pruned while it is the best


def test_a_corrupt_or_missing_best_checkpoint_gives_a_clear_error(tmp_path, data, scripted_validation):
    scripted_validation([3.0, 1.0, 2.0, 2.5, 2.6, 2.7, 2.8])
    train(tiny_config(), run_config(), data, out_dir=tmp_path, **QUIET)
    (tmp_path / "step_000004" / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"step_000004/state.pt cannot be read .* truncated or corrupt"):
        load_model_from_checkpoint(tmp_path, best=True)
    (tmp_path / BEST_FILE).unlink()
    with pytest.raises(CheckpointError, match="did not keep its best checkpoint. Train with --keep-best"):
        find_checkpoint(tmp_path, best=True)


def test_best_evaluation_takes_the_first_of_equal_minima():
    history = {"eval_step": [2, 4, 6, 8], "val_nats_per_char": [2.0, 1.0, 1.0, 3.0]}
    assert best_evaluation(history) == {"step": 4, "nats_per_char": 1.0, "evals_since": 2}
    assert best_evaluation({"eval_step": [], "val_nats_per_char": []}) is None


def test_the_loop_reads_the_loss_back_only_every_log_interval_steps(data, monkeypatch):
    """Each .item()/.tolist() in the loop waits for a GPU to finish: the loop may read back once per log interval,
    never per step. (Not counted: PyTorch's own CPU optimizer reading its step counters, and Chapter 5's id checks
    in an eager forward pass, which torch.compile removes: see the graph-break test below.)"""
    reads = {"n": 0}
    for name in ("item", "tolist", "__float__", "__bool__"):
        real = getattr(torch.Tensor, name)

        def counting(self, *a, _real=real, **k):
            caller = sys._getframe(1).f_code.co_filename
            if "llama_nb" in caller and not caller.endswith("model.py"):
                reads["n"] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counting)
    tc = run_config(max_steps=20, eval_interval=0, log_interval=10, keep_best=False)
    result = train(tiny_config(), tc, data, **QUIET)
    monkeypatch.undo()
    assert len(result.history["loss"]) == 20 and result.history["step"] == list(range(1, 21))
    # 2 read-backs (the losses and the clock) of 2 reads each, and 1 for the final evaluation
    assert reads["n"] <= 2 * 2 + 1, f"{reads['n']} reads for 20 steps: the loop waits for the device every step"


def test_the_compiled_training_forward_has_no_graph_break():
    torch._dynamo.reset()
    model = Llama(LlamaConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2, max_seq_len=16))
    idx, targets = torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16))
    explanation = torch._dynamo.explain(model)(idx, targets)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    with pytest.raises(ValueError, match=r"idx must be in \[0, 64\)"):  # eager calls still check the ids
        model(idx + 64)
