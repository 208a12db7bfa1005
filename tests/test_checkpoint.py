"""Checkpoints (llama_nb.checkpoint, Chapter 6.4): round trip, safe loading, atomic saves, clear errors, resume."""

import json
import os
import random
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import QUIET, run_python, two_layer_config

import llama_nb.checkpoint as T
from llama_nb.batches import get_batch
from llama_nb.checkpoint import (
    CheckpointError,
    capture_rng_state,
    find_checkpoint,
    load_checkpoint,
    load_model_from_checkpoint,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from llama_nb.config import TrainConfig
from llama_nb.loop import train
from llama_nb.model import Llama
from llama_nb.optim import configure_optimizer, train_step


@pytest.fixture
def trained(data):
    "A model and optimizer after 3 steps, and the data generator that fed them."
    torch.manual_seed(0)
    model = Llama(two_layer_config())
    opt = configure_optimizer(model, 1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        train_step(model, opt, lambda: get_batch(data.train_ids, 4, 32, gen), 1e-3)
    return model, opt, gen


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# ------------------------------------------------------------------------------------------------ round trip
def test_round_trip_restores_weights_optimizer_and_rng(tmp_path, trained, data):
    model, opt, gen = trained
    history = {"loss": [3.0, 2.5], "samples": [{"step": 2, "text": "hi"}]}
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    ckpt = save_checkpoint(
        tmp_path,
        model,
        opt,
        step=3,
        tokenizer=data.tokenizer,
        train_config={"lr": 1e-3},
        data_generator=gen,
        history=history,
    )
    assert ckpt == tmp_path / "step_000003" and entries(tmp_path) == ["LATEST", "step_000003"]
    assert entries(ckpt) == ["model.safetensors", "state.pt", "tokenizer.json"]
    expected = (torch.rand(3), random.random(), np.random.rand(), torch.randint(10**6, (3,), generator=gen))

    torch.manual_seed(123)
    fresh = Llama(two_layer_config())
    fresh_opt = configure_optimizer(fresh, 1e-3)
    fresh_gen = torch.Generator().manual_seed(99)
    state = load_checkpoint(tmp_path, fresh, fresh_opt, data_generator=fresh_gen)
    assert state["step"] == 3 and state["history"] == history and state["train_config"] == {"lr": 1e-3}
    assert same_weights(model, fresh) and fresh.output.weight is fresh.tok_embeddings.weight
    got = (torch.rand(3), random.random(), np.random.rand(), torch.randint(10**6, (3,), generator=fresh_gen))
    assert torch.equal(got[0], expected[0]) and got[1:3] == expected[1:3] and torch.equal(got[3], expected[3])
    a, b = opt.state_dict(), fresh_opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for k in a["state"][i]:
            assert torch.equal(a["state"][i][k], b["state"][i][k])


def test_state_file_holds_only_plain_data_and_loads_with_weights_only(tmp_path, trained):
    model, opt, gen = trained
    ckpt = save_checkpoint(tmp_path, model, opt, step=3, data_generator=gen, train_config=TrainConfig().to_dict())
    state = torch.load(ckpt / "state.pt", weights_only=True)

    def walk(x):
        if isinstance(x, dict):
            assert all(isinstance(k, (str, int)) for k in x)
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        else:
            assert x is None or isinstance(x, (torch.Tensor, int, float, str, bool)), type(x)

    walk(state)
    with open(ckpt / "model.safetensors", "rb") as f:  # safetensors header: 8-byte length, then JSON
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert json.loads(header["__metadata__"]["model_config"]) == model.config.to_dict()


def test_load_model_from_checkpoint_builds_the_saved_config(tmp_path, trained, data):
    model, _, _ = trained
    save_checkpoint(tmp_path, model, step=7, tokenizer=data.tokenizer)
    loaded, tokenizer, state = load_model_from_checkpoint(tmp_path)
    assert same_weights(model, loaded) and not loaded.training and state["step"] == 7 and state["optimizer"] is None
    assert tokenizer.to_str() == data.tokenizer.to_str()
    assert find_checkpoint(tmp_path / "step_000007") == tmp_path / "step_000007"  # a step dir works too
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(tmp_path, Llama(two_layer_config()), configure_optimizer(Llama(two_layer_config()), 1e-3))


def test_keep_last_and_saving_a_step_twice(tmp_path, trained):
    model, _, _ = trained
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, model, step=step, keep_last=2)
    assert entries(tmp_path) == ["LATEST", "step_000002", "step_000003"]
    again = save_checkpoint(tmp_path, model, step=3, keep_last=2)
    assert again.name == "step_000003-1" and (tmp_path / "LATEST").read_text().strip() == "step_000003-1"
    assert entries(tmp_path) == ["LATEST", "step_000003", "step_000003-1"]


# -------------------------------------------------------------------------------------------- atomic saving
def _crash_in_torch_save(obj, f, *args, **kwargs):
    Path(f).write_bytes(b"half a file")
    raise OSError("No space left on device")


def _crash_in_safetensors(model, filename, *args, **kwargs):
    Path(filename).write_bytes(b"\x00" * 10)
    raise OSError("killed")


def _crash_in_latest(path, text):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "target, crash",
    [
        ("torch.save", _crash_in_torch_save),
        ("llama_nb.checkpoint._save_safetensors", _crash_in_safetensors),
        ("llama_nb.checkpoint.write_atomic", _crash_in_latest),
    ],
)
def test_a_crash_mid_save_leaves_the_previous_checkpoint_intact(tmp_path, trained, monkeypatch, target, crash):
    model, opt, gen = trained
    save_checkpoint(tmp_path, model, opt, step=1, data_generator=gen)
    before = {p.name: p.read_bytes() for p in (tmp_path / "step_000001").iterdir()}
    with torch.no_grad():
        model.norm.weight.add_(1.0)  # the model moves on
    monkeypatch.setattr(target, crash)
    with pytest.raises((OSError, KeyboardInterrupt)):
        save_checkpoint(tmp_path, model, opt, step=2, data_generator=gen)
    monkeypatch.undo()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files or directories
    assert (tmp_path / "LATEST").read_text().strip() == "step_000001"
    assert {p.name: p.read_bytes() for p in (tmp_path / "step_000001").iterdir()} == before
    fresh = Llama(two_layer_config())
    assert load_checkpoint(tmp_path, fresh, configure_optimizer(fresh, 1e-3))["step"] == 1
    assert not torch.equal(fresh.norm.weight, model.norm.weight)
    # the next save works and cleans up after the crash
    save_checkpoint(tmp_path, model, opt, step=3)
    assert entries(tmp_path) == ["LATEST", "step_000003"]


