"""Issue 24: a run that diverges stops with a clear error and never saves (or prunes a good checkpoint for) a
broken model; the best evaluation ignores NaN; the command line reports a divergence and Ctrl-C without a
traceback."""

import math

import pytest
import torch
from helpers import QUIET, tiny_config
from safetensors.torch import load_file

import llama_nb.loop as loop_module
from llama_nb.checkpoint import LATEST_FILE
from llama_nb.config import TrainConfig
from llama_nb.core import LlamaNBError
from llama_nb.loop import TrainingDivergedError, best_evaluation, train

# `data` (the first 60,000 characters of the corpus, a 512-token tokenizer) is conftest.py's.


def run_config(**kw) -> TrainConfig:
    base = dict(batch_size=4, seq_len=16, max_steps=20, warmup_steps=1, eval_interval=5, sample_tokens=0, device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def poison_after(monkeypatch):
    "Make the weights NaN right after the given optimizer step (1-based), as a far too high learning rate would."

    def plant(at_step: int):
        calls = {"n": 0}
        real = loop_module.train_step

        def poisoned(model, optimizer, *args, **kwargs):
            out = real(model, optimizer, *args, **kwargs)
            calls["n"] += 1
            if calls["n"] == at_step:
                with torch.no_grad():
                    for p in model.parameters():
                        p.fill_(math.nan)
            return out

        monkeypatch.setattr(loop_module, "train_step", poisoned)

    return plant


def latest(out_dir) -> str:
    return (out_dir / LATEST_FILE).read_text().strip()


def assert_finite_checkpoint(out_dir, name: str):
    assert latest(out_dir) == name
    assert sorted(p.name for p in out_dir.glob("step_*")) == [name]  # nothing newer, and the good one not pruned
    weights = load_file(out_dir / name / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, data, poison_after):
    poison_after(7)  # step 7's own loss is finite; step 8's is NaN
    with pytest.raises(TrainingDivergedError, match=r"diverged at step 8: the training loss is nan.*lr=") as e:
        train(tiny_config(), run_config(log_interval=1), data, out_dir=tmp_path, **QUIET)
    assert "step_000005" in str(e.value)  # the message says where the last good checkpoint is
    assert isinstance(e.value, LlamaNBError)
    assert_finite_checkpoint(tmp_path, "step_000005")


def test_a_divergence_read_back_late_is_still_caught_before_the_evaluation_saves(tmp_path, data, poison_after):
    poison_after(7)  # read back only at step 10 (log_interval): the first NaN is step 8's
    with pytest.raises(TrainingDivergedError, match="diverged at step 8"):
        train(tiny_config(), run_config(log_interval=10), data, out_dir=tmp_path, **QUIET)
    assert_finite_checkpoint(tmp_path, "step_000005")


def test_weights_broken_by_the_last_step_before_an_evaluation_are_never_saved(tmp_path, data, poison_after):
    poison_after(10)  # every loss read back is finite; the evaluation at step 10 is not
    with pytest.raises(TrainingDivergedError, match="diverged at step 10: the validation loss is nan"):
        train(tiny_config(), run_config(log_interval=1), data, out_dir=tmp_path, **QUIET)
    assert_finite_checkpoint(tmp_path, "step_000005")


def test_a_divergence_without_an_out_dir_says_nothing_was_saved(data, poison_after):
    poison_after(2)
    with pytest.raises(TrainingDivergedError, match="No checkpoint was saved"):
        train(tiny_config(), run_config(log_interval=1), data, **QUIET)


def test_the_best_evaluation_ignores_nan():
    history = {"eval_step": [5, 10, 15], "val_nats_per_char": [math.nan, 2.0, 2.5]}
    assert best_evaluation(history) == {"step": 10, "nats_per_char": 2.0, "evals_since": 1}
    assert best_evaluation({"eval_step": [5], "val_nats_per_char": [math.nan]}) is None


def test_the_data_fingerprint_covers_every_split_and_where_it_is_cut(data):
    "Issue 24: a resume on other data is refused by this digest, so it must change when any split changes."
    from dataclasses import replace

    from llama_nb.checkpoint import data_fingerprint

    base = data_fingerprint(data)
    moved = replace(data, train_ids=data.train_ids[:-1], val_ids=torch.cat([data.train_ids[-1:], data.val_ids]))
    assert data_fingerprint(moved) != base  # the same tokens, cut one token earlier
    for field in ("train_ids", "val_ids"):
        ids = getattr(data, field).clone()
        ids[len(ids) // 2] = (ids[len(ids) // 2] + 1) % 512
        assert data_fingerprint(replace(data, **{field: ids})) != base, field
    copies = replace(data, train_dropout_ids=data.train_ids.clone(), bpe_dropout=0.1)
    assert data_fingerprint(copies) != base
    other = copies.train_dropout_ids.clone()
    other[0] = (other[0] + 1) % 512
    assert data_fingerprint(replace(copies, train_dropout_ids=other)) != data_fingerprint(copies)


# --- every setting checked before any work (the command line reads no data before these errors) --------------


@pytest.fixture
def no_data(monkeypatch):
    "Fail the test if the command line reads or prepares the corpus."
    import llama_nb.train_cli as cli

    def refuse(*args, **kwargs):
        raise AssertionError("the data was read before the settings were checked")

    monkeypatch.setattr(cli, "load_tinyshakespeare", refuse)
    monkeypatch.setattr(cli, "prepare_data", refuse)


def run_main(capsys, *argv) -> tuple[int, str]:
    from llama_nb.train_cli import main

    code = main(list(argv))
    return code, capsys.readouterr().err


def test_an_out_dir_that_is_a_file_is_refused_before_the_data(tmp_path, capsys, no_data):
    (tmp_path / "file").write_text("not a directory")
    code, err = run_main(capsys, "--preset", "tiny", "--out-dir", str(tmp_path / "file"))
    assert code == 1 and "is a file: give a directory" in err


def test_a_missing_gpu_is_reported_before_the_data(tmp_path, capsys, no_data, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = run_main(capsys, "--preset", "tiny", "--device", "cuda", "--out-dir", str(tmp_path / "r"))
    assert code == 1 and "CUDA is not available here" in err


@pytest.mark.parametrize("seed", [2**32, 2**64, -1])
def test_a_seed_out_of_range_is_refused_before_the_data_and_alike_in_both_commands(tmp_path, capsys, no_data, seed):
    with pytest.raises(SystemExit) as e:
        run_main(capsys, "--preset", "tiny", "--seed", str(seed), "--out-dir", str(tmp_path / "r"))
    assert e.value.code == 2 and "seed must be an int in [0, 4294967295]" in capsys.readouterr().err
    from llama_nb.sampling import check_sampling_args

    with pytest.raises(LlamaNBError, match=r"seed must be an int in \[0, 4294967295\]"):
        check_sampling_args(10, seed=seed)


@pytest.mark.parametrize("stop_at", ["0", "-1"])
def test_stop_at_below_one_is_refused(tmp_path, capsys, no_data, stop_at):
    code, err = run_main(capsys, "--preset", "tiny", "--stop-at", stop_at, "--out-dir", str(tmp_path / "r"))
    assert code == 1 and "--stop-at must be an int >= 1" in err
    assert not (tmp_path / "r").exists()


def test_a_sample_prompt_longer_than_the_context_is_refused_before_training(tmp_path, data):
    tc = run_config(sample_tokens=8, sample_prompt="ROMEO: " * 40)  # far more than 16 tokens
    with pytest.raises(LlamaNBError, match="sample_prompt is .* tokens, longer than the model's context of 16"):
        train(tiny_config(), tc, data, out_dir=tmp_path, **QUIET)
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, corpus_file):
    "A 4-step run of the tiny preset, made by the command line."
    from llama_nb.train_cli import main

    out = tmp_path_factory.mktemp("resume") / "tiny"
    argv = ["--preset", "tiny", "--max-steps", "4", "--sample-tokens", "0", "--no-progress"]
    assert main([*argv, "--data", str(corpus_file), "--out-dir", str(out)]) == 0
    return out


def test_resume_with_another_preset_is_refused(tiny_run, capsys, no_data):
    code, err = run_main(capsys, "--resume", "--preset", "cpu", "--out-dir", str(tiny_run))
    assert code == 1 and "--preset cpu (the checkpoint was trained with other settings)" in err


def test_resume_with_max_steps_at_or_below_the_saved_step_is_refused(tiny_run, capsys, no_data):
    code, err = run_main(capsys, "--resume", "--max-steps", "3", "--out-dir", str(tiny_run))
    assert code == 1 and "is at step 4 and max_steps is 3: there is nothing left to train" in err


# --- weights that are silently wrong --------------------------------------------------------------------------


@pytest.fixture
def two_runs(tmp_path, data):
    "Two 2-step runs of the same shapes with other seeds, each with one checkpoint."
    dirs = []
    for seed in (1, 2):
        out = tmp_path / f"run{seed}"
        train(tiny_config(), run_config(max_steps=2, eval_interval=0, seed=seed), data, out_dir=out, **QUIET)
        dirs.append(out / latest(out))
    return dirs


def test_flipped_bytes_in_the_weights_are_caught_by_the_saved_digest(two_runs):
    from llama_nb.checkpoint import CheckpointError, load_model_from_checkpoint

    weights = two_runs[0] / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-10] ^= 0x01  # one bit of the last tensor's data: the file still parses
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="its SHA-256 differs from the one in state.pt"):
        load_model_from_checkpoint(two_runs[0])


