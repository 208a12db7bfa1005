"""`make bench`: run every benchmark on this machine and write one results file, JSON and a Markdown table.

    python benchmarks/run_all.py                  # everything: about 6 minutes on 2 idle cores
    python benchmarks/run_all.py --only model     # some of them (names: see --help)
    python benchmarks/run_all.py --quick          # a short check that every script runs (not comparable figures)

Each benchmark is its own script, run in a fresh process with `--json PATH` (a temporary file per script): the JSON
object it writes there holds its figures; a script that exits 0 without writing it has failed. A figure is a ratio
(or, for quality, a difference) against a reference measured in the same run, with the CPU share of the section
that measured it; a figure measured while other programs took CPU time is refused (machine.py). Writes
benchmarks/results/latest.json and latest.md (quick runs: quick.json and quick.md), replacing the previous ones.
Exit status: 0 when every figure was reported, 1 when a benchmark failed, 3 when figures were refused.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from machine import DEFAULT_THREADS, RERUN, check_threads, load_average, machine_info, write_atomic

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str  # in benchmarks/
    what: str
    minutes: float  # expected on 2 idle cores
    quick_args: tuple[str, ...] = ()
    takes_threads: bool = True  # accepts --threads (any script also gets OMP_NUM_THREADS)
    needs_gpu: bool = False
    # For a script whose JSON has no "figures" list: (key, unit) of the top-level numbers to report.
    figure_keys: tuple[tuple[str, str], ...] = ()


# Every benchmark, in order. A script that does not exist yet is listed as skipped, so the table says what is missing.
BENCHMARKS = (
    Benchmark(
        "quality",
        "bench_quality.py",
        "Chapter 6: val nats/char in the time nanoGPT's CPU recipe takes",
        4.0,
        quick_args=("--baseline-iters", "100"),
    ),
    Benchmark(
        "model",
        "bench_model.py",
        "Chapter 5: training step and decoding vs transformers' Llama",
        0.5,
        quick_args=("--quick",),
    ),
    Benchmark(
        "smollm2", "bench_smollm2.py", "Chapter 8: SmolLM2-135M decoding vs transformers", 1.5, quick_args=("--quick",)
    ),
    Benchmark(
        "gpu",
        "bench_gpu.py",
        "Chapter 7: GPU training in the real loop",
        5.0,
        quick_args=("--max-steps", "300"),
        takes_threads=False,
        needs_gpu=True,
        figure_keys=(
            ("mfu", "of the bf16 peak"),
            ("tokens_per_s", "tokens/s"),
            ("best_val_nats_per_char", "nats/char"),
        ),
    ),
)
TIMEOUT_S = 1200  # per benchmark: a hung script must not hang `make bench`


def plan(
    benchmarks=BENCHMARKS, only: list[str] | None = None, cuda: bool = False, folder: Path = HERE
) -> list[tuple[Benchmark, str | None]]:
    "Each selected benchmark with None (run it) or why it is skipped."
    if only:
        unknown = sorted(set(only) - {b.name for b in benchmarks})
        if unknown:
            raise ValueError(f"unknown benchmark(s) {unknown}: choose from {', '.join(b.name for b in benchmarks)}.")
    out = []
    for b in benchmarks:
        if only and b.name not in only:
            continue
        if not (folder / b.script).is_file():
            out.append((b, f"benchmarks/{b.script} does not exist yet"))
        elif b.needs_gpu and not cuda:
            out.append((b, "no CUDA GPU on this machine"))
        else:
            out.append((b, None))
    return out


def read_results(path: Path) -> tuple[dict | None, str | None]:
    "(the JSON object a script wrote to `path` as asked by `--json PATH`, None), or (None, why there is none)."
    if not path.is_file():
        return None, f"it exited with status 0 but wrote no results to --json {path}"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"its results file --json {path} is unreadable ({type(e).__name__}: {e})"
    if not isinstance(value, dict):
        return None, f"its results file --json {path} holds a JSON {type(value).__name__}, not an object"
    return value, None


def figures_of(raw: dict, figure_keys: tuple[tuple[str, str], ...] = ()) -> list[dict]:
    """The figures of a script's JSON: its "figures" list (see machine.figure), or, for a script that has none, the
    top-level numbers named in `figure_keys`, marked as not checked for a busy machine (no CPU share)."""
    if isinstance(raw.get("figures"), list):
        return raw["figures"]
    return [
        {"name": key, "value": raw[key], "unit": unit, "refused": None, "unchecked": True}
        for key, unit in figure_keys
        if isinstance(raw.get(key), (int, float)) and not isinstance(raw.get(key), bool)
    ]


def run_benchmark(b: Benchmark, threads: int, quick: bool, folder: Path = HERE) -> dict:
    """Run one script (in `folder`) in a fresh process, echoing its output, with `--json` and a temporary path, and
    return its status, wall time and the figures read back from that file."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{b.name}-") as tmp:
        json_path = Path(tmp) / f"{b.name}.json"
        script = folder / b.script
        cmd = [
            sys.executable,
            "-u",
            str(script),
            "--json",
            str(json_path),
            *(("--threads", str(threads)) if b.takes_threads else ()),
            *(b.quick_args if quick else ()),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # torch's default thread count, for every script
        shown = script.relative_to(HERE.parent) if script.is_relative_to(HERE.parent) else script
        print(
            f"\n=== {b.name}: {b.what} (about {b.minutes:g} min on 2 cores)\n$ python {shown} {' '.join(cmd[3:])}",
            flush=True,
        )
        t0, lines = time.perf_counter(), []
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=HERE.parent
        )
        timer = threading.Timer(TIMEOUT_S, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                print(f"  {line}", end="", flush=True)
            rc = proc.wait()
        finally:
            timer.cancel()
        wall = round(time.perf_counter() - t0, 1)
        if rc != 0:
            why = f"timed out after {TIMEOUT_S} s" if rc == -9 else f"exit status {rc}"
            return {"status": "failed", "reason": why, "wall_s": wall, "output_tail": lines[-15:], "figures": []}
        raw, why = read_results(json_path)
    if raw is None:
        return {"status": "failed", "reason": why, "wall_s": wall, "output_tail": lines[-15:], "figures": []}
    return {"status": "ok", "wall_s": wall, "figures": figures_of(raw, b.figure_keys), "raw": raw}


def figure_status(fig: dict) -> str:
    if fig.get("refused"):
        return "refused"
    return "not checked" if fig.get("unchecked") else "ok"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _number(x) -> str:
    if isinstance(x, float):
        return f"{x:,.4f}".rstrip("0").rstrip(".") if abs(x) < 100 else f"{x:,.0f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _value(fig: dict) -> str:
    v = fig.get("value")
    if v is None:
        return "—"
    if fig.get("unit") == "x":
        return f"{v:.2f}×"
    number = f"{v:+.3f}" if fig.get("signed") else _number(v)  # a difference shows its sign
    return f"{number} {fig.get('unit', '')}".strip()


def _side(fig: dict, key: str) -> str:
    if fig.get("value") is None or fig.get(key) is None:
        return "—"
    label = fig.get(f"{key}_label")
    return f"{_number(fig[key])}{' ' + fig['measure'] if fig.get('measure') else ''}" + (f" ({label})" if label else "")


def _load(load: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in load) if load else "unknown"


def render_markdown(results: dict) -> str:
    "The results as Markdown: where they were measured, one row per figure, then every refusal and failure in full."
    m = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Measured by `make bench` ({'QUICK run: not comparable figures; ' if results['quick'] else ''}"
        f"`benchmarks/run_all.py`) on {m['date_utc']} UTC, commit {m['commit']}, in {results['wall_s']:.0f} s.",
        "Speed figures are ratios, ours ÷ the reference, both measured in this run (> 1: ours is faster). The "
        "quality figure is a difference in validation nats per character (< 0: ours is better).",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {_cell(m['cpu'])} ({m['logical_cpus']} logical CPUs) |",
        f"| threads | {m['threads']} |",
        f"| OS | {_cell(m['os'])} {m['arch']} |",
        f"| Python / torch / transformers | {m['python']} / {m['torch']} / {m['transformers']} |",
        f"| GPU | {_cell(m['cuda'] or 'none')} |",
        f"| load average (1, 5, 15 min) before / after | {_load(results['load_before'])} / "
        f"{_load(results['load_after'])} |",
        "",
        "| benchmark | figure | value | ours | reference | CPU share | status |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name, r in results["benchmarks"].items():
        if r["status"] != "ok":
            lines.append(f"| {name} | — | — | — | — | — | {r['status']}: {_cell(r['reason'])} |")
            if r["status"] == "failed":
                notes.append(
                    f"- **{name} failed** ({r['reason']}); its last output lines:\n\n```\n"
                    + "\n".join(r.get("output_tail", []))
                    + "\n```"
                )
            continue
        for fig in r["figures"]:
            share = fig.get("cpu_share")
            share_text = f"{share:.2f} of {fig.get('threads', m['threads'])}" if isinstance(share, float) else "—"
            status = figure_status(fig)
            lines.append(
                f"| {name} | {_cell(fig['name'])} | {_value(fig)} | {_cell(_side(fig, 'ours'))} | "
                f"{_cell(_side(fig, 'reference'))} | {share_text} | {status} |"
            )
            if status == "refused":
                notes.append(f"- **Refused**, {name} / {fig['name']}: {fig['refused']}")
            elif status == "not checked":
                notes.append(
                    f"- **Not checked**, {name} / {fig['name']}: the script reports no CPU share, so a "
                    "busy machine cannot be detected for this figure."
                )
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def exit_status(results: dict) -> int:
    runs = results["benchmarks"].values()
    if any(r["status"] == "failed" for r in runs):
        return 1
    return 3 if any(figure_status(f) == "refused" for r in runs for f in r["figures"]) else 0


def main(argv: list[str] | None = None) -> int:
    names = [b.name for b in BENCHMARKS]
    parser = argparse.ArgumentParser(prog="python benchmarks/run_all.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"torch threads for every benchmark (default: {DEFAULT_THREADS}, the book's setting)",
    )
    parser.add_argument("--only", help=f"comma-separated names among: {', '.join(names)}")
    parser.add_argument("--quick", action="store_true", help="short settings, to check that every script runs")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results", help="default: benchmarks/results")
    args = parser.parse_args(argv)
    try:
        threads = check_threads(args.threads)
        import torch

        selected = plan(only=args.only.split(",") if args.only else None, cuda=torch.cuda.is_available())
    except ValueError as e:
        parser.error(str(e))

    machine, load_before = machine_info(threads), load_average()
    minutes = sum(b.minutes for b, skip in selected if skip is None)
    print(
        f"make bench: {len([s for s in selected if s[1] is None])} benchmark(s), about {minutes:g} minutes on 2 "
        f"idle cores, {threads} threads. Load average now: {load_before}."
    )
    if load_before and load_before[0] > 0.5:
        print("  The machine is not idle: figures measured while other programs take CPU time will be refused.")
    t0 = time.perf_counter()
    runs = {}
    for b, skip in selected:
        runs[b.name] = (
            {"status": "skipped", "reason": skip, "figures": []} if skip else run_benchmark(b, threads, args.quick)
        )
    results = {
        "machine": machine,
        "quick": args.quick,
        "wall_s": round(time.perf_counter() - t0, 1),
        "load_before": load_before,
        "load_after": load_average(),
        "benchmarks": runs,
    }
    stem = "quick" if args.quick else "latest"
    md = render_markdown(results)
    write_atomic(args.out_dir / f"{stem}.json", json.dumps(results, indent=1) + "\n")
    write_atomic(args.out_dir / f"{stem}.md", md)
    print("\n" + md)
    status = exit_status(results)
    print(f"Wrote {args.out_dir / stem}.json and .md.", end=" ")
    if status == 3:
        print(f"Some figures were refused because the machine was busy: {RERUN}.")
    elif status == 1:
        print("A benchmark failed: see its output above.")
    else:
        print("Every figure was measured on an otherwise idle machine.")
    return status


if __name__ == "__main__":
    sys.exit(main())
