"""The training command line is made from the configuration dataclasses (section 7.2's `add_config_flags`): every
field is a flag with its type, help and choices, the resumable fields are read from the fields, and the console
scripts `llama-nb-train`, `llama-nb-generate` and `llama-nb-gguf` are installed beside `python -m`."""

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from llama_nb.config import MODEL_FIELDS, RESUMABLE_CHANGES, TrainConfig
from llama_nb.model import LlamaConfig, config_field
from llama_nb.train_cli import add_config_flags, build_train_parser, flag_name, resolve_configs


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions}


def test_every_train_config_field_and_every_model_field_a_preset_may_change_is_a_flag():
    actions = _actions(build_train_parser())
    for f in dataclasses.fields(TrainConfig):
        action = actions[f.name]
        assert action.help == f.metadata["help"] and action.default is None  # None: keep the preset's value
        assert flag_name(f) in action.option_strings
        assert action.choices == f.metadata.get("choices")
    for name in MODEL_FIELDS:
        assert actions[name].help == next(f.metadata["help"] for f in dataclasses.fields(LlamaConfig) if f.name == name)
    assert "hidden_dim" not in actions  # not a field a preset user may change
    assert actions["time_budget_s"].option_strings == ["--time-budget"]  # the field's own flag name
    assert "--no-compile" in actions["compile"].option_strings  # a bool is a --name / --no-name pair


def test_flags_parse_to_the_field_types():
    args = build_train_parser().parse_args(
        [
            "--preset",
            "tiny",
            "--lr",
            "2e-3",
            "--max-steps",
            "7",
            "--dim",
            "48",
            "--keep-best",
            "--no-compile",
            "--time-budget",
            "1.5",
            "--sample-prompt",
            "JULIET:",
            "--optimizer",
            "muon",
        ]
    )
    config, tc = resolve_configs(args)
    assert (config.dim, tc.lr, tc.max_steps, tc.keep_best, tc.compile, tc.time_budget_s) == (
        48,
        2e-3,
        7,
        True,
        False,
        1.5,
    )
    assert tc.sample_prompt == "JULIET:" and tc.optimizer == "muon"
    with pytest.raises(SystemExit):
        build_train_parser().parse_args(["--optimizer", "sgd"])  # choices come from the field's metadata


def test_a_new_config_field_is_a_flag_with_no_other_edit():
    @dataclasses.dataclass
    class Config:
        width: int = config_field(8, "how wide")
        rate: float | None = config_field(None, "how fast", flag="--speed")
        mode: str = config_field("a", "which one", choices=("a", "b"))
        on: bool = config_field(False, "whether")

    parser = argparse.ArgumentParser()
    assert add_config_flags(parser.add_argument_group("g"), Config) == ["width", "rate", "mode", "on"]
    args = parser.parse_args(["--width", "3", "--speed", "0.5", "--mode", "b", "--on"])
    assert (args.width, args.rate, args.mode, args.on) == (3, 0.5, "b", True)
    assert parser.parse_args([]).width is None


def test_resumable_fields_are_read_from_the_fields_and_listed_in_the_help():
    marked = [f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("resumable")]
    assert list(RESUMABLE_CHANGES) == marked and "max_steps" in marked and "lr" not in marked
    help_text = _actions(build_train_parser())["resume"].help
    assert all(flag_name(f) in help_text for f in dataclasses.fields(TrainConfig) if f.name in marked)
    assert "--lr" not in help_text


@pytest.mark.slow  # six fresh processes
@pytest.mark.parametrize(
    "script, module",
    [
        ("llama-nb-train", "llama_nb.train_cli"),
        ("llama-nb-generate", "llama_nb.generate_cli"),
        ("llama-nb-gguf", "llama_nb.gguf_export"),
    ],
)
def test_console_scripts_are_installed_and_name_themselves(script, module):
    path = Path(sys.executable).parent / script
    assert path.is_file(), f"{script} is not installed: run `make install` (pip install -e .)"
    out = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith(f"usage: {script} ")
    via_module = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert via_module.stdout.startswith(f"usage: python -m {module} ")
    assert out.stdout.split("\noptions:")[1] == via_module.stdout.split("\noptions:")[1]  # the same options
