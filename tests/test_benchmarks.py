"""Fast tests of the benchmarks' own logic (benchmarks/): the busy-machine rule, the alternating timer, the results
file, the runner's plan and how it reads each script's results (`--json PATH`), and the quality benchmark's anchor
(nanoGPT's CPU recipe on transformers' GPT-2). The benchmarks themselves are not tests; `make bench` runs them."""

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import run_python
from torch.testing import assert_close

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import run_all  # noqa: E402
from gpt2_baseline import NANOGPT_CPU, CharGPT2, char_data, nanogpt_optimizer, train_baseline  # noqa: E402
from machine import CpuMeter, alternating_medians, busy_reason, check_threads, figure  # noqa: E402

# --- the busy-machine rule ----------------------------------------------------------------------------------------


def test_busy_rule_accepts_a_process_that_had_its_cores():
    assert busy_reason(1.97, 2) is None
    assert busy_reason(1.6, 2) is None  # exactly 0.8 x threads
    assert busy_reason(3.3, 4) is None


def test_busy_rule_refuses_and_says_why_and_how_to_rerun():
    reason = busy_reason(1.3, 2, [1.52, 1.1, 0.7])
    assert reason is not None
    assert "1.30" in reason and "2 threads" in reason and "1.52" in reason  # the share and the load average
    assert "make bench" in reason  # how to rerun
    assert busy_reason(3.0, 4) is not None  # the threshold scales with the threads
    with pytest.raises(ValueError, match="threads"):
        busy_reason(1.0, 0)


def test_cpu_meter_measures_cpu_time_not_wall_time():
    with CpuMeter(threads=1) as m:
        time.sleep(0.3)  # a sleeping process uses (almost) no CPU: as if other programs had the core
    assert m.wall_s >= 0.3
    assert m.cpu_share < 0.3
    assert m.busy is not None and m.record()["refused"] == m.busy
    with CpuMeter(threads=1) as m:
        time.sleep(0.1)
        assert m.share_so_far() < 0.5  # the same measurement, asked from inside the block


def test_check_threads_rejects_more_threads_than_cpus():
    assert check_threads(1) == 1
    with pytest.raises(ValueError, match="more threads than"):
        check_threads(100_000)
    with pytest.raises(ValueError, match=">= 1"):
        check_threads(0)


def test_alternating_medians_times_each_call_once_per_round_in_turn_on_the_current_threads():
    calls, threads = [], torch.get_num_threads()

    def call(name: str, seconds: float):
        def run():
            calls.append((name, torch.get_num_threads()))
            time.sleep(seconds)
            return name.upper()

        return run

    try:
        torch.set_num_threads(2)  # not Timer's default of 1
        medians, results = alternating_medians({"a": call("a", 0.002), "b": call("b", 0.02)}, rounds=3)
    finally:
        torch.set_num_threads(threads)
    assert [name for name, _ in calls] == ["a", "a", "b", "b"] * 3  # each round: once untimed, once timed
    assert {n for _, n in calls} == {2}
    assert results == {"a": "A", "b": "B"}  # each call's last result
    assert 0.002 <= medians["a"] < 0.02 <= medians["b"] < 0.2


def _meter(share: float, threads: int = 2) -> CpuMeter:
    m = CpuMeter(threads)
    m.wall_s, m.cpu_s = 10.0, 10.0 * share
    return m


def test_figure_withholds_the_value_when_any_section_was_busy():
    ok = figure("f", 1.5, "x", [_meter(1.95), _meter(1.9)], ours=3, reference=2)
    assert ok["value"] == 1.5 and ok["refused"] is None and "discarded_value" not in ok
    busy = figure("f", 1.5, "x", [_meter(1.95), _meter(1.2)], ours=3, reference=2)
    assert busy["value"] is None and busy["discarded_value"] == 1.5
    assert busy["cpu_share"] == 1.2 and "1.20" in busy["refused"]  # the worst section is the one recorded
    with pytest.raises(ValueError, match="cpu_share"):
        figure("f", 1.5, "x", [_meter(1.95)], cpu_share=2.0)  # details may not hide the record


# --- the runner: plan, results read from --json PATH, results file --------------------------------------------------


def test_plan_includes_optional_benchmarks_only_when_they_can_run(tmp_path):
    for script in ("bench_quality.py", "bench_model.py", "bench_gpu.py"):
        (tmp_path / script).write_text("")
    plan = {b.name: skip for b, skip in run_all.plan(cuda=False, folder=tmp_path)}
    assert plan["quality"] is None and plan["model"] is None
    assert "does not exist" in plan["smollm2"]
    assert "GPU" in plan["gpu"]
    assert {b.name: skip for b, skip in run_all.plan(cuda=True, folder=tmp_path)}["gpu"] is None
    assert [b.name for b, _ in run_all.plan(only=["model"], folder=tmp_path)] == ["model"]
    with pytest.raises(ValueError, match="unknown benchmark"):
        run_all.plan(only=["modle"], folder=tmp_path)