def test_another_runs_weights_of_the_same_shapes_are_refused(two_runs):
    from llama_nb.checkpoint import CheckpointError, load_model_from_checkpoint

    (two_runs[0] / "model.safetensors").write_bytes((two_runs[1] / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="copied from another run"):
        load_model_from_checkpoint(two_runs[0])


def test_non_finite_weights_are_never_saved_and_never_loaded(tmp_path, two_runs):
    from safetensors.torch import save_file

    from llama_nb.checkpoint import CheckpointError, load_model_from_checkpoint, save_checkpoint
    from llama_nb.model import Llama

    model = Llama(tiny_config())
    with torch.no_grad():
        model.layers[0].attention.wq.weight[0, 0] = math.inf
    with pytest.raises(CheckpointError, match=r"not saving step 3: 1 weight tensor\(s\) hold NaN .*layers.0.attention"):
        save_checkpoint(tmp_path / "bad", model, step=3)
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())
    # A file with a NaN written by someone else (no digest to catch it): the load names the tensor
    state = torch.load(two_runs[0] / "state.pt", weights_only=True)
    del state["weights_sha256"]
    torch.save(state, two_runs[0] / "state.pt")
    weights = load_file(two_runs[0] / "model.safetensors")
    weights["norm.weight"][0] = math.nan
    save_file(weights, two_runs[0] / "model.safetensors", metadata={"step": str(state["step"])})
    with pytest.raises(CheckpointError, match=r"model.safetensors: 1 weight tensor\(s\) hold NaN .*norm.weight"):
        load_model_from_checkpoint(two_runs[0])


