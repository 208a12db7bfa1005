"""The learning-rate schedule under a time budget (section 6.5) and the Muon optimizer (section 6.2's `MuonAdamW`,
`TrainConfig.optimizer`): a budget never stretches the cosine beyond max_steps, a resumed budgeted run fits the
cosine to the steps left, and Muon trains, resumes exactly and is refused when a run changes its optimizer."""

import math
import types

import pytest
import torch
from helpers import QUIET

import llama_nb.loop as loop_module
from llama_nb.batches import get_batch, prepare_data
from llama_nb.checkpoint import CheckpointError
from llama_nb.config import TrainConfig, preset_configs
from llama_nb.gpu import GPURuntime
from llama_nb.loop import train
from llama_nb.model import Llama, LlamaConfig
from llama_nb.optim import MuonAdamW, build_optimizer, configure_optimizer, decay_groups, lr_at, muon_groups, train_step
from llama_nb.train_cli import build_train_parser, resolve_configs

LR, MIN_LR, WARMUP = 1e-3, 1e-4, 2


@pytest.fixture(scope="module")
def data(corpus_text):
    "A 30,000-character slice: the Muon tests' thresholds were set on it (a 512-token tokenizer, 0.05 s to train)."
    return prepare_data(corpus_text[:30_000], 512)


def tiny(**kw) -> LlamaConfig:
    return LlamaConfig(**{"vocab_size": 512, "dim": 16, "n_layers": 2, "n_heads": 2, "max_seq_len": 16, **kw})


def run_config(**kw) -> TrainConfig:
    base = dict(
        batch_size=4,
        seq_len=16,
        max_steps=12,
        lr=LR,
        min_lr=MIN_LR,
        warmup_steps=WARMUP,
        eval_interval=0,
        sample_tokens=0,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def fake_clock(monkeypatch):
    "A clock that moves 0.125 s per training step and stands still otherwise: a budget of 1 s is 8 steps."
    clock = [0.0]
    real_step = loop_module.train_step

    def timed_step(*args, **kwargs):
        clock[0] += 0.125
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop_module, "train_step", timed_step)
    monkeypatch.setattr(loop_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))


# --- the schedule under a time budget --------------------------------------------------------------------------------


def test_a_budget_that_is_not_binding_keeps_the_cosine_of_max_steps(data, fake_clock):
    """8 steps fit in the budget but max_steps is 6: the rate decays over 6 steps exactly as without a budget
    (the bug this pins trained at the peak rate, fitting the cosine to steps the run would never make)."""
    result = train(tiny(), run_config(max_steps=6, time_budget_s=1.0), data, **QUIET)
    unbudgeted = train(tiny(), run_config(max_steps=6), data, **QUIET)
    assert result.steps == 6
    expected = [lr_at(s, LR, MIN_LR, WARMUP, 6) for s in range(6)]
    assert result.history["lr"] == pytest.approx(expected, rel=1e-12) == unbudgeted.history["lr"]
    assert result.history["lr"][-1] < 0.25 * LR  # near the end of the decay, not at the peak


def test_a_binding_budget_fits_the_cosine_to_the_steps_that_fit(data, fake_clock):
    result = train(tiny(), run_config(max_steps=200, time_budget_s=1.0), data, **QUIET)
    assert result.steps == 8 and result.train_seconds == 1.0 and result.history["step"] == list(range(1, 9))
    # the first step knows no speed yet (the full schedule); then 1 s / 0.125 s per step = 8 steps
    expected = [lr_at(0, LR, MIN_LR, WARMUP, 200)] + [lr_at(s, LR, MIN_LR, WARMUP, 8) for s in range(1, 8)]
    assert result.history["lr"] == pytest.approx(expected, rel=1e-12)
    assert result.history["lr"][-1] < 0.2 * LR  # near min_lr at the budget: not the 0.98 lr of step 8 of 200


def test_a_resumed_budgeted_run_fits_the_cosine_to_the_steps_it_has_left(data, fake_clock, tmp_path):
    """Stopped at step 4 of 200, resumed with a 0.5 s budget: 4 more steps fit, so the cosine ends at step 8 (not at
    step 4 + 1, which a horizon that forgot the start step gave)."""
    train(tiny(), run_config(max_steps=200), data, out_dir=tmp_path, stop_at=4, **QUIET)
    resumed = train(tiny(), run_config(max_steps=200, time_budget_s=0.5), data, out_dir=tmp_path, resume=True, **QUIET)
    assert resumed.steps == 8
    lrs = resumed.history["lr"][4:]
    expected = [lr_at(4, LR, MIN_LR, WARMUP, 200)] + [lr_at(s, LR, MIN_LR, WARMUP, 8) for s in range(5, 8)]
    assert lrs == pytest.approx(expected, rel=1e-12)


