"""The README's example runs: the same code, on the `tiny` preset instead of `cpu` and in a temporary folder."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs(tmp_path, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "the README has one Python example"
    code = blocks[0].replace('preset_configs("cpu")', 'preset_configs("tiny", sample_tokens=0)')
    code = code.replace('"runs/cpu"', repr(str(tmp_path / "run")))
    assert code != blocks[0]
    exec(compile(code, str(README), "exec"), {})
    assert capsys.readouterr().out.count("ROMEO:") >= 1
    assert (tmp_path / "run" / "LATEST").is_file()
