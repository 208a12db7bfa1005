"""What every benchmark records about the machine, and the rule that refuses a figure measured on a busy one.

A benchmark figure is a ratio against a reference measured in the same run (so it carries over between machines
better than seconds do), but even a ratio is wrong when another program takes CPU time in the middle of it. So
every timed section runs inside `CpuMeter`, which records the process's CPU time and the wall time, and the
**CPU share** = CPU seconds / wall seconds that this process got.

The rule (`busy_reason`): a section's figure is refused when its CPU share is below `MIN_SHARE` x threads.
Why that works and why 0.8: PyTorch's OpenMP worker threads spin while they wait for the next operation, so on an
otherwise idle machine every thread keeps its core busy: each timed section here, even one-token decoding whose
operations are too small to split, measured 1.95-1.99 CPU seconds per second with 2 threads on 2 cores. When
another CPU-bound program runs, the kernel shares the cores among all runnable threads and the share falls: to
between 0.56 and 1.45 of 2 in the sections measured here while other jobs ran on the same 2 cores. 0.8 x threads
= 1.6 of 2 tolerates light background work (an editor, a terminal) and refuses a figure when other jobs took a
substantial part of a core. The load average is recorded too, but it is no test: it lags by a minute and counts
this benchmark's own threads.

The scripts' shared parts live here too: their `--threads` and `--json PATH` options, the atomic writer of the
results file, and `alternating_medians`, which times callables with torch.utils.benchmark.Timer in alternating
rounds.
"""

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llama_nb.core import write_atomic  # Chapter 0.1: written whole or not at all

MIN_SHARE = 0.8  # a figure needs a CPU share >= MIN_SHARE * threads
DEFAULT_THREADS = 2  # the book's reference: a 2-core laptop-class CPU
RERUN = "close other programs, wait until the load average is below 0.5 (`uptime`) and rerun `make bench`"


def cpu_time() -> float:
    "CPU seconds (user + system) used so far by this process, all its threads together."
    t = os.times()
    return t.user + t.system


def load_average() -> list[float]:
    "The 1, 5 and 15 minute load averages (the number of runnable processes), or [] where the OS has none."
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # Windows
        return []


