"""The exponential moving average of the weights (section 6.2's `EMA`) and how the loop, checkpoints and the CLI use
it (section 6.5's `TrainConfig.ema_decay`, issue 9): checked against PyTorch's own AveragedModel, by hand, and by
exact resumes."""

import math

import pytest
import torch
from helpers import QUIET, tiny_config
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from llama_nb.batches import evaluate, get_batch
from llama_nb.checkpoint import STATE_FILE, CheckpointError, find_checkpoint, load_model_from_checkpoint
from llama_nb.config import TrainConfig
from llama_nb.loop import train
from llama_nb.model import Llama
from llama_nb.optim import EMA, configure_optimizer, train_step
from llama_nb.train_cli import build_train_parser, resolve_configs

# `data` (the first 60,000 characters of the corpus, a 512-token tokenizer) is conftest.py's.


def run_config(**kw) -> TrainConfig:
    base = dict(
        batch_size=4,
        seq_len=16,
        max_steps=12,
        warmup_steps=1,
        eval_interval=4,
        sample_tokens=0,
        device="cpu",
        ema_decay=0.8,
        lr=1e-2,
    )
    return TrainConfig(**{**base, **kw})


def steps(model, data, n, seed=0):
    opt, gen = configure_optimizer(model, lr=1e-2), torch.Generator().manual_seed(seed)
    for _ in range(n):
        train_step(model, opt, lambda: get_batch(data.train_ids, 4, 16, gen), lr=1e-2)
        yield


def test_ema_equals_pytorchs_averaged_model(data):
    torch.manual_seed(0)
    model = Llama(tiny_config())
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.7), use_buffers=False)
    reference.update_parameters(model)  # the first update copies: both averages start at the initial weights
    ours = EMA(model, 0.7, warmup=False)
    for _ in steps(model, data, 6):
        ours.update(model)
        reference.update_parameters(model)
    torch.testing.assert_close(ours.averages, list(reference.module.parameters()), rtol=0, atol=1e-7)
    assert max((a - p).abs().max().item() for a, p in zip(ours.averages, model.parameters())) > 1e-3  # it averaged


def test_warmup_decay_by_hand(data):
    torch.manual_seed(0)
    model = Llama(tiny_config())
    ema = EMA(model, decay=0.99)
    assert [ema.current_decay()] == [0.1]  # (1 + 0) / (10 + 0): the first average is mostly the new weights
    start = [p.detach().clone() for p in model.parameters()]
    next(steps(model, data, 1))
    ema.update(model)
    for avg, p0, p in zip(ema.averages, start, model.parameters()):
        torch.testing.assert_close(avg, 0.1 * p0 + 0.9 * p.detach(), rtol=0, atol=1e-6)
    ema.updates = 10_000
    assert ema.current_decay() == 0.99  # capped by the decay once (1 + n) / (10 + n) exceeds it


def trained_with_ema(data, decay: float, n_steps: int) -> tuple[Llama, EMA]:
    torch.manual_seed(0)
    model = Llama(tiny_config())
    ema = EMA(model, decay)
    for _ in steps(model, data, n_steps):
        ema.update(model)
    return model, ema


def test_applied_swaps_in_the_average_and_restores_the_weights_even_on_error(data):
    model, ema = trained_with_ema(data, 0.5, 3)
    own = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="inside"):
        with ema.applied(model):
            for avg, p in zip(ema.averages, model.parameters()):
                assert torch.equal(avg, p)
            raise RuntimeError("inside")
    for k, v in model.state_dict().items():
        assert torch.equal(v, own[k]), k


@pytest.mark.parametrize("decay", [0, 1, 1.5, -0.1, float("nan"), True, "0.9"])
def test_bad_decay_is_refused(decay):
    with pytest.raises(ValueError, match="EMA: decay must be a number in \\(0, 1\\)"):
        EMA(Llama(tiny_config()), decay)


