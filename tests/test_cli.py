"""The command lines `python -m llama_nb.train_cli` and `python -m llama_nb.generate_cli`, and
benchmarks/bench_quality.py, on a tiny preset."""

import json
import runpy
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from llama_nb.checkpoint import read_checkpoint
from llama_nb.generate_cli import main as generate_main
from llama_nb.train_cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, corpus_file) -> Path:
    "A 5-step tiny run made by the CLI (shared by the tests below)."
    out = tmp_path_factory.mktemp("run") / "tiny"
    proc = run(
        "-m",
        "llama_nb.train_cli",
        "--preset",
        "tiny",
        "--max-steps",
        "5",
        "--data",
        str(corpus_file),
        "--out-dir",
        str(out),
        "--no-progress",
        "--seed",
        "3",
    )
    assert proc.returncode == 0, proc.stderr
    assert "done: 5 steps" in proc.stdout and "nats/char" in proc.stdout
    return out


def test_help():
    proc = run("-m", "llama_nb.train_cli", "--help")
    assert proc.returncode == 0
    for option in (
        "--preset",
        "--dim",
        "--n-layers",
        "--lr",
        "--max-steps",
        "--batch-size",
        "--seq-len",
        "--vocab-size",
        "--data",
        "--out-dir",
        "--resume",
        "--seed",
        "--eval-interval",
        "--device",
    ):
        assert option in proc.stdout, option
    proc = run("-m", "llama_nb.generate_cli", "--help")
    assert proc.returncode == 0
    for option in (
        "--checkpoint",
        "--prompt",
        "--max-new-tokens",
        "--temperature",
        "--top-k",
        "--top-p",
        "--seed",
        "--greedy",
    ):
        assert option in proc.stdout, option


def test_train_writes_a_checkpoint(trained_dir):
    ckpt, state = read_checkpoint(trained_dir)
    assert ckpt == trained_dir / "step_000005" and state["step"] == 5
    assert state["model_config"]["dim"] == 32 and state["train_config"]["seed"] == 3
    assert len(state["history"]["loss"]) == 5