def test_a_state_without_its_model_config_is_a_clear_error(two_runs):
    from llama_nb.checkpoint import CheckpointError, load_model_from_checkpoint

    state = torch.load(two_runs[0] / "state.pt", weights_only=True)
    del state["model_config"]
    torch.save(state, two_runs[0] / "state.pt")
    with pytest.raises(CheckpointError, match="state.pt lacks model_config"):
        load_model_from_checkpoint(two_runs[0])


# --- Hugging Face directories: errors that name the file -----------------------------------------------------


@pytest.fixture
def hf_dir(tmp_path):
    from helpers import randomise, small_model

    from llama_nb.hf import save_hf_pretrained

    return save_hf_pretrained(randomise(small_model()), tmp_path / "m")


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", r"config.json is not valid JSON"),
        ("[1, 2, 3]", r"config.json holds a JSON list, not a JSON dict"),
        (b"\xff\xfe\x00garbage", r"config.json is not valid JSON"),
    ],
)
def test_a_damaged_config_json_names_the_file(hf_dir, content, match):
    from llama_nb.hf import ModelFileError, load_hf_pretrained

    path = hf_dir / "config.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ModelFileError, match=match):
        load_hf_pretrained(hf_dir)


def test_zero_heads_in_config_json_is_a_clear_error_not_a_division_by_zero(hf_dir):
    import json

    from llama_nb.hf import ModelFileError, load_hf_pretrained

    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "num_attention_heads": 0}))
    with pytest.raises(ModelFileError, match=r"config.json: num_attention_heads must be an int >= 1, got 0"):
        load_hf_pretrained(hf_dir)


def test_truncated_safetensors_names_the_file(hf_dir):
    from llama_nb.hf import ModelFileError, load_hf_pretrained

    weights = hf_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(
        ModelFileError, match=r"model.safetensors cannot be read as safetensors .* truncated or corrupt"
    ):
        load_hf_pretrained(hf_dir)