def busy_reason(
    cpu_share: float, threads: int, load: list[float] | None = None, min_share: float = MIN_SHARE
) -> str | None:
    """None when `cpu_share` (CPU seconds per wall second over a timed section run on `threads` threads) shows that
    the process had its threads' cores to itself; otherwise why the figure is refused and how to rerun."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads!r}.")
    if cpu_share >= min_share * threads:
        return None
    load_text = f"load average {', '.join(f'{x:.2f}' for x in load)}" if load else "load average unknown"
    return (
        f"machine busy: this process got {cpu_share:.2f} CPU seconds per second on {threads} threads (a figure "
        f"needs >= {min_share * threads:.2f}; {load_text}), so other programs took CPU time during the "
        f"measurement: {RERUN}"
    )


@dataclass
class CpuMeter:
    """`with CpuMeter(threads) as m:` times the block: m.wall_s, m.cpu_s, m.cpu_share, the load average before and
    after, and m.busy (None or the reason the figure measured in the block is refused)."""

    threads: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    load_before: list[float] = field(default_factory=list)
    load_after: list[float] = field(default_factory=list)

    def __enter__(self) -> "CpuMeter":
        self.load_before = load_average()
        self._cpu0, self._t0 = cpu_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self._t0
        self.cpu_s = cpu_time() - self._cpu0
        self.load_after = load_average()

    def share_so_far(self) -> float:
        "The CPU share since the block began, asked from inside it (e.g. to give up early on a busy machine)."
        wall = time.perf_counter() - self._t0
        return (cpu_time() - self._cpu0) / wall if wall > 0 else 0.0

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def busy(self) -> str | None:
        return busy_reason(self.cpu_share, self.threads, self.load_after or self.load_before)

    def record(self) -> dict:
        "What a figure stores about the section that measured it."
        return {
            "threads": self.threads,
            "wall_s": round(self.wall_s, 2),
            "cpu_share": round(self.cpu_share, 2),
            "load_before": self.load_before,
            "load_after": self.load_after,
            "refused": self.busy,
        }


def figure(name: str, value: float, unit: str, meters: list[CpuMeter], **details) -> dict:
    """One reported figure (a ratio or difference against a reference measured in the same run), with the CPU record
    of the section(s) that measured it. It is refused, its value withheld as `discarded_value`, if any of them was
    busy (the section with the lowest CPU share is recorded). `value` None: not measured (only with a refusal)."""
    worst = min(meters, key=lambda m: m.cpu_share / m.threads)
    record = worst.record()
    clash = sorted(set(details) & {"name", "value", "unit", "discarded_value", *record})
    if clash:
        raise ValueError(f"figure(): details may not replace the keys {clash}; name them differently.")
    refused = record["refused"]
    return {
        "name": name,
        "value": None if refused else value,
        "unit": unit,
        **record,
        **({"discarded_value": value} if refused else {}),
        **details,
    }


def check_threads(threads: int) -> int:
    "`threads` if the process may use that many CPUs; a clear error otherwise (the share rule would always refuse)."
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--threads must be an int >= 1, got {threads!r}.")
    if threads > available:
        raise ValueError(
            f"--threads {threads} asks for more threads than the {available} CPUs this process may use: "
            f"use --threads {available} or fewer."
        )
    return threads


def add_cpu_benchmark_args(parser: argparse.ArgumentParser) -> None:
    "The two options run_all.py passes to every CPU benchmark: --threads and --json PATH."
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help=f"torch.set_num_threads (default: {DEFAULT_THREADS})"
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the results to PATH, one JSON object (atomically)"
    )


def write_json(path: Path, results: dict) -> None:
    "A benchmark's results, one JSON object, written atomically to `path` (what `--json PATH` asks for)."
    write_atomic(path, json.dumps(results, indent=1) + "\n")


def alternating_medians(calls: dict[str, Callable[[], object]], rounds: int) -> tuple[dict[str, float], dict]:
    """Median seconds per call of each of `calls`, timed by torch.utils.benchmark.Timer in `rounds` rounds that
    call them in turn, so that load from other programs hits all alike; and the result of each one's last call.

    In each round, each call runs once untimed (Timer's block-size estimate, which also warms it up) and once timed
    (`blocked_autorange(min_run_time=0)`), on torch's current thread count (Timer's default would be 1 thread)."""
    import torch
    from torch.utils.benchmark import Measurement, Timer

    results: dict = {}
    timers = {
        name: Timer(
            "results[name] = call()",
            globals={"call": call, "results": results, "name": name},
            num_threads=torch.get_num_threads(),
            label=name,
        )
        for name, call in calls.items()
    }
    measured: dict[str, list] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, timer in timers.items():
            measured[name].append(timer.blocked_autorange(min_run_time=0))
    return {name: Measurement.merge(ms)[0].median for name, ms in measured.items()}, results


def parse_cpu_benchmark_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, int]:
    "Parse `argv`, check --threads (a usage error saying what to pass) and set torch's thread count to it."
    import torch  # only the benchmarks need it, not run_all.py

    args = parser.parse_args(argv)
    try:
        threads = check_threads(args.threads)
    except ValueError as e:
        parser.error(str(e))
    torch.set_num_threads(threads)
    return args, threads


def cpu_model() -> str:
    "The CPU's marketing name, where the OS tells it."
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            return (
                subprocess.run(
                    ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
                ).stdout.strip()
                or platform.processor()
            )
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or "unknown"


def git_commit(repo: Path) -> str:
    "The checked-out commit (short hash, '+dirty' when the tree has changes), or 'unknown'."
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(repo), *a], capture_output=True, text=True, timeout=10)
        head = run("rev-parse", "--short", "HEAD").stdout.strip()
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return (head + ("+dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info(threads: int) -> dict:
    "Where a set of figures was measured: enough for a reader to tell their machine from ours."
    import torch

    try:
        import transformers

        hf_version = transformers.__version__
    except ImportError:
        hf_version = "not installed"
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": hf_version,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "commit": git_commit(Path(__file__).resolve().parents[1]),
    }