def test_resume_continues_the_run(trained_dir, corpus_file, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(trained_dir, out)
    proc = run(
        "-m",
        "llama_nb.train_cli",
        "--resume",
        "--max-steps",
        "8",
        "--data",
        str(corpus_file),
        "--out-dir",
        str(out),
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stdout and "at step 5" in proc.stdout and "done: 8 steps" in proc.stdout
    _, state = read_checkpoint(out)
    assert state["step"] == 8 and len(state["history"]["loss"]) == 8
    assert state["history"]["loss"][:5] == read_checkpoint(trained_dir)[1]["history"]["loss"]


def test_generate_from_the_checkpoint(trained_dir, capsys):
    args = ["--checkpoint", str(trained_dir), "--prompt", "ROMEO:", "--max-new-tokens", "12", "--seed", "1"]
    proc = run("-m", "llama_nb.generate_cli", *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ROMEO:") and len(proc.stdout) > len("ROMEO:\n")
    assert generate_main(args) == 0
    assert capsys.readouterr().out == proc.stdout  # the same seed gives the same sample, in any process
    assert generate_main([*args, "--greedy", "--top-p", "1"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    assert generate_main(["--checkpoint", str(trained_dir), "--max-new-tokens", "500", "--greedy"]) == 0
    assert "context of 32 tokens is full" in capsys.readouterr().err


def test_cli_errors_are_clear(trained_dir, corpus_file, tmp_path, capsys):
    base = ["--data", str(corpus_file), "--no-progress"]
    assert main(["--preset", "tiny", "--out-dir", str(trained_dir), *base]) == 1  # would overwrite a run
    assert "already holds a checkpoint: pass resume=True (--resume)" in capsys.readouterr().err
    assert main(["--resume", "--dim", "64", "--out-dir", str(trained_dir), *base]) == 1
    err = capsys.readouterr().err
    assert "Cannot resume" in err and "--dim 64 (checkpoint: 32)" in err
    assert main(["--resume", "--out-dir", str(tmp_path / "nothing"), *base]) == 1
    assert "No checkpoint at" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # bad values are usage errors
        main(["--preset", "tiny", "--lr", "-1", "--out-dir", str(tmp_path / "x"), *base])
    assert e.value.code == 2 and "lr must be a finite number >= 0, got -1.0" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["--preset", "tiny", "--device", "cuda", "--out-dir", str(tmp_path / "gpu"), *base]) == 1
        assert "CUDA is not available here: use --device cpu" in capsys.readouterr().err
    assert generate_main(["--checkpoint", str(tmp_path / "nothing")]) == 1
    assert "No checkpoint at" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # checked before the checkpoint is read: this one does not exist
        generate_main(["--checkpoint", str(tmp_path / "nothing"), "--top-p", "1.5"])
    assert e.value.code == 2 and "top_p must be in (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        generate_main(["--checkpoint", str(trained_dir), "--prompt", ""])
    assert e.value.code == 2 and "prompt is empty" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        generate_main(["--checkpoint", str(trained_dir), "--temperature", "0"])
    assert e.value.code == 2 and "temperature must be a finite number > 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # an unknown device: a usage error, not a RuntimeError traceback
        generate_main(["--checkpoint", str(trained_dir), "--device", "banana"])
    assert e.value.code == 2 and "Unknown device 'banana'" in capsys.readouterr().err
    if not torch.cuda.is_available():  # a missing GPU: a usage error, not an AssertionError traceback
        with pytest.raises(SystemExit) as e:
            generate_main(["--checkpoint", str(trained_dir), "--device", "cuda"])
        assert e.value.code == 2 and "CUDA is not available here" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # the old subcommand points to its new home
        main(["generate", "--checkpoint", str(trained_dir)])
    assert e.value.code == 2 and "python -m llama_nb.generate_cli" in capsys.readouterr().err


def test_bad_data_files_give_clear_errors(tmp_path, capsys):
    base = ["--preset", "tiny", "--no-progress"]
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "latin1.txt").write_bytes("Roméo et Juliette".encode("latin-1"))
    cases = [("empty.txt", "is empty"), ("latin1.txt", "is not UTF-8 text"), ("missing.txt", "no such file")]
    for name, message in cases:
        out = tmp_path / f"run-{name}"
        assert main([*base, "--data", str(tmp_path / name), "--out-dir", str(out)]) == 1
        err = capsys.readouterr().err
        assert message in err and str(tmp_path / name) in err, err
        assert not out.exists()  # nothing written


@pytest.mark.filterwarnings("ignore:'llama_nb.train_cli' found in sys.modules:RuntimeWarning")
def test_main_guard_does_not_run_inside_a_notebook_kernel(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["llama_nb.train_cli", "--help"])
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    runpy.run_module("llama_nb.train_cli", run_name="__main__")  # would print help and exit without the guard
    monkeypatch.delitem(sys.modules, "ipykernel")
    with pytest.raises(SystemExit) as e:
        runpy.run_module("llama_nb.train_cli", run_name="__main__")
    assert e.value.code == 0


def test_bench_quality_runs(corpus_file, tmp_path):
    "A smoke run of the benchmark script: 2 anchor iterations, then our tiny preset for a fixed 1 s budget."
    path = tmp_path / "results" / "quality.json"
    args = ["--preset", "tiny", "--baseline-iters", "2", "--budget", "1", "--data", str(corpus_file)]
    proc = run("benchmarks/bench_quality.py", *args, "--json", str(path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(path.read_text())
    ours, anchor, fig = result["ours"], result["anchor"], result["figures"][0]
    assert result["benchmark"] == "quality" and anchor["steps"] == 2 and fig["threads"] == 2
    # the loop stops at the first step that reaches the budget; how far past it depends on the machine's load
    assert ours["steps"] > 0 and ours["train_s"] >= 1.0
    assert 0 < ours["val_nats_per_char"] < 10 and 0 < anchor["val_nats_per_char"] < 10
    if not fig["refused"]:  # a figure is withheld when the machine was busy
        assert abs(fig["value"] - (ours["val_nats_per_char"] - anchor["val_nats_per_char"])) <= 2e-4


def test_a_diverging_run_exits_with_an_error_and_no_traceback(tmp_path, corpus_file):
    "Issue 24: --lr 1e30 used to end 'done' with NaN checkpoints (or die in sampling with a raw traceback)."
    out = tmp_path / "nan"
    proc = run(
        "-m", "llama_nb.train_cli", "--preset", "tiny", "--lr", "1e30", "--sample-tokens", "0", "--max-steps", "20",
        "--data", str(corpus_file), "--out-dir", str(out), "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error: Training diverged at step" in proc.stderr and "lr=1e+30" in proc.stderr
    assert "Traceback" not in proc.stderr and "done:" not in proc.stdout
    assert not list(out.glob("step_*"))  # nothing saved


def test_ctrl_c_says_where_the_last_checkpoint_is(tmp_path, corpus_file):
    "Ctrl-C (SIGINT) once a checkpoint exists: exit code 130, the checkpoint named, how to resume, no traceback."
    import signal
    import time

    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_nb.train_cli", "--preset", "tiny", "--max-steps", "100000", "--eval-interval",
         "5", "--sample-tokens", "0", "--data", str(corpus_file), "--out-dir", str(out), "--no-progress"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "LATEST").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted: the last checkpoint is" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