def test_state_dict_round_trip_and_a_foreign_state_is_refused(data):
    _, ema = trained_with_ema(data, 0.9, 2)
    copy = EMA(Llama(tiny_config()), 0.5)
    copy.load_state_dict(ema.state_dict())
    assert (copy.decay, copy.updates) == (0.9, 2)
    assert all(torch.equal(a, b) for a, b in zip(copy.averages, ema.averages))
    other = EMA(Llama(tiny_config(dim=32)), 0.9)
    with pytest.raises(ValueError, match="another model|other parameters"):
        other.load_state_dict(ema.state_dict())


@pytest.mark.parametrize("value", [1.0, -0.1, float("nan"), True])
def test_train_config_rejects_a_bad_ema_decay(value):
    with pytest.raises(ValueError, match="ema_decay"):
        run_config(ema_decay=value)


def test_the_loop_evaluates_samples_and_returns_the_average(tmp_path, data):
    result = train(tiny_config(), run_config(), data, out_dir=tmp_path, **QUIET)
    final = evaluate(result.model, data.val_ids, data.val_chars, 16)
    assert final["nats_per_char"] == result.final["nats_per_char"]  # the returned model holds the evaluated weights
    averaged, _, state = load_model_from_checkpoint(tmp_path)
    raw, _, _ = load_model_from_checkpoint(tmp_path, averaged=False)
    assert state["ema"]["updates"] == 12
    assert evaluate(averaged, data.val_ids, data.val_chars, 16)["nats_per_char"] == result.final["nats_per_char"]
    raw_loss = evaluate(raw, data.val_ids, data.val_chars, 16)["nats_per_char"]
    assert abs(raw_loss - result.final["nats_per_char"]) > 1e-4  # the average is not the raw weights
    assert result.history["val_nats_per_char"][-1] == result.final["nats_per_char"]


def test_resume_with_an_ema_is_exact(tmp_path, data):
    config = tiny_config(dropout=0.1)
    straight = train(config, run_config(), data, **QUIET)
    train(config, run_config(), data, out_dir=tmp_path, stop_at=6, **QUIET)  # checkpoint at step 6 (not 4, 8)
    resumed = train(config, run_config(), data, out_dir=tmp_path, resume=True, **QUIET)
    assert resumed.final == straight.final
    by_step = {s: v for s, v in zip(resumed.history["eval_step"], resumed.history["val_nats_per_char"])}
    assert [by_step[s] for s in straight.history["eval_step"]] == straight.history["val_nats_per_char"]
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(a, b)


def test_resume_with_another_ema_decay_is_refused(tmp_path, data):
    train(tiny_config(), run_config(max_steps=4), data, out_dir=tmp_path, **QUIET)
    with pytest.raises(CheckpointError, match="ema_decay=0.8 \\(now 0.9\\)"):
        train(tiny_config(), run_config(max_steps=8, ema_decay=0.9), data, out_dir=tmp_path, resume=True, **QUIET)


def test_a_damaged_average_in_a_checkpoint_gives_a_clear_error(tmp_path, data):
    train(tiny_config(), run_config(max_steps=4), data, out_dir=tmp_path, **QUIET)
    path = find_checkpoint(tmp_path) / STATE_FILE
    state = torch.load(path, weights_only=True)
    state["ema"]["averages"].popitem()
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="damaged weight average.*averaged=False"):
        load_model_from_checkpoint(tmp_path)
    model, _, _ = load_model_from_checkpoint(tmp_path, averaged=False)  # the raw weights still load
    assert math.isfinite(evaluate(model, data.val_ids, data.val_chars, 16)["nats_per_char"])


def test_cli_takes_ema_decay_and_compile_mode():
    args = build_train_parser().parse_args(
        ["--preset", "tiny", "--ema-decay", "0.95", "--compile-mode", "reduce-overhead"]
    )
    _, tc = resolve_configs(args)
    assert (tc.ema_decay, tc.compile_mode) == (0.95, "reduce-overhead")
    with pytest.raises(SystemExit):
        build_train_parser().parse_args(["--compile-mode", "fastest"])
