"""The end of a GPU session (benchmarks/gpu_session.sh): one line per figure read from the JSON files the session
wrote to OUT, and a check that OUT stays within what a GPU machine sends back.

    python benchmarks/gpu_summary.py OUT

The figures: best validation nats/char and its step, ms/step, tokens/s and MFU, each from Chapter 7's notebook
(OUT/ch7_run.json) and from bench_gpu.py (OUT/bench_gpu.json: its main run and its batch sweep), plus a line for
the notebook's ladder (OUT/ch7_ladder.json). A file that did not come back, or a figure it lacks, reads "missing";
a figure the file holds as null reads "not reported". The limits: at most MAX_FILES files in OUT, none more than
MAX_DEPTH folders below it, each under MAX_BYTES. Exit code 0 within the limits, 1 (and a line per problem) beyond."""

import argparse
import json
import math
import sys
from pathlib import Path

RUN_FILE, LADDER_FILE, BENCH_FILE = "ch7_run.json", "ch7_ladder.json", "bench_gpu.json"
MAX_FILES, MAX_DEPTH, MAX_BYTES = 8, 2, 16 * 2**20


def read_json(path: Path) -> tuple[dict | None, str | None]:
    "(the JSON object in `path`, None), or (None, why not): 'missing', or 'unreadable (...)'."
    if not path.is_file():
        return None, "missing"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"unreadable ({type(e).__name__})"
    if not isinstance(value, dict):
        return None, "unreadable (not a JSON object)"
    return value, None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _figure(source: dict | None, why: str | None, key: str, fmt) -> str:
    if source is None:
        return why
    if key not in source:
        return "missing"
    value = source[key]
    if value is None:
        return "not reported"
    return fmt(value) if _number(value) else f"invalid ({value!r})"


def _label(name: str, source: dict | None) -> str:
    "The source's name, marked when it ran in smoke mode (a CPU dry run: not figures to quote)."
    smoke = source is not None and (source.get("mode") == "smoke" or source.get("smoke") is True)
    return f"{name} (smoke)" if smoke else name


def _sweep(bench: dict | None, key: str, fmt) -> str:
    if bench is None:
        return ""
    rows = bench.get("sweep")
    if not isinstance(rows, list) or not rows:
        return " | sweep missing" if "sweep" not in bench or not isinstance(rows, list) else " | sweep none"
    parts = [
        f"{row.get('batch_size', '?')}: " + ("failed" if "error" in row else _figure(row, None, key, fmt))
        for row in rows
        if isinstance(row, dict)
    ]
    return " | sweep by batch " + ", ".join(parts)


def summary_lines(out: Path) -> list[str]:
    "One line per figure (best val, ms/step, tokens/s, MFU) and one for the ladder, from the JSON files in `out`."
    run, run_why = read_json(out / RUN_FILE)
    bench, bench_why = read_json(out / BENCH_FILE)
    ladder, ladder_why = read_json(out / LADDER_FILE)
    nb, bg = _label("notebook", run), _label("bench_gpu", bench)

    def best(source, why) -> str:
        value = _figure(source, why, "best_val_nats_per_char", lambda v: f"{v:.3f}")
        if source is not None and _number(source.get("best_val_nats_per_char")):
            value += " at step " + _figure(source, why, "best_step", lambda v: f"{v:.0f}")
        return value

    def figure(title: str, key: str, fmt) -> str:
        return f"{title}: {nb} {_figure(run, run_why, key, fmt)} | {bg} {_figure(bench, bench_why, key, fmt)}" + _sweep(
            bench, key, fmt
        )

    lines = [
        f"best val nats/char: {nb} {best(run, run_why)} | {bg} {best(bench, bench_why)}",
        figure("ms/step", "ms_per_step", lambda v: f"{v:.2f}"),
        figure("tokens/s", "tokens_per_s", lambda v: f"{v:,.0f}"),
        figure("MFU", "mfu", lambda v: f"{v:.1%}"),
    ]
    if ladder is None:
        lines.append(f"ladder: {ladder_why}")
    else:
        rows = [r for r in ladder.get("rows") or [] if isinstance(r, dict)]
        scored = [r for r in rows if _number(r.get("best"))]
        text = f"ladder: {len(rows)} rung(s) run, " + ("complete" if ladder.get("complete") is True else "NOT complete")
        if scored:
            top = min(scored, key=lambda r: r["best"])
            text += f" | best {top['best']:.3f} nats/char ({top.get('rung', '?')})"
        if ladder.get("not_run"):
            text += f" | not run: {', '.join(map(str, ladder['not_run']))}"
        lines.append(text)
    return lines


def limit_problems(
    out: Path, max_files: int = MAX_FILES, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES
) -> list[str]:
    """What in `out` breaks the limits: more than `max_files` files, a file more than `max_depth` folders below
    `out`, a file of `max_bytes` or more, or anything that is not a plain file or folder (a link)."""
    problems, files = [], []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            problems.append(f"{rel}: not a plain file or folder (it will not come back)")
        elif path.is_file():
            files.append(rel)
            if len(rel.parts) - 1 > max_depth:
                problems.append(f"{rel}: {len(rel.parts) - 1} folders deep (at most {max_depth})")
            if (size := path.stat().st_size) >= max_bytes:
                problems.append(f"{rel}: {size / 2**20:.1f} MiB (under {max_bytes / 2**20:.0f} MiB allowed)")
    if len(files) > max_files:
        problems.append(f"{len(files)} files (at most {max_files}): {', '.join(map(str, files))}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    args = p.parse_args(argv)
    print("== summary (from the JSON files in OUT)")
    for line in summary_lines(args.out):
        print(line)
    problems = limit_problems(args.out)
    files = sum(1 for f in args.out.rglob("*") if f.is_file())
    if problems:
        print(
            f"== OUT breaks the limits ({MAX_FILES} files, {MAX_DEPTH} folders deep, under "
            f"{MAX_BYTES // 2**20} MiB each): some of it may not come back"
        )
        for problem in problems:
            print(f"LIMIT: {problem}")
        return 1
    print(
        f"== OUT within the limits: {files} file(s), at most {MAX_FILES}, none deeper than {MAX_DEPTH} folders or "
        f"{MAX_BYTES // 2**20} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
