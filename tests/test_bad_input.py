"""Bad input that used to slip through (issue 11): each case fails with a message that says what to do, and
nothing is lost or half-written on disk."""

import math
from pathlib import Path
from unittest import mock

import pytest
import torch
from helpers import QUIET, tiny_config

from llama_nb.batches import prepare_data
from llama_nb.checkpoint import CheckpointError, save_checkpoint
from llama_nb.config import TrainConfig
from llama_nb.hf import load_hf_pretrained, save_hf_pretrained
from llama_nb.loop import train
from llama_nb.model import Llama, LlamaConfig
from llama_nb.sampling import generate


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("eval_batch_size", 0, "eval_batch_size must be an int >= 1"),
        ("weight_decay", math.nan, "weight_decay must be a finite number >= 0"),
        ("grad_clip", math.nan, "grad_clip must be a finite number >= 0"),
        ("lr", math.inf, "lr must be a finite number >= 0"),
        ("sample_prompt", "", "sample_prompt must be a non-empty string"),
        ("log_interval", 0, "log_interval must be an int >= 1"),
        ("patience", -1, "patience must be an int >= 0"),
        ("keep_best", "yes", "keep_best must be True or False"),
        ("time_budget_s", math.inf, "time_budget_s must be a finite number > 0"),
    ],
)
def test_train_config_rejects(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_no_sample_prompt_is_fine_without_samples():
    assert TrainConfig(sample_prompt="", sample_tokens=0).sample_prompt == ""


def test_sampling_rejects_a_boolean_temperature():
    model = Llama(LlamaConfig(vocab_size=32, dim=16, n_layers=1, n_heads=2, max_seq_len=8))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        generate(model, [1, 2], 3, temperature=True)


def small_model() -> Llama:
    torch.manual_seed(0)
    return Llama(LlamaConfig(vocab_size=32, dim=16, n_layers=1, n_heads=2, max_seq_len=8))


@pytest.mark.parametrize("keep_last", [0, -1, 1.5, True])
def test_save_checkpoint_rejects_a_bad_keep_last(tmp_path, keep_last):
    with pytest.raises(ValueError, match="keep_last must be an int >= 1"):
        save_checkpoint(tmp_path, small_model(), step=1, keep_last=keep_last)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_pruning_orders_checkpoints_by_step_number_past_a_million(tmp_path):
    model = small_model()
    for step in (999_998, 999_999, 1_000_000, 1_000_001):
        save_checkpoint(tmp_path, model, step=step, keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_1000000", "step_1000001"]
    assert (tmp_path / "LATEST").read_text().strip() == "step_1000001"


def test_resuming_on_other_data_is_refused(tmp_path, corpus_text, text, data):
    config = tiny_config()
    tc = TrainConfig(
        batch_size=4, seq_len=16, max_steps=4, warmup_steps=1, eval_interval=2, sample_tokens=0, device="cpu"
    )
    train(config, tc, data, out_dir=tmp_path, stop_at=2, **QUIET)
    other = prepare_data(corpus_text[len(text) : len(text) + 30_000], 512, tokenizer=data.tokenizer)  # text after it
    with pytest.raises(CheckpointError, match="was trained on other data .* resume with the same text file"):
        train(config, tc, other, out_dir=tmp_path, resume=True, **QUIET)
    assert train(config, tc, data, out_dir=tmp_path, resume=True, **QUIET).steps == 4  # the same data resumes


def test_save_hf_pretrained_replaces_the_directory_all_at_once(tmp_path):
    first, second = small_model(), small_model()
    with torch.no_grad():
        for p in second.parameters():
            p.add_(1.0)
    save_hf_pretrained(first, tmp_path / "model")
    (tmp_path / "model" / "tokenizer.json").write_text("{}")  # a file the save must keep
    with mock.patch.object(Path, "write_text", side_effect=OSError("No space left on device")):
        with pytest.raises(OSError):
            save_hf_pretrained(second, tmp_path / "model")  # fails after the weights, before config.json
    kept = load_hf_pretrained(tmp_path / "model")
    assert all(torch.equal(a, b) for a, b in zip(kept.state_dict().values(), first.state_dict().values()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary directories left behind
    save_hf_pretrained(second, tmp_path / "model")
    saved = load_hf_pretrained(tmp_path / "model")
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), second.state_dict().values()))
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
