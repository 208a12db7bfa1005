"""`python -m llama_nb.generate_cli`: the sampling command line on a real (tiny) checkpoint."""

import subprocess
import sys

import pytest


def _run(*args, **kw):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, corpus_path):
    out = tmp_path_factory.mktemp("cli") / "run"
    train = _run(
        "llama_nb.train_cli",
        "--preset",
        "tiny",
        "--max-steps",
        "4",
        "--eval-interval",
        "0",
        "--sample-tokens",
        "0",
        "--out-dir",
        str(out),
    )
    assert train.returncode == 0, train.stderr
    return out


def test_help():
    result = _run("llama_nb.generate_cli", "--help")
    assert result.returncode == 0
    for flag in ("--checkpoint", "--prompt", "--greedy", "--temperature", "--top-k", "--top-p", "--seed"):
        assert flag in result.stdout


def test_greedy_is_deterministic_and_continues_the_prompt(checkpoint):
    args = (
        "llama_nb.generate_cli",
        "--checkpoint",
        str(checkpoint),
        "--prompt",
        "ROMEO:",
        "--max-new-tokens",
        "12",
        "--greedy",
    )
    first, second = _run(*args), _run(*args)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout.startswith("ROMEO:") and len(first.stdout) > len("ROMEO:\n")
    assert first.stdout == second.stdout


def test_seeded_sampling_is_reproducible(checkpoint):
    args = ("llama_nb.generate_cli", "--checkpoint", str(checkpoint), "--max-new-tokens", "12", "--seed", "3")
    first, second = _run(*args), _run(*args)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout.startswith("ROMEO:") and len(first.stdout) > len("ROMEO:\n")  # the default prompt, continued
    assert first.stdout == second.stdout


@pytest.mark.parametrize(
    "bad, message",
    [(("--top-p", "1.5"), "top_p"), (("--temperature", "0"), "temperature"), (("--top-k", "-1"), "top_k")],
)
def test_bad_sampling_arguments(checkpoint, bad, message):
    result = _run("llama_nb.generate_cli", "--checkpoint", str(checkpoint), *bad)
    assert result.returncode != 0 and message in result.stderr


def test_missing_checkpoint(tmp_path):
    result = _run("llama_nb.generate_cli", "--checkpoint", str(tmp_path / "nowhere"))
    assert result.returncode == 1 and "No checkpoint" in result.stderr