FAKE_HEAD = "import json, sys\npath = sys.argv[sys.argv.index('--json') + 1]\nprint('argv', sys.argv[1:])\n"


def _run_fake(tmp_path, body: str, **kwargs) -> dict:
    "run_all.run_benchmark on a fake benchmark script: FAKE_HEAD (`path`: where --json asks for the results), `body`."
    (tmp_path / "fake.py").write_text(FAKE_HEAD + body)
    return run_all.run_benchmark(
        run_all.Benchmark("fake", "fake.py", "a fake", 0.1, **kwargs), threads=1, quick=False, folder=tmp_path
    )


def test_runner_reads_the_results_from_the_path_it_passes_with_json(tmp_path, capsys):
    figures = [{"name": "speed", "value": 1.5, "unit": "x", "refused": None}]
    r = _run_fake(
        tmp_path,
        f"json.dump({{'benchmark': 'fake', 'figures': {figures!r}}}, open(path, 'w'))\n"
        "print('{\"figures\": []}')  # stdout is only echoed, never parsed\n",
    )
    assert r["status"] == "ok" and r["figures"] == figures and r["raw"]["benchmark"] == "fake"
    out = capsys.readouterr().out
    assert "--json" in out and "--threads', '1'" in out and '{"figures": []}' in out  # every line echoed
    path = Path(out.split("--json', '")[1].split("'")[0])
    assert path.name == "fake.json" and not path.parent.exists()  # a temporary folder, removed afterwards
    r = _run_fake(
        tmp_path, "json.dump({'mfu': 0.25}, open(path, 'w'))\n", figure_keys=(("mfu", "of peak"),), takes_threads=False
    )
    assert r["status"] == "ok" and [f["value"] for f in r["figures"]] == [0.25]


def test_runner_says_so_when_a_script_exits_0_without_writing_its_results(tmp_path):
    r = _run_fake(tmp_path, "print(json.dumps({'figures': []}))\n")  # the old stdout convention: not read any more
    assert r["status"] == "failed" and r["figures"] == []
    assert "exited with status 0 but wrote no results to --json" in r["reason"]
    assert r["output_tail"][-1] == '{"figures": []}'  # kept for the report
    r = _run_fake(tmp_path, "open(path, 'w').write('[1, 2]')\n")
    assert r["status"] == "failed" and "holds a JSON list, not an object" in r["reason"]
    r = _run_fake(tmp_path, "open(path, 'w').write('{\"figures\": [')\n")
    assert r["status"] == "failed" and "unreadable (JSONDecodeError" in r["reason"]
    r = _run_fake(tmp_path, "json.dump({'figures': []}, open(path, 'w'))\nsys.exit(4)\n")
    assert r["status"] == "failed" and r["reason"] == "exit status 4"  # results from a failed run are not used


def test_figures_of_a_script_without_a_figures_list_are_the_named_keys_unchecked():
    raw = {"device": "H200", "mfu": 0.31, "tokens_per_s": 2.5e6, "best_val_nats_per_char": None, "steps": 9}
    figs = run_all.figures_of(raw, (("mfu", "of peak"), ("tokens_per_s", "tokens/s"), ("best_val_nats_per_char", "")))
    assert [(f["name"], f["value"], f["unit"]) for f in figs] == [
        ("mfu", 0.31, "of peak"),
        ("tokens_per_s", 2.5e6, "tokens/s"),
    ]
    assert all(run_all.figure_status(f) == "not checked" for f in figs)
    assert run_all.figures_of({"figures": [{"name": "a"}], "mfu": 0.3}, (("mfu", ""),)) == [{"name": "a"}]


def _results() -> dict:
    machine = {
        "date_utc": "2030-01-01 00:00",
        "commit": "abc1234",
        "cpu": "Test CPU 9000",
        "logical_cpus": 2,
        "threads": 2,
        "os": "Linux 6.0",
        "arch": "x86_64",
        "python": "3.11",
        "torch": "2.13.0",
        "transformers": "5.0",
        "cuda": None,
    }
    good = figure("training step", 1.234, "x", [_meter(1.97)], measure="tokens/s", ours=12000, reference=9725)
    quality = figure("quality", -0.3456, "nats/char", [_meter(1.9)], signed=True, ours=1.55, reference=1.8956)
    bad = figure("decoding", 7.777, "x", [_meter(1.1)], measure="tokens/s", ours=98765, reference=12699)
    return {
        "machine": machine,
        "quick": False,
        "wall_s": 400.0,
        "load_before": [0.1, 0.2, 0.3],
        "load_after": [1.9, 1.0, 0.5],
        "benchmarks": {
            "model": {"status": "ok", "wall_s": 60.0, "figures": [good, bad]},
            "quality": {"status": "ok", "wall_s": 180.0, "figures": [quality]},
            "smollm2": {"status": "skipped", "reason": "benchmarks/bench_smollm2.py does not exist yet", "figures": []},
            "gpu": {"status": "failed", "reason": "exit status 1", "output_tail": ["Traceback: boom"], "figures": []},
        },
    }


