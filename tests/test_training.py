"""Data pipeline, loss units, optimizer groups, schedule, train step and the training loop of llama_nb.train_cli."""

import math

import pytest
import torch
from helpers import QUIET, VOCAB, two_layer_config

from llama_nb.batches import evaluate, get_batch, prepare_data, val_windows
from llama_nb.checkpoint import CheckpointError
from llama_nb.config import TrainConfig
from llama_nb.data import train_val_split
from llama_nb.loop import train
from llama_nb.model import Llama
from llama_nb.optim import configure_optimizer, decay_groups, lr_at, train_step
from llama_nb.tokenizer import PAD_ID, train_tokenizer

# `text` (the first 60,000 characters) and `data` (`text` prepared with VOCAB = 512 tokens) are conftest.py's.


# ----------------------------------------------------------------------------------------------- data pipeline
def test_prepare_data_splits_by_characters_and_trains_on_train_only(text, data):
    train_text, val_text = train_val_split(text)
    assert len(train_text) == int(0.9 * len(text))
    assert data.tokenizer.to_str() == train_tokenizer(train_text, VOCAB).to_str()  # trained on the train split
    assert data.tokenizer.decode(data.train_ids.tolist()) == train_text
    assert data.tokenizer.decode(data.val_ids.tolist()) == val_text
    assert data.train_ids.dtype == data.val_ids.dtype == torch.long
    first = data.tokenizer.decode(data.val_ids[:1].tolist())
    assert data.val_chars == len(val_text) - len(first) == len(data.tokenizer.decode(data.val_ids[1:].tolist()))


def test_prepare_data_reuses_a_tokenizer_and_rejects_a_too_large_one(text, data):
    again = prepare_data(text, VOCAB, tokenizer=data.tokenizer)
    assert torch.equal(again.val_ids, data.val_ids) and again.tokenizer is data.tokenizer
    with pytest.raises(ValueError, match="vocab_size is 300"):
        prepare_data(text, 300, tokenizer=data.tokenizer)


