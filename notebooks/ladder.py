"""Chapter 7's experiment: a greedy ladder of measured changes to the `gpu` preset (section 7.1 explains it).

This is not library code: it is the chapter's experiment, kept beside the notebook so that the chapter imports it
and the tests can check its rules (tests/test_gpu.py) without training.
"""

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from llama_nb.batches import TokenizedData
from llama_nb.config import preset_configs
from llama_nb.core import check_number, write_atomic
from llama_nb.gpu import train_fast
from llama_nb.loop import TrainResult
from llama_nb.model import count_parameters


def climb_ladder(
    preset: str,
    rungs: dict[str, dict],
    data_for: Callable[[int], TokenizedData],
    *,
    base: dict | None = None,
    baseline: TrainResult | None = None,
    min_gain: float = 0.01,
    budget_s: float | None = None,
    out_dir: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    about: dict | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[dict], dict]:
    """A greedy ladder of measured changes. The first run is `preset` with the `base` overrides (or `baseline`, a
    result of that run already made); then each rung, in order, trains the recipe so far plus the rung's overrides,
    and the rung is kept when its best validation loss is at least `min_gain` nats/char below the best so far.
    `data_for(vocab_size)` gives the data. With `budget_s`, a rung starts only when the wall time of the slowest
    rung so far still fits in what is left of `budget_s` seconds; the rungs that do not fit are logged as not run.
    With `out_dir`, each rung trains into a folder there; only the best rung's is kept (its row's "checkpoint").
    With `json_path`, the rows (with histories), the rungs not run, the recipe and `about` are written there as
    JSON after every rung, atomically. Returns a row per run and the final recipe."""
    if budget_s is not None:
        check_number("budget_s", budget_s, 0, low_open=True, hint="seconds; None: no limit")
    recipe, best_so_far, rows, not_run = dict(base or {}), math.inf, [], []
    start, slowest, shapes, best_index, folders = time.perf_counter(), 0.0, None, None, {}

    def write(complete: bool) -> None:
        if json_path is not None:
            record = {
                **(about or {}),
                "preset": preset,
                "budget_s": budget_s,
                "min_gain": min_gain,
                "complete": complete,
                "recipe": recipe,
                "rows": rows,
                "not_run": not_run,
            }
            write_atomic(json_path, json.dumps(record, indent=1))

    for i, (name, change) in enumerate([("baseline", {})] + list(rungs.items())):
        used = time.perf_counter() - start
        if budget_s is not None and rows and used + slowest > budget_s:
            log(
                f"{name:<30} not run: {used:.0f} s of the ladder's {budget_s:.0f} s used, and a rung took up to "
                f"{slowest:.0f} s"
            )
            not_run.append(name)
            continue
        config, tc = preset_configs(preset, **{**recipe, **change})
        t0 = time.perf_counter()
        rung_dir = Path(out_dir) / f"rung_{i:02d}" if out_dir is not None else None
        if name == "baseline" and baseline is not None:
            result, rung_dir = baseline, None  # the caller's run: never removed here
        else:
            if tc.compile and shapes is not None and (config, tc.batch_size, tc.seq_len) != shapes:
                torch._dynamo.reset()  # new shapes: compile afresh, for static shapes (not a dynamic-shape graph)
            result = train_fast(
                config, tc, data_for(config.vocab_size), out_dir=rung_dir, progress=False, log=lambda message: None
            )
        shapes = config, tc.batch_size, tc.seq_len  # what a compiled step is specialised to
        wall = time.perf_counter() - t0  # data, compilation, evaluations and steps: what the budget pays for
        slowest = max(slowest, wall)
        best = result.best["nats_per_char"]
        kept = best <= best_so_far - min_gain
        if kept:
            recipe, best_so_far = {**recipe, **change}, best
        checkpoint = result.best.get("checkpoint") or result.checkpoint
        rows.append(
            {
                "rung": name,
                "change": change,
                "parameters": count_parameters(config),
                "best": best,
                "best_step": result.best["step"],
                "final": result.final["nats_per_char"],
                "steps": result.steps,
                "train_seconds": result.train_seconds,
                "wall_seconds": wall,
                "kept": kept,
                "checkpoint": str(checkpoint) if checkpoint else None,
                "history": result.history,
            }
        )
        folders[len(rows) - 1] = rung_dir  # only the best rung's folder is kept, to spare the disk
        drop = best_index if kept else len(rows) - 1  # a new best makes the previous best's weights useless
        best_index = len(rows) - 1 if kept else best_index
        if drop is not None and folders[drop] is not None:
            shutil.rmtree(folders[drop], ignore_errors=True)
            rows[drop]["checkpoint"] = None
        write(False)
        log(
            f"{name:<30} best {best:.3f} nats/char at step {result.best['step']:>4} | {result.steps:>4} steps in "
            f"{result.train_seconds:5.1f} s | {'kept' if kept else 'dropped'}"
        )
    write(True)
    return rows, recipe