def test_markdown_table_reports_figures_and_never_a_refused_value():
    md = run_all.render_markdown(_results())
    assert "Test CPU 9000" in md and "abc1234" in md and "2.13.0" in md and "1.90, 1.00, 0.50" in md
    rows = [line for line in md.splitlines() if line.startswith("| model |")]
    assert len(rows) == 2
    assert "1.23×" in rows[0] and "12,000 tokens/s" in rows[0] and "| ok |" in rows[0]
    assert "refused" in rows[1] and "7.78" not in md and "98,765" not in md  # a busy figure shows no number
    assert "machine busy" in md and "make bench" in md  # the refusal in full, with how to rerun
    assert "skipped: benchmarks/bench_smollm2.py does not exist yet" in md
    assert "gpu failed" in md and "Traceback: boom" in md
    assert "| -0.346 nats/char |" in md  # a difference keeps its sign


def test_exit_status_and_atomic_write(tmp_path):
    results = _results()
    assert run_all.exit_status(results) == 1  # a failure wins
    del results["benchmarks"]["gpu"]
    assert run_all.exit_status(results) == 3  # a refused figure
    results["benchmarks"]["model"]["figures"].pop()
    assert run_all.exit_status(results) == 0
    path = tmp_path / "out" / "latest.json"
    run_all.write_atomic(path, json.dumps(results))
    assert json.loads(path.read_text()) == results
    assert [p.name for p in path.parent.iterdir()] == ["latest.json"]  # no temporary file left behind


# --- the quality benchmark's anchor: nanoGPT's CPU recipe on transformers' GPT-2 ----------------------------------


def test_recipe_is_nanogpts_cpu_baby_gpt():
    # nanoGPT's README: train_shakespeare_char.py with --block_size=64 --batch_size=12 --n_layer=4 --n_head=4
    # --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0; the config file's lr 1e-3, min_lr 1e-4,
    # warmup 100, beta2 0.99; train.py's weight decay 0.1, clipping 1.0, beta1 0.9, seed 1337.
    spec = dict(
        n_layer=4,
        n_head=4,
        n_embd=128,
        block_size=64,
        batch_size=12,
        max_iters=2000,
        lr=1e-3,
        min_lr=1e-4,
        warmup_iters=100,
        beta1=0.9,
        beta2=0.99,
        weight_decay=0.1,
        grad_clip=1.0,
        dropout=0.0,
        seed=1337,
    )
    assert {k: getattr(NANOGPT_CPU, k) for k in spec} == spec


@pytest.fixture(scope="module")
def small_chars(corpus_text):
    return char_data(corpus_text[:30_000])


def test_char_data_is_nanogpts_character_vocabulary_and_split(corpus_text):
    data = char_data(corpus_text)
    assert len(data.chars) == 65 and data.chars == "".join(sorted(set(corpus_text)))
    assert (len(data.train_ids), len(data.val_ids)) == (1_003_854, 111_540)
    assert "".join(data.chars[i] for i in data.val_ids[:20].tolist()) == corpus_text[1_003_854:1_003_874]