def test_get_batch_cuts_contiguous_shifted_windows_reproducibly():
    ids = torch.arange(1000)
    x, y = get_batch(ids, 6, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (6, 16) and x.dtype == torch.long
    assert torch.equal(x, x[:, :1] + torch.arange(16))  # contiguous
    assert torch.equal(y, x + 1)  # targets: the next token
    assert int(x.min()) >= 0 and int(y.max()) <= 999
    x2, _ = get_batch(ids, 6, 16, torch.Generator().manual_seed(0))
    x3, _ = get_batch(ids, 6, 16, torch.Generator().manual_seed(1))
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    gen = torch.Generator().manual_seed(0)
    a, _ = get_batch(ids, 6, 16, gen)
    b, _ = get_batch(ids, 6, 16, gen)
    assert not torch.equal(a, b)  # the generator advances


def test_get_batch_reaches_the_last_token_and_rejects_short_data():
    ids = torch.arange(18)  # only two possible windows of 16 + 1
    gen = torch.Generator().manual_seed(0)
    starts = {int(get_batch(ids, 1, 16, gen)[0][0, 0]) for _ in range(50)}
    assert starts == {0, 1}
    with pytest.raises(ValueError, match="seq_len=16"):
        get_batch(torch.arange(16), 1, 16, torch.Generator())


@pytest.mark.parametrize("n", [2, 9, 13, 17, 100])
def test_val_windows_predict_every_token_but_the_first_exactly_once(n):
    ids = torch.arange(n) + 10
    x, y = val_windows(ids, 4)
    assert x.shape == y.shape == (math.ceil((n - 1) / 4), 4)
    real = y != -100
    assert torch.equal(y[real], ids[1:])  # each target once, in order
    assert torch.equal(x[real], ids[:-1])  # predicted from the token before it (and the window before that)
    assert bool((x[~real] == PAD_ID).all())
    assert int((~real).sum()) == x.numel() - (n - 1) < 4  # only the last window is padded


def test_val_windows_needs_two_tokens():
    with pytest.raises(ValueError, match="at least 2 tokens"):
        val_windows(torch.tensor([5]), 4)


# ------------------------------------------------------------------------------------------------- evaluation
def test_evaluate_matches_unpadded_windows_and_converts_units(data):
    torch.manual_seed(0)
    model = Llama(two_layer_config())
    ids, n_chars, T = data.val_ids[:300], 700, 32
    got = evaluate(model, ids, n_chars, T, batch_size=3)
    total, count = 0.0, 0  # reference: the model's own mean loss on each window, cut without padding
    for start in range(0, len(ids) - 1, T):
        x, y = ids[start : start + T], ids[start + 1 : start + T + 1]
        x = x[: len(y)]
        _, loss = model(x[None], y[None])
        total, count = total + loss.item() * len(y), count + len(y)
    assert got["tokens"] == count == len(ids) - 1
    assert got["nats_per_token"] == pytest.approx(total / count, rel=1e-5)
    assert got["nats_per_char"] == pytest.approx(total / n_chars, rel=1e-5)
    assert model.training  # mode restored


def test_evaluate_of_a_uniform_model_is_ln_v(data):
    model = Llama(two_layer_config())
    with torch.no_grad():
        model.tok_embeddings.weight.zero_()  # tied: every logit is 0, the prediction uniform
    got = evaluate(model, data.val_ids, data.val_chars, 32)
    assert got["nats_per_token"] == pytest.approx(math.log(VOCAB), rel=1e-6)
    assert got["nats_per_char"] == pytest.approx(math.log(VOCAB) * (len(data.val_ids) - 1) / data.val_chars, rel=1e-6)


def test_evaluate_turns_dropout_off(data):
    torch.manual_seed(0)
    model = Llama(two_layer_config(dropout=0.5))
    a = evaluate(model, data.val_ids[:500], 1000, 32)
    b = evaluate(model, data.val_ids[:500], 1000, 32)
    assert a == b and model.training
    model.eval()
    evaluate(model, data.val_ids[:500], 1000, 32)
    assert not model.training


# ------------------------------------------------------------------------------------------ optimizer, schedule
def test_lr_schedule_matches_transformers_cosine_with_min_lr():
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    peak, floor, warmup, total = 3e-3, 3e-4, 20, 200
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    hf = get_cosine_with_min_lr_schedule_with_warmup(opt, warmup, total, min_lr=floor)
    reference = [peak * hf.lr_lambdas[0](s) for s in range(total + 2)]
    for s in range(warmup, total):  # decay: the same formula
        assert lr_at(s, peak, floor, warmup, total) == pytest.approx(reference[s], rel=1e-12, abs=1e-15)
    for s in range(warmup):  # warmup: ours is HF's one step later (no wasted step at lr = 0)
        assert lr_at(s, peak, floor, warmup, total) == pytest.approx(reference[s + 1], rel=1e-12)
    assert lr_at(warmup - 1, peak, floor, warmup, total) == peak
    assert lr_at(total, peak, floor, warmup, total) == lr_at(10 * total, peak, floor, warmup, total) == floor
    decay = [lr_at(s, peak, floor, warmup, total) for s in range(warmup, total + 1)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert lr_at((warmup + total) // 2, peak, floor, warmup, total) == pytest.approx((peak + floor) / 2)
    assert lr_at(0, peak, floor, 0, total) == peak  # no warmup


def test_decay_groups_tied_and_untied():
    tied = Llama(two_layer_config())
    decay, no_decay = decay_groups(tied)
    assert "tok_embeddings.weight" in no_decay and "output.weight" not in decay + no_decay
    assert all(n.endswith("norm.weight") for n in no_decay if n != "tok_embeddings.weight")
    assert len(no_decay) == 1 + 2 * 2 + 1  # embedding, two norms per layer, final norm
    assert all(tied.get_parameter(n).dim() == 2 for n in decay) and len(decay) == 2 * 7
    assert sorted(decay + no_decay) == sorted(n for n, _ in tied.named_parameters())
    decay_u, no_decay_u = decay_groups(Llama(two_layer_config(tie_embeddings=False)))
    assert "output.weight" in decay_u and "tok_embeddings.weight" in no_decay_u


def test_configure_optimizer_decays_matrices_only():
    model = Llama(two_layer_config())
    opt = configure_optimizer(model, lr=1.0, weight_decay=0.5, betas=(0.9, 0.95))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # Adam's update is 0: only the decoupled decay moves the weights
    opt.step()
    decay, no_decay = decay_groups(model)
    for n, p in model.named_parameters():
        expected = before[n] * 0.5 if n in decay else before[n]  # w <- w (1 - lr * wd)
        torch.testing.assert_close(p.detach(), expected)
    assert torch.equal(model.output.weight, before["tok_embeddings.weight"])  # the tied matrix is not decayed


def _sgd_step(data, accum: int, clip: float = 0.0) -> tuple[dict, float]:
    torch.manual_seed(0)
    model = Llama(two_layer_config())
    x, y = get_batch(data.train_ids, 8, 32, torch.Generator().manual_seed(1))
    chunks = iter(zip(x.chunk(accum), y.chunk(accum)))
    _, norm = train_step(model, torch.optim.SGD(model.parameters(), lr=1.0), lambda: next(chunks), 1.0, accum, clip)
    return model.state_dict(), norm


def test_gradient_accumulation_equals_the_full_batch(data):
    full, norm_full = _sgd_step(data, 1)
    accumulated, norm_acc = _sgd_step(data, 4)
    for k in full:
        torch.testing.assert_close(accumulated[k], full[k], atol=1e-6, rtol=1e-5)
    assert norm_acc == pytest.approx(norm_full, rel=1e-4)


def test_gradient_clipping_limits_the_global_norm(data):
    torch.manual_seed(0)
    start = Llama(two_layer_config()).state_dict()
    unclipped, norm = _sgd_step(data, 1)
    clipped, norm_again = _sgd_step(data, 1, clip=0.1 * norm)
    assert norm_again == pytest.approx(norm)  # the norm before clipping is reported

    def step(after):  # length of the update (the tied output matrix is the embedding: count it once)
        return math.sqrt(sum(float(((after[k] - start[k]) ** 2).sum()) for k in start if k != "output.weight"))

    assert step(unclipped) == pytest.approx(norm, rel=1e-4)  # SGD with lr 1 moves by the gradient
    assert step(clipped) == pytest.approx(0.1 * norm, rel=1e-4)


def test_train_step_sets_the_learning_rate_and_averages_the_loss(data):
    torch.manual_seed(0)
    model = Llama(two_layer_config())
    opt = configure_optimizer(model, lr=1.0)
    gen = torch.Generator().manual_seed(0)
    loss, norm = train_step(model, opt, lambda: get_batch(data.train_ids, 4, 32, gen), 1e-3, grad_accum_steps=2)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-3]
    assert abs(loss - math.log(VOCAB)) < 0.2 and norm > 0
    assert all(p.grad is None for p in model.parameters())  # zeroed for the next step


# --------------------------------------------------------------------------------------------- training loop
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"max_steps": 1.5}, "max_steps"),
        ({"lr": 1e-3, "min_lr": 1e-2}, "min_lr"),
        ({"warmup_steps": 2000}, "warmup_steps"),
        ({"beta2": 1.0}, "beta2"),
        ({"grad_clip": -1.0}, "grad_clip"),
        ({"time_budget_s": 0}, "time_budget_s"),
        ({"eval_interval": -1}, "eval_interval"),
    ],
)
def test_train_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_train_config_round_trips_and_rejects_unknown_keys():
    tc = TrainConfig(lr=2e-3, max_steps=77)
    assert TrainConfig.from_dict(tc.to_dict()) == tc
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({**tc.to_dict(), "learning_rate": 1.0})