# --------------------------------------------------------------------------------------------- clear errors
def test_missing_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint at .*no such directory.*python -m llama_nb.train_cli"):
        load_checkpoint(tmp_path / "nope", Llama(two_layer_config()))
    with pytest.raises(CheckpointError, match="has no LATEST file"):
        load_checkpoint(tmp_path, Llama(two_layer_config()))
    (tmp_path / "LATEST").write_text("step_000009\n")
    with pytest.raises(CheckpointError, match="names 'step_000009', which is not a checkpoint directory"):
        load_checkpoint(tmp_path, Llama(two_layer_config()))


@pytest.mark.parametrize("name", ["model.safetensors", "state.pt"])
def test_missing_and_truncated_files(tmp_path, trained, name):
    model, opt, _ = trained
    ckpt = save_checkpoint(tmp_path, model, opt, step=1)
    content = (ckpt / name).read_bytes()
    (ckpt / name).write_bytes(content[: len(content) // 2])
    with pytest.raises(CheckpointError, match=f"{name} cannot be (read|loaded).*truncated or corrupt.*Delete"):
        load_checkpoint(tmp_path, Llama(two_layer_config()))
    (ckpt / name).unlink()
    with pytest.raises(CheckpointError, match=f"has no {name}: the checkpoint is incomplete"):
        load_checkpoint(tmp_path, Llama(two_layer_config()))


def test_wrong_config(tmp_path, trained):
    model, _, _ = trained
    save_checkpoint(tmp_path, model, step=1)
    with pytest.raises(CheckpointError, match=r"different config: dim=32 \(your model: 64\).*LlamaConfig.from_dict"):
        load_checkpoint(tmp_path, Llama(two_layer_config(dim=64)))
    with pytest.raises(CheckpointError, match="n_layers=2 \\(your model: 3\\)"):
        load_checkpoint(tmp_path, Llama(two_layer_config(n_layers=3)))


def test_files_from_different_saves(tmp_path, trained):
    model, _, _ = trained
    a = save_checkpoint(tmp_path / "a", model, step=1)
    b = save_checkpoint(tmp_path / "b", model, step=2)
    (b / "model.safetensors").write_bytes((a / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="from step 1 but state.pt from step 2"):
        load_checkpoint(tmp_path / "b", Llama(two_layer_config()))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_state_file_that_is_not_ours_is_refused_without_unpickling(tmp_path, trained):
    model, _, _ = trained
    ckpt = save_checkpoint(tmp_path, model, step=1)
    torch.save({"format": "something else"}, ckpt / "state.pt")
    with pytest.raises(CheckpointError, match="is not a llama_nb.checkpoint/1 checkpoint"):
        read_checkpoint(tmp_path)
    torch.save({"format": T.CHECKPOINT_FORMAT, "payload": Evil()}, ckpt / "state.pt")
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_checkpoint(tmp_path)


def test_rng_state_round_trip_without_a_data_generator_is_an_error_only_when_asked():
    state = capture_rng_state()
    restore_rng_state(state)
    with pytest.raises(CheckpointError, match="no data-generator state"):
        restore_rng_state(state, torch.Generator())


# --------------------------------------------------------------------------------- exact resume, fresh process
RESUME_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from llama_nb.tokenizer import load_tokenizer
    from llama_nb.batches import prepare_data
    from llama_nb.checkpoint import find_checkpoint
    from llama_nb.config import TrainConfig
    from llama_nb.loop import train
    from llama_nb.model import LlamaConfig

    torch.set_num_threads(int(sys.argv[3]))
    out_dir, text = sys.argv[1], open(sys.argv[2], encoding="utf-8").read()
    ckpt = find_checkpoint(out_dir)
    data = prepare_data(text, 512, tokenizer=load_tokenizer(ckpt / "tokenizer.json"))
    state = torch.load(ckpt / "state.pt", weights_only=True)
    config, tc = LlamaConfig.from_dict(state["model_config"]), TrainConfig.from_dict(state["train_config"])
    result = train(config, tc, data, out_dir=out_dir, resume=True, progress=False, log=lambda message: None)
    print("resumed to", result.steps)
""")


@pytest.mark.slow  # a second process
def test_resume_in_a_fresh_process_is_exact(tmp_path, text, data, monkeypatch):
    text_file = tmp_path / "corpus.txt"
    text_file.write_text(text, encoding="utf-8")  # the text of `data`
    config = two_layer_config(dropout=0.1)  # dropout: the torch RNG matters too
    tc = TrainConfig(
        batch_size=4,
        seq_len=32,
        grad_accum_steps=2,
        max_steps=9,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=2,
        eval_interval=4,
        sample_tokens=4,
    )
    straight = train(config, tc, data, out_dir=tmp_path / "straight", **QUIET)
    train(config, tc, data, out_dir=tmp_path / "split", stop_at=5, **QUIET)  # interrupted after 5 of 9 steps
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)
    proc = run_python(str(script), str(tmp_path / "split"), str(text_file), str(torch.get_num_threads()))
    assert proc.returncode == 0, proc.stderr
    assert "resumed to 9" in proc.stdout

    resumed, _, state = load_model_from_checkpoint(tmp_path / "split")
    assert state["step"] == 9
    assert same_weights(straight.model, resumed)
    assert state["history"]["loss"] == straight.history["loss"]  # every loss identical, not just close
    assert state["history"]["val_nats_per_token"][-1] == straight.history["val_nats_per_token"][-1]
    # The comparison can fail: resume the same interruption without restoring the data generator, and the run
    # draws different batches from step 5 on.
    train(config, tc, data, out_dir=tmp_path / "split2", stop_at=5, **QUIET)
    real_restore = T.restore_rng_state
    monkeypatch.setattr(T, "restore_rng_state", lambda state, data_generator=None: real_restore(state))
    wrong = train(config, tc, data, out_dir=tmp_path / "split2", resume=True, **QUIET)
    assert not same_weights(straight.model, wrong.model)
    assert wrong.history["loss"][:5] == straight.history["loss"][:5]
    assert wrong.history["loss"][5:] != straight.history["loss"][5:]