def test_gpt2_model_and_optimizer_follow_the_recipe(small_chars):
    torch.manual_seed(0)
    model = CharGPT2(len(small_chars.chars))
    cfg = model.gpt.config
    V = len(small_chars.chars)  # 58 in this slice, 65 in the whole corpus
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.n_positions, cfg.vocab_size) == (4, 4, 128, 64, V)
    assert cfg.activation_function == "gelu" and cfg.resid_pdrop == cfg.embd_pdrop == cfg.attn_pdrop == 0.0
    assert model.gpt.lm_head.weight is model.gpt.transformer.wte.weight  # tied, as nanoGPT
    opt = nanogpt_optimizer(model)
    decayed, not_decayed = ({id(p) for p in g["params"]} for g in opt.param_groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.defaults["betas"] == (0.9, 0.99) and opt.defaults["lr"] == 1e-3
    t = model.gpt.transformer
    assert id(t.wte.weight) in decayed and id(t.wpe.weight) in decayed  # nanoGPT decays both embeddings
    assert id(t.h[0].attn.c_attn.weight) in decayed
    assert id(t.h[0].attn.c_attn.bias) in not_decayed and id(t.ln_f.weight) in not_decayed
    assert len(decayed) + len(not_decayed) == len(list(model.parameters()))


def test_gpt2_wrapper_loss_is_transformers_own(small_chars):
    torch.manual_seed(0)
    model = CharGPT2(len(small_chars.chars)).eval()
    x = small_chars.train_ids[: 3 * 64].view(3, 64)
    _, ours = model(x[:, :-1], x[:, 1:])  # next-character targets
    reference = model.gpt(input_ids=x, labels=x).loss  # transformers shifts the labels itself
    assert_close(ours, reference)


def test_baseline_trains_and_scores_in_nats_per_character(small_chars):
    meter = CpuMeter(torch.get_num_threads())
    result = train_baseline(small_chars, max_iters=3, meter=meter)
    V = len(small_chars.chars)
    assert result.steps == 3 and result.vocab_size == V
    assert 0 < result.train_seconds <= meter.wall_s
    assert result.params == sum(p.numel() for p in CharGPT2(V).parameters())
    # Three steps from a near-uniform start: close to ln(V) nats per character (one token per character).
    assert math.isfinite(result.val_nats_per_char) and 3.0 < result.val_nats_per_char < math.log(V) + 0.3
    assert train_baseline(small_chars, max_iters=5, stop=lambda steps: steps == 2).steps == 2  # stopped early


# --- the GPU session's notebook runner ------------------------------------------------------------------------------


@pytest.mark.slow  # a runner process and its Jupyter kernel
def test_run_notebook_keeps_every_finished_cell_when_one_fails(tmp_path):
    "benchmarks/run_notebook.py writes the notebook after each cell: a failure (or a deadline) loses no finished cell."
    import nbformat

    new = nbformat.v4
    cells = [
        new.new_markdown_cell("# t"),
        new.new_code_cell("print(6 * 7)"),
        new.new_code_cell("raise RuntimeError('planted')"),
        new.new_code_cell("print('never')"),
    ]
    nb = new.new_notebook(cells=cells)
    nbformat.write(nb, tmp_path / "t.ipynb")
    out = tmp_path / "out"
    done = run_python(str(BENCH / "run_notebook.py"), str(tmp_path / "t.ipynb"), "--out", str(out), timeout=120)
    assert done.returncode == 1 and "cell 2 FAILED" in done.stdout and "42" in done.stdout  # echoed as it ran
    cells = nbformat.read(out / "t.ipynb", as_version=4).cells
    assert cells[1].outputs[0]["text"] == "42\n" and cells[1].execution_count == 1
    assert cells[2].outputs[0]["ename"] == "RuntimeError" and cells[3].outputs == []


@pytest.mark.slow  # a runner process and its Jupyter kernel, killed after 20 s
def test_run_notebook_stopped_by_a_deadline_keeps_the_cells_it_finished(tmp_path):
    import nbformat

    new = nbformat.v4
    cells = [new.new_code_cell("print(6 * 7)"), new.new_code_cell("import time\ntime.sleep(300)")]
    nbformat.write(new.new_notebook(cells=cells), tmp_path / "t.ipynb")
    with pytest.raises(subprocess.TimeoutExpired):  # the session's deadline kills the runner mid-cell
        run_python(str(BENCH / "run_notebook.py"), str(tmp_path / "t.ipynb"), "--out", str(tmp_path), timeout=20)
    assert nbformat.read(tmp_path / "t.ipynb", as_version=4).cells[0].outputs[0]["text"] == "42\n"


# --- the optimizer benchmark ----------------------------------------------------------------------------------------


def test_optimizer_benchmark_alternates_and_reports_muon_minus_adamw(tmp_path, corpus_file):
    import bench_optimizer

    out = tmp_path / "optimizer.json"
    argv = ["--preset", "tiny", "--data", str(corpus_file), "--budget", "0.5", "--rounds", "2", "--threads", "1"]
    assert bench_optimizer.main([*argv, "--json", str(out)]) == 0
    fig = json.loads(out.read_text())["figures"][0]
    runs = fig["runs"]
    assert len(runs["adamw"]) == len(runs["muon"]) == 2 and fig["signed"] is True
    assert fig["adamw"] == (runs["adamw"][0]["val_nats_per_char"] + runs["adamw"][1]["val_nats_per_char"]) / 2
    value = fig["value"] if fig["refused"] is None else fig["discarded_value"]  # a busy test machine withholds it
    assert value == round(fig["muon"] - fig["adamw"], 4)
    assert all(r["train_s"] >= 0.5 and r["steps"] >= 1 for rows in runs.values() for r in rows)  # the budget, in time
