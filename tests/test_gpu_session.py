"""Fast tests of the GPU session's own machinery (benchmarks/): gpu_session.sh's preflight and its failure paths,
run_notebook.py when the kernel dies or a cell runs out of time, accept_gpu_notebook.py's refusals, the summary
and limits of gpu_summary.py, and bench_gpu.py's JSON file with its batch sweep (on the CPU, --smoke). None of them
needs a GPU; the session itself on a GPU is run by hand (benchmarks/README.md)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch
from helpers import run_python

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import accept_gpu_notebook  # noqa: E402
import gpu_summary  # noqa: E402

new = nbformat.v4
GPU_MODE = "mode: full GPU run | torch 2.13.0+cu130 | CUDA 13.0 | NVIDIA H200"


# --- accept_gpu_notebook.py ---------------------------------------------------------------------------------------


def _chapter(mode_line: str = GPU_MODE) -> nbformat.NotebookNode:
    "A small stand-in for Chapter 7 as run_notebook.py leaves it: every code cell executed, the mode line in cell 2."
    cells = [
        new.new_code_cell("#| default_exp gpu"),
        new.new_markdown_cell("# GPUs"),
        new.new_code_cell("print(MODE)"),
        new.new_code_cell("print(6 * 7)"),
        new.new_code_cell(""),
    ]
    cells[2].outputs = [new.new_output("stream", name="stdout", text=mode_line + "\n")]
    cells[3].outputs = [new.new_output("stream", name="stdout", text="42\n")]
    for count, cell in enumerate(cells[:1] + cells[2:4], start=1):
        cell.execution_count = count
    return new.new_notebook(cells=cells)


@pytest.fixture
def chapter(tmp_path):
    "(executed notebook, target): the target is a copy of the chapter before the run (same cells, no outputs)."
    target = tmp_path / "notebooks" / "07_gpu_training.ipynb"
    target.parent.mkdir()
    before = _chapter()
    for cell in before.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(before, target)
    return tmp_path / "out" / "07_gpu_training.ipynb", target


def _accept(run: nbformat.NotebookNode, executed: Path, target: Path, *extra: str) -> tuple[int, bytes]:
    executed.parent.mkdir(exist_ok=True)
    nbformat.write(run, executed)
    before = target.read_bytes()
    code = accept_gpu_notebook.main([str(executed), "--target", str(target), *extra])
    if code != 0:  # a refusal writes nothing: the target and its folder as they were
        assert target.read_bytes() == before and os.listdir(target.parent) == [target.name]
    return code, target.read_bytes()


def test_accept_copies_a_complete_full_gpu_run_atomically(chapter, capsys):
    executed, target = chapter
    code, copied = _accept(_chapter(), executed, target)
    assert code == 0 and copied == executed.read_bytes()
    assert os.listdir(target.parent) == [target.name]  # no temporary file left beside it
    assert "accepted: a full GPU run on NVIDIA H200" in capsys.readouterr().out


def _set_error(nb):
    nb.cells[3].outputs.append(new.new_output("error", ename="CellTimeoutError", evalue="still running", traceback=[]))


def _unexecuted(nb):
    nb.cells[3].execution_count, nb.cells[3].outputs = None, []


def _mode(line: str):
    "A change to the run: cell 2 prints `line` instead of the full GPU run's mode line."
    return lambda nb: nb.cells[2].outputs.__setitem__(0, new.new_output("stream", name="stdout", text=line + "\n"))


@pytest.mark.parametrize(
    "change, reason",
    [
        (_mode("mode: smoke | torch 2.13.0+cpu | no CUDA device"), "not a full GPU run"),
        (_mode("mode: full GPU run | torch 2.13.0+cu130"), "names no CUDA device"),
        (_mode("mode: full GPU run | torch 2.13.0 | CUDA 13.0 | cpu"), "names no CUDA device"),
        (lambda nb: nb.cells[2].outputs.clear(), "no line starting 'mode: '"),
        (_set_error, "cell 3 has an error output: CellTimeoutError"),
        (_unexecuted, "not executed"),
        (lambda nb: setattr(nb.cells[3], "source", "print(6 * 9)"), "the chapter changed since this run"),
    ],
)
def test_accept_refuses_and_writes_nothing(chapter, capsys, change, reason):
    executed, target = chapter
    run = _chapter()
    change(run)
    code, _ = _accept(run, executed, target)
    err = capsys.readouterr().err
    assert code == 1 and "REFUSED" in err and reason in err, err


def test_accept_source_changes_only_when_asked(chapter):
    executed, target = chapter
    run = _chapter()
    run.cells[3].source = "print(6 * 9)"
    assert _accept(run, executed, target, "--allow-source-changes")[0] == 0


@pytest.mark.parametrize(
    "ladder, reason",
    [
        ({"device": "NVIDIA H200", "complete": False, "rows": [{"rung": "baseline"}]}, "not complete"),
        ({"device": "NVIDIA H200", "complete": True, "rows": []}, "no rows"),
        ({"device": "cpu", "complete": True, "rows": [{"rung": "baseline"}]}, "not on a GPU"),
        (None, "cannot read the ladder file"),
    ],
)
def test_accept_checks_the_ladder_when_given(chapter, tmp_path, capsys, ladder, reason):
    executed, target = chapter
    path = tmp_path / "ch7_ladder.json"
    if ladder is not None:
        path.write_text(json.dumps(ladder))
    code, _ = _accept(_chapter(), executed, target, "--ladder", str(path))
    assert code == 1 and reason in capsys.readouterr().err
    path.write_text(json.dumps({"device": "NVIDIA H200", "complete": True, "rows": [{"rung": "baseline"}]}))
    assert _accept(_chapter(), executed, target, "--ladder", str(path))[0] == 0


# --- run_notebook.py: a dead kernel, a cell out of time -------------------------------------------------------------


@pytest.mark.slow  # a runner process and its Jupyter kernel
@pytest.mark.parametrize(
    "source, options, ename, says",
    [
        ("import os\nos._exit(1)", [], "DeadKernelError", "the kernel died"),
        ("import time\ntime.sleep(120)", ["--timeout", "2"], "CellTimeoutError", "still running after 2 s: --timeout"),
    ],
)
def test_run_notebook_stops_at_a_dead_kernel_or_a_timeout_and_keeps_earlier_cells(
    tmp_path, source, options, ename, says
):
    cells = [new.new_code_cell("print(6 * 7)"), new.new_code_cell(source), new.new_code_cell("print('never')")]
    nbformat.write(new.new_notebook(cells=cells), tmp_path / "t.ipynb")
    done = run_python(
        str(BENCH / "run_notebook.py"), str(tmp_path / "t.ipynb"), "--out", str(tmp_path / "out"), *options, timeout=60
    )
    assert done.returncode == 1 and f"cell 1 FAILED ({ename})" in done.stdout and says in done.stdout, done.stdout
    cells = nbformat.read(tmp_path / "out" / "t.ipynb", as_version=4).cells
    assert cells[0].outputs[0]["text"] == "42\n" and cells[0].execution_count == 1
    assert cells[1].outputs[-1]["output_type"] == "error" and cells[1].outputs[-1]["ename"] == ename
    assert cells[2].outputs == [] and cells[2].execution_count is None


@pytest.mark.slow  # a runner process and its Jupyter kernel
def test_run_notebook_stopped_by_sigterm_saves_and_says_so(tmp_path):
    "gpu_session.sh's backstop `timeout` sends SIGTERM: the runner saves what ran and shuts its kernel down."
    started = tmp_path / "started"
    cells = [
        new.new_code_cell("print(6 * 7)"),
        new.new_code_cell(f"import time\nopen({str(started)!r}, 'w').close()\ntime.sleep(120)"),
    ]
    nbformat.write(new.new_notebook(cells=cells), tmp_path / "t.ipynb")
    command = [sys.executable, str(BENCH / "run_notebook.py"), str(tmp_path / "t.ipynb"), "--out", str(tmp_path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as runner:
        for _ in range(300):  # until the second cell runs
            if started.exists():
                break
            time.sleep(0.1)
        runner.terminate()
        stdout, _ = runner.communicate(timeout=30)
    assert runner.returncode == 1 and "cell 1 FAILED (Terminated)" in stdout
    cells = nbformat.read(tmp_path / "t.ipynb", as_version=4).cells
    assert cells[0].outputs[0]["text"] == "42\n" and cells[1].outputs[-1]["ename"] == "Terminated"


# --- gpu_session.sh ---------------------------------------------------------------------------------------------------


def _session(tmp_path, corpus_path, **env) -> tuple[subprocess.CompletedProcess, Path]:
    "Run gpu_session.sh in the project's root with this interpreter; a notebook that leaves a marker if it runs."
    marker = tmp_path / "notebook-ran"
    nbformat.write(
        new.new_notebook(cells=[new.new_code_cell(f"open({str(marker)!r}, 'w').close()")]), tmp_path / "fake.ipynb"
    )
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OUT": str(out),
        "DEADLINE_S": "120",
        "NOTEBOOK": str(tmp_path / "fake.ipynb"),
        "LLAMA_NB_TINYSHAKESPEARE": str(corpus_path),
        **env,
    }
    done = subprocess.run(
        ["bash", "benchmarks/gpu_session.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=110
    )
    return done, marker


@pytest.mark.slow  # gpu_session.sh
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_session_without_cuda_stops_before_the_notebook_unless_allowed(tmp_path, corpus_path):
    done, marker = _session(tmp_path, corpus_path, ALLOW_CPU="0")
    assert done.returncode == 2, done.stdout
    assert "STOP: no CUDA device" in done.stdout and "ALLOW_CPU=1" in done.stdout
    assert "preflight: python" in done.stdout and "| no CUDA device" in done.stdout  # versions printed first
    assert "preflight: corpus 1,115,394 characters" in done.stdout
    assert not marker.exists() and "== notebook" not in done.stdout and "== bench_gpu" not in done.stdout
    assert "STOP: no CUDA device" in (tmp_path / "out" / "session.log").read_text()


@pytest.mark.slow  # gpu_session.sh, and bench_gpu.py in it
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_session_with_a_failed_wheel_install_skips_the_notebook_but_runs_bench_gpu(tmp_path, corpus_path):
    shadow = tmp_path / "shadow" / "nbclient"  # this interpreter without Jupyter, as on the GPU machine
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('planted: no Jupyter here')\n")
    kit = tmp_path / "kit"
    (kit / "whl").mkdir(parents=True)
    (kit / "whl" / "broken-1.0-py3-none-any.whl").write_text("not a wheel")
    done, marker = _session(tmp_path, corpus_path, ALLOW_CPU="1", KIT=str(kit), PYTHONPATH=str(shadow.parent))
    out = tmp_path / "out"
    assert "THE NOTEBOOK IS SKIPPED" in done.stdout and not marker.exists(), done.stdout
    assert "bench_gpu.py exit code 0" in done.stdout
    results = json.loads((out / "bench_gpu.json").read_text())
    assert results["smoke"] is True and [row["batch_size"] for row in results["sweep"]] == [4, 8]
    lines = done.stdout.splitlines()
    best = next(line for line in lines if line.startswith("best val nats/char:"))
    assert best.startswith("best val nats/char: notebook missing | bench_gpu (smoke) ")
    assert "session done" in lines[-1] and "notebook (skipped)" in lines[-1] and done.returncode == 1
    assert sorted(os.listdir(out)) == ["bench_gpu.json", "session.log"]


# --- gpu_summary.py ---------------------------------------------------------------------------------------------------

RUN = {
    "mode": "full GPU run",
    "device": "NVIDIA H200",
    "torch": "2.13.0+cu130",
    "cuda": "13.0",
    "best_val_nats_per_char": 1.4123,
    "best_step": 300,
    "ms_per_step": 21.25,
    "tokens_per_s": 771_000.0,
    "mfu": 0.213,
    "equal_context_nats_per_char": None,
}
BENCH_RESULTS = {
    "smoke": False,
    "device": "NVIDIA H200",
    "best_val_nats_per_char": 1.4051,
    "best_step": 250,
    "ms_per_step": 18.5,
    "tokens_per_s": 885_000.0,
    "mfu": None,
    "sweep": [
        {"batch_size": 64, "ms_per_step": 18.0, "tokens_per_s": 910_000.0, "mfu": 0.25},
        {"batch_size": 256, "error": "OutOfMemoryError: planted"},
    ],
    "sweep_not_run": [128],
}
LADDER = {
    "device": "NVIDIA H200",
    "complete": True,
    "not_run": ["wider"],
    "rows": [{"rung": "baseline", "best": 1.41}, {"rung": "EMA", "best": 1.39}],
}


def _write(folder: Path, **files) -> Path:
    folder.mkdir(exist_ok=True)
    for name, value in files.items():
        (folder / name).write_text(value if isinstance(value, str) else json.dumps(value))
    return folder


def test_summary_has_a_line_per_figure_from_both_files(tmp_path):
    out = _write(tmp_path / "out", **{"ch7_run.json": RUN, "bench_gpu.json": BENCH_RESULTS, "ch7_ladder.json": LADDER})
    assert gpu_summary.summary_lines(out) == [
        "best val nats/char: notebook 1.412 at step 300 | bench_gpu 1.405 at step 250",
        "ms/step: notebook 21.25 | bench_gpu 18.50 | sweep by batch 64: 18.00, 256: failed",
        "tokens/s: notebook 771,000 | bench_gpu 885,000 | sweep by batch 64: 910,000, 256: failed",
        "MFU: notebook 21.3% | bench_gpu not reported | sweep by batch 64: 25.0%, 256: failed",
        "ladder: 2 rung(s) run, complete | best 1.390 nats/char (EMA) | not run: wider",
    ]


def test_summary_says_missing_for_what_did_not_come_back(tmp_path):
    run = {k: v for k, v in RUN.items() if k != "ms_per_step"}  # a figure the file lacks
    out = _write(tmp_path / "out", **{"ch7_run.json": {**run, "mode": "smoke"}, "ch7_ladder.json": '{"rows": ['})
    lines = gpu_summary.summary_lines(out)
    assert lines[0] == "best val nats/char: notebook (smoke) 1.412 at step 300 | bench_gpu missing"
    assert lines[1] == "ms/step: notebook (smoke) missing | bench_gpu missing"
    assert lines[3] == "MFU: notebook (smoke) 21.3% | bench_gpu missing"
    assert lines[4] == "ladder: unreadable (JSONDecodeError)"
    empty = gpu_summary.summary_lines(_write(tmp_path / "empty"))
    assert len(empty) == 5 and all(line.endswith(": notebook missing | bench_gpu missing") for line in empty[:4])
    assert empty[4] == "ladder: missing"


def test_limits_on_what_comes_back(tmp_path):
    out = _write(tmp_path / "out", **{f"f{i}.json": "{}" for i in range(8)})
    (out / "a" / "b").mkdir(parents=True)
    (out / "a" / "b" / "two-deep.txt").write_text("ok")
    assert gpu_summary.limit_problems(out) == [
        "9 files (at most 8): " + ", ".join(["a/b/two-deep.txt"] + [f"f{i}.json" for i in range(8)])
    ]
    (out / "f0.json").unlink()
    assert gpu_summary.limit_problems(out) == []
    (out / "a" / "b" / "c").mkdir()
    (out / "a" / "b" / "two-deep.txt").rename(out / "a" / "b" / "c" / "three-deep.txt")
    assert gpu_summary.limit_problems(out) == ["a/b/c/three-deep.txt: 3 folders deep (at most 2)"]
    (out / "a" / "b" / "c" / "three-deep.txt").unlink()
    with open(out / "big.log", "wb") as f:
        f.truncate(16 * 2**20)  # sparse: 16 MiB on paper, nothing on disk
    assert gpu_summary.limit_problems(out) == ["big.log: 16.0 MiB (under 16 MiB allowed)"]
    done = run_python(str(BENCH / "gpu_summary.py"), str(out))
    assert done.returncode == 1 and "LIMIT: big.log" in done.stdout and "best val nats/char:" in done.stdout


# --- bench_gpu.py --smoke --json -------------------------------------------------------------------------------------


@pytest.mark.slow  # bench_gpu.py trains for 40 steps and a sweep
def test_bench_gpu_smoke_writes_the_main_run_and_the_sweep_to_json(tmp_path, corpus_path):
    path = tmp_path / "results" / "bench_gpu.json"
    env = {**os.environ, "LLAMA_NB_TINYSHAKESPEARE": str(corpus_path), "OMP_NUM_THREADS": "1"}
    done = run_python(str(BENCH / "bench_gpu.py"), "--smoke", "--json", str(path), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(path.read_text())
    assert results["smoke"] is True and results["device"] == "CPU" and results["steps"] == 40
    assert results["ms_per_step"] > 0 and results["tokens_per_s"] > 0 and results["mfu"] is None
    assert 0 < results["best_val_nats_per_char"] < 10 and results["timed_steps"] == 30
    assert [row["batch_size"] for row in results["sweep"]] == [4, 8] and results["sweep_not_run"] == []
    for row in results["sweep"]:
        assert row["seq_len"] == 32 and row["tokens_per_step"] == 32 * row["batch_size"]
        assert row["ms_per_step"] > 0 and row["timed_steps"] == 5 and row["peak_mem_gib"] is None
        assert row["tokens_per_s"] == pytest.approx(row["tokens_per_step"] / (row["ms_per_step"] / 1e3))
    assert os.listdir(path.parent) == ["bench_gpu.json"]  # written through a temporary file, none left


def test_bench_gpu_sweep_option():
    import bench_gpu

    assert bench_gpu.parse_sweep("64,128,256") == [64, 128, 256]
    assert bench_gpu.parse_sweep("") == [] and bench_gpu.parse_sweep("none") == []
    with pytest.raises(ValueError):
        bench_gpu.parse_sweep("64,0")
    # --deadline: a row starts when the slowest so far fits (before the first, a guess), else it is listed as not run
    assert bench_gpu.row_fits(61, 0.0, 60) and not bench_gpu.row_fits(59, 0.0, 60)
    assert bench_gpu.row_fits(41, 40.0, 60) and not bench_gpu.row_fits(39, 40.0, 60)