def test_weights_of_another_shape_say_which_tensor_and_which_shape(tmp_path, hf_dir):
    from helpers import small_model

    from llama_nb.hf import ModelFileError, load_hf_pretrained, save_hf_pretrained

    other = save_hf_pretrained(small_model(dim=64), tmp_path / "other")
    (hf_dir / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(ModelFileError, match=r"model.embed_tokens.weight: shape \(97, 64\) .* needs \(97, 32\)"):
        load_hf_pretrained(hf_dir)


def test_non_finite_hf_weights_are_refused_naming_the_tensor(hf_dir):
    from safetensors.torch import save_file

    from llama_nb.hf import ModelFileError, load_hf_pretrained

    weights = load_file(hf_dir / "model.safetensors")
    weights["model.norm.weight"][3] = math.inf
    save_file(weights, hf_dir / "model.safetensors")
    with pytest.raises(ModelFileError, match=r"1 weight tensor\(s\) hold NaN or infinite values \(model.norm.weight\)"):
        load_hf_pretrained(hf_dir)


# --- errors that name the file and the cause; special tokens in prompts -----------------------------------------


def test_a_binary_latest_file_is_a_clear_error(two_runs):
    from llama_nb.checkpoint import CheckpointError, find_checkpoint

    run_dir = two_runs[0].parent
    (run_dir / "LATEST").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(CheckpointError, match=r"LATEST names 'binary data', which is not a checkpoint directory"):
        find_checkpoint(run_dir)


def test_special_token_names_in_a_prompt_are_plain_text(data):
    from llama_nb.model import Llama
    from llama_nb.sampling import encode_as_text, generate_text

    tok = data.tokenizer
    ids = encode_as_text(tok, "ROMEO: [EOS] and [BOS]")
    assert 2 not in ids and 3 not in ids and tok.decode(ids) == "ROMEO: [EOS] and [BOS]"
    assert tok.encode_special_tokens is False  # the tokenizer is left as it was
    text = generate_text(Llama(tiny_config()), tok, "[BOS]ROMEO:", 5, greedy=True, eos_id=None)
    assert text.startswith("[BOS]ROMEO:")


def test_a_prompt_that_is_not_utf8_is_a_clear_error(data, capsys, tmp_path):
    from llama_nb.generate_cli import main
    from llama_nb.model import Llama
    from llama_nb.sampling import generate_text

    with pytest.raises(LlamaNBError, match="not valid UTF-8"):
        generate_text(Llama(tiny_config()), data.tokenizer, "ROMEO \udcff", 5)
    with pytest.raises(SystemExit) as e:  # checked before the checkpoint is read: this one does not exist
        main(["--checkpoint", str(tmp_path / "none"), "--prompt", "ROMEO \udcff"])
    assert e.value.code == 2 and "--prompt is not valid UTF-8 text" in capsys.readouterr().err


# --- sizes that cannot fit -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--n-layers", "100000000"),
        ("--vocab-size", "1000000000000"),
        ("--dim", "1000000"),
        ("--batch-size", "10000000"),
    ],
)
def test_sizes_that_cannot_fit_are_refused_with_the_numbers_before_any_work(tmp_path, capsys, no_data, flag, value):
    import time

    t0 = time.perf_counter()
    code, err = run_main(capsys, "--preset", "tiny", flag, value, "--out-dir", str(tmp_path / "r"))
    assert code == 1 and "This run needs about" in err and "GiB" in err and "but cpu has" in err
    assert time.perf_counter() - t0 < 10  # nothing was built


def test_the_memory_estimate_counts_what_training_keeps():
    from llama_nb.config import memory_estimate, preset_configs
    from llama_nb.model import count_parameters

    config, tc = preset_configs("cpu")
    need = memory_estimate(config, tc)
    assert need["weights, gradients and AdamW state"] == 16 * count_parameters(config)
    doubled = memory_estimate(config, TrainConfig(**{**tc.to_dict(), "batch_size": 2 * tc.batch_size}))
    assert doubled["activations"] == 2 * need["activations"] and doubled["logits"] == 2 * need["logits"]


def test_a_vocabulary_the_tokenizer_trainer_cannot_build_is_refused():
    from llama_nb.tokenizer import MAX_VOCAB_SIZE, train_tokenizer

    with pytest.raises(LlamaNBError, match=rf"vocab_size must be an int in \[260, {MAX_VOCAB_SIZE}\]"):
        train_tokenizer("some text", 10**12)


def test_weights_of_another_shape_in_a_checkpoint_say_which_tensor_and_which_shape(tmp_path, two_runs):
    from llama_nb.checkpoint import CheckpointError, load_model_from_checkpoint, save_checkpoint
    from llama_nb.model import Llama

    wider = save_checkpoint(tmp_path / "wider", Llama(tiny_config(dim=64)), step=2)
    (two_runs[0] / "model.safetensors").write_bytes((wider / "model.safetensors").read_bytes())
    with pytest.raises(
        CheckpointError, match=r"layers.0.attention_norm.weight \(64,\) \(needed: \(16,\)\).*another model"
    ):
        load_model_from_checkpoint(two_runs[0])


def test_a_failed_swap_in_save_hf_pretrained_puts_the_old_version_back(tmp_path):
    "Issue 22: if the second rename fails, the previous directory must be restored, not deleted."
    import os
    from unittest import mock

    from helpers import randomise, small_model

    from llama_nb.hf import load_hf_pretrained, save_hf_pretrained

    first = randomise(small_model(), seed=1)
    target = save_hf_pretrained(first, tmp_path / "m")
    real, calls = os.replace, []

    def fail_second(src, dst):
        calls.append(src)
        if len(calls) == 2:  # the rename of the new version into place
            raise OSError("disk full")
        return real(src, dst)

    with mock.patch("llama_nb.hf.os.replace", fail_second), pytest.raises(OSError, match="disk full"):
        save_hf_pretrained(randomise(small_model(), seed=2), target)
    back = load_hf_pretrained(target)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), first.state_dict().values()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary or old folders left