# --- Muon ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
def test_muon_trains_the_block_matrices_and_adamw_the_rest(tie):
    model = Llama(tiny(tie_embeddings=tie))
    hidden, rest = muon_groups(model)
    params = dict(model.named_parameters())
    assert sorted(hidden + rest) == sorted(params)
    assert hidden == [n for n, p in params.items() if n.startswith("layers.") and p.dim() == 2] and len(hidden) == 14
    assert "tok_embeddings.weight" in rest and all(params[n].dim() == 1 for n in rest if n.startswith("layers."))
    opt = build_optimizer(model, "muon", lr=2e-3, weight_decay=0.1)
    assert isinstance(opt, MuonAdamW) and isinstance(opt.muon, torch.optim.Muon)
    in_muon = {id(p) for g in opt.muon.param_groups for p in g["params"]}
    assert in_muon == {id(params[n]) for n in hidden}
    assert opt.muon.param_groups[0]["adjust_lr_fn"] == "match_rms_adamw"
    decayed = {id(p) for g in opt.adamw.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    # AdamW decays an untied output matrix, as configure_optimizer would, and nothing else
    assert decayed == ({id(params["output.weight"])} if not tie else set())
    assert set(decay_groups(model)[0]) == set(hidden) | (set() if tie else {"output.weight"})


def test_muon_adamw_sets_every_learning_rate_and_steps_both(data):
    torch.manual_seed(0)
    model = Llama(tiny())
    opt = build_optimizer(model, "muon", lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    train_step(model, opt, lambda: get_batch(data.train_ids, 4, 16, gen), lr=3e-3)
    assert {g["lr"] for g in opt.param_groups} == {3e-3} and len(opt.param_groups) >= 2
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())  # both optimizers stepped
    assert all(p.grad is None for p in model.parameters())  # zero_grad reached both


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="optimizer must be one of adamw, muon"):
        run_config(optimizer="sgd")
    with pytest.raises(ValueError, match="Unknown optimizer 'sgd'"):
        build_optimizer(Llama(tiny()), "sgd", lr=1e-3)
    with pytest.raises(ValueError, match="not saved by MuonAdamW"):
        build_optimizer(Llama(tiny()), "muon", lr=1e-3).load_state_dict(
            configure_optimizer(Llama(tiny()), lr=1e-3).state_dict()
        )


def test_a_muon_run_learns_and_resumes_exactly(data, tmp_path):
    tc = run_config(optimizer="muon", lr=2e-2, min_lr=2e-3, eval_interval=4)
    straight = train(tiny(dropout=0.1), tc, data, **QUIET)
    vals = straight.history["val_nats_per_token"]
    assert vals == sorted(vals, reverse=True) and vals[-1] < math.log(512) - 0.1  # it learns
    train(tiny(dropout=0.1), tc, data, out_dir=tmp_path, stop_at=6, **QUIET)
    resumed = train(tiny(dropout=0.1), tc, data, out_dir=tmp_path, resume=True, **QUIET)
    assert resumed.history["loss"] == straight.history["loss"]
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(a, b)


def test_resuming_with_another_optimizer_is_refused_before_anything_loads(data, tmp_path):
    train(tiny(), run_config(max_steps=4), data, out_dir=tmp_path, **QUIET)
    with pytest.raises(CheckpointError, match="optimizer='adamw' \\(now 'muon'\\)"):
        train(tiny(), run_config(max_steps=8, optimizer="muon"), data, out_dir=tmp_path, resume=True, **QUIET)


def test_muon_with_float16_loss_scaling_on_the_cpu(data):
    "GradScaler unscales and steps the pair like one optimizer (Chapter 7's float16 path)."
    torch.manual_seed(0)
    model = Llama(tiny())
    runtime = GPURuntime(torch.device("cpu"), amp_dtype=torch.float16)
    opt = runtime.optimizer(model, run_config(optimizer="muon"))
    gen = torch.Generator().manual_seed(0)
    losses = [
        train_step(
            model,
            opt,
            lambda: get_batch(data.train_ids, 4, 16, gen),
            lr=1e-2,
            amp_dtype=torch.float16,
            scaler=runtime.scaler,
        )[0]
        for _ in range(5)
    ]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_the_cli_and_presets_take_the_optimizer():
    args = build_train_parser().parse_args(["--preset", "tiny", "--optimizer", "muon"])
    assert resolve_configs(args)[1].optimizer == "muon"
    assert preset_configs("tiny")[1].optimizer == "adamw"