def test_train_learns_and_records_history(data):
    tc = TrainConfig(
        batch_size=16, seq_len=32, max_steps=40, lr=5e-3, min_lr=5e-4, warmup_steps=5, eval_interval=20, sample_tokens=8
    )
    messages = []
    result = train(two_layer_config(), tc, data, progress=False, log=messages.append)
    h = result.history
    assert result.steps == 40 and h["step"] == list(range(1, 41)) and h["eval_step"] == [20, 40]
    assert h["lr"][4] == 5e-3 and h["lr"][-1] == pytest.approx(lr_at(39, 5e-3, 5e-4, 5, 40))
    assert sum(h["loss"][-5:]) / 5 < math.log(VOCAB) - 1.0  # it learns
    assert result.final["nats_per_token"] == h["val_nats_per_token"][-1] < math.log(VOCAB) - 1.0
    assert [s["step"] for s in h["samples"]] == [20, 40] and h["samples"][0]["text"].startswith("ROMEO:")
    assert len(messages) == 2 and "nats/char" in messages[0]
    assert result.checkpoint is None and result.train_seconds > 0


def test_train_rejects_inconsistent_arguments(data, tmp_path):
    with pytest.raises(ValueError, match="max_seq_len"):
        train(two_layer_config(), TrainConfig(seq_len=64), data, **QUIET)
    with pytest.raises(ValueError, match="vocab_size"):
        train(two_layer_config(vocab_size=300), TrainConfig(seq_len=32), data, **QUIET)
    with pytest.raises(ValueError, match="out_dir"):
        train(two_layer_config(), TrainConfig(seq_len=32), data, resume=True, **QUIET)
    tc = TrainConfig(batch_size=2, seq_len=32, max_steps=2, warmup_steps=1, sample_tokens=0)
    train(two_layer_config(), tc, data, out_dir=tmp_path, **QUIET)
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        train(two_layer_config(), tc, data, out_dir=tmp_path, **QUIET)
    with pytest.raises(CheckpointError, match="lr=0.001 \\(now 0.002\\)"):
        train(
            two_layer_config(),
            TrainConfig(**{**tc.to_dict(), "lr": 2e-3, "max_steps": 4}),
            data,
            out_dir=tmp_path,
            resume=True,
            **QUIET,
        )
