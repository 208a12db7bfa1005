"""GPU training in the real loop (Chapter 7): ms per step, tokens/s, MFU and the best validation loss, then a batch
sweep that shows how MFU grows with the work per step.

    python benchmarks/bench_gpu.py                    # the `gpu` preset on the first CUDA GPU, then the sweep
    python benchmarks/bench_gpu.py --max-steps 300    # shorter
    python benchmarks/bench_gpu.py --compile-mode reduce-overhead   # the compiled steps replayed as CUDA graphs
    python benchmarks/bench_gpu.py --sweep ''         # no sweep; --sweep 32,64 for other batch sizes
    python benchmarks/bench_gpu.py --json results.json   # everything, written atomically (also after each sweep row)
    python benchmarks/bench_gpu.py --smoke            # the `tiny` preset on the CPU: checks that the script runs

The main run is `llama_nb.gpu.train_fast` itself, so the figures include everything the loop does between steps
(batches, the learning rate, logging); evaluations are excluded, and so are the first `--warmup-steps` steps, where
torch.compile compiles. MFU counts 6N + 12·L·T·d FLOPs per token (Chapter 7) against the GPU's dense bf16 peak.
The target for this book's model on an H100/H200: in-loop MFU >= 20 % of the bf16 peak, best val <= 1.40 nats/char
within 300 s of training.

The sweep then times bare training steps (`llama_nb.optim.train_step` on batches from `get_batch`) of the same
model at several batch sizes (default 64, 128 and 256 sequences of the preset's 256 tokens): for each, a fresh
model compiled with static shapes in `--sweep-compile-mode` (default reduce-overhead: CUDA graphs), fused AdamW,
`--sweep-warmup` untimed steps and `--sweep-steps` timed ones (`llama_nb.gpu.time_steps`, which waits for the GPU),
and the peak GPU memory. Costs fixed per step (kernel launches, the optimizer) weigh less when a step holds more
sequences, so the rows show how far MFU grows with the work per step for this small model. With `--deadline` (a
Unix time, as benchmarks/gpu_session.sh passes) a sweep row starts only when the slowest row so far still fits; the
rows that do not are listed under `sweep_not_run`.

`--json PATH` writes one JSON object, atomically, after the main run and again after each sweep row: the main run's
figures at the top level (device, torch, compile_mode, ms_per_step, tokens_per_s, tflops, mfu,
best_val_nats_per_char, best_step, ...), "sweep" (a row per batch size: batch_size, seq_len, ms_per_step,
tokens_per_s, tflops, mfu, peak_mem_gib, or "error") and "sweep_not_run". benchmarks/run_all.py and
benchmarks/gpu_session.sh read that file.
"""

import argparse
import gc
import sys
import time
from pathlib import Path

import torch
from machine import write_json

from llama_nb.batches import get_batch, prepare_data
from llama_nb.config import COMPILE_MODES, preset_configs
from llama_nb.data import load_tinyshakespeare
from llama_nb.gpu import (
    enable_tf32,
    flops_per_token,
    loop_speed,
    mfu,
    peak_bf16_flops,
    resolve_dtype,
    time_steps,
    train_fast,
)
from llama_nb.model import Llama, count_parameters
from llama_nb.optim import configure_optimizer, train_step

GPU_SWEEP, SMOKE_SWEEP = "64,128,256", "4,8"
FIRST_ROW_GUESS_S = {"gpu": 60.0, "smoke": 5.0}  # a sweep row's time before one has run (compilation, steps)


def parse_sweep(text: str) -> list[int]:
    "Batch sizes from '64,128,256' ('' or 'none': no sweep). Raises ValueError for anything but positive integers."
    if text.strip().lower() in ("", "none"):
        return []
    sizes = [int(part) for part in text.split(",")]
    if any(b <= 0 for b in sizes):
        raise ValueError(f"batch sizes must be positive, got {text!r}")
    return sizes


def row_fits(seconds_left: float, slowest_s: float, first_guess_s: float) -> bool:
    "Whether a sweep row may start: the slowest row so far (before any, `first_guess_s`) fits in the time left."
    return seconds_left >= (slowest_s or first_guess_s)


def speed_figures(config, seq_len: int, seconds_per_step: float, tokens_per_step: int, peak: float | None) -> dict:
    tokens_per_s = tokens_per_step / seconds_per_step
    return {
        "ms_per_step": 1e3 * seconds_per_step,
        "tokens_per_s": tokens_per_s,
        "tflops": flops_per_token(config, seq_len) * tokens_per_s / 1e12,
        "mfu": mfu(config, seq_len, tokens_per_s, peak) if peak else None,
    }


def sweep_row(
    config,
    tc,
    train_ids: torch.Tensor,
    batch_size: int,
    *,
    device: torch.device,
    compile_mode: str | None,
    n_steps: int,
    n_warmup: int,
    peak: float | None,
) -> dict:
    """Time `n_steps` training steps of a fresh model at `batch_size` sequences of tc.seq_len tokens (after `n_warmup`
    untimed ones), compiled with static shapes in `compile_mode` (None: not compiled), with fused AdamW on CUDA."""
    cuda = device.type == "cuda"
    if cuda:
        torch._dynamo.reset()  # a fresh compilation per batch size, and no recompile limit carried over
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        enable_tf32()
    t0 = time.perf_counter()
    torch.manual_seed(tc.seed)
    model = Llama(config).to(device)
    model.train()
    step_model = torch.compile(model, mode=compile_mode, dynamic=False) if compile_mode else model
    optimizer = configure_optimizer(model, tc.lr, tc.weight_decay, (tc.beta1, tc.beta2), fused=True if cuda else None)
    amp_dtype = resolve_dtype(tc.dtype, device)
    generator = torch.Generator().manual_seed(tc.seed)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:  # as the loop does: CPU windows, pinned, copied async
        x, y = get_batch(train_ids, batch_size, tc.seq_len, generator)
        if cuda:
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x, y

    def step() -> None:
        train_step(step_model, optimizer, next_batch, tc.lr, 1, tc.grad_clip, amp_dtype=amp_dtype, read_back=False)

    # Not torch.utils.benchmark.Timer (which would also wait for the GPU): the book's own time_steps, the mean over
    # n_steps training steps that change the model; Timer's extra warm-up steps and median would change the figure.
    seconds_per_step = time_steps(step, n_steps, n_warmup, device)
    row = {
        "batch_size": batch_size,
        "seq_len": tc.seq_len,
        "tokens_per_step": batch_size * tc.seq_len,
        "compile_mode": compile_mode,
        "timed_steps": n_steps,
        "warmup_steps": n_warmup,
        **speed_figures(config, tc.seq_len, seconds_per_step, batch_size * tc.seq_len, peak),
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        "wall_s": time.perf_counter() - t0,
    }
    return row


def format_row(row: dict) -> str:
    if "error" in row:
        return f"batch {row['batch_size']:>4}: FAILED: {row['error']}"
    return (
        f"batch {row['batch_size']:>4} x {row['seq_len']}: {row['ms_per_step']:8.2f} ms/step | "
        f"{row['tokens_per_s']:>12,.0f} tokens/s | {row['tflops']:6.1f} TFLOP/s | MFU "
        + (f"{row['mfu']:5.1%}" if row["mfu"] is not None else "n/a")
        + (f" | peak {row['peak_mem_gib']:.1f} GiB" if row["peak_mem_gib"] is not None else "")
        + f" | {row['wall_s']:.0f} s with compilation"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-steps", type=int, help="override the preset's max_steps")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, help="torch.compile's mode (reduce-overhead: CUDA graphs)")
    p.add_argument("--warmup-steps", type=int, default=100, help="steps excluded from the speed (compilation)")
    p.add_argument("--smoke", action="store_true", help="the tiny preset on the CPU (no figures worth reporting)")
    p.add_argument(
        "--sweep",
        help=f"batch sizes to time after the main run, comma-separated (default {GPU_SWEEP}; "
        f"with --smoke {SMOKE_SWEEP}); '' skips the sweep",
    )
    p.add_argument("--sweep-steps", type=int, default=50, help="timed steps per sweep row (default 50)")
    p.add_argument("--sweep-warmup", type=int, default=10, help="untimed steps per sweep row first (default 10)")
    p.add_argument(
        "--sweep-compile-mode",
        choices=COMPILE_MODES,
        default="reduce-overhead",
        help="torch.compile's mode for the sweep on a GPU (default reduce-overhead)",
    )
    p.add_argument(
        "--deadline", type=float, help="Unix time by which to be done: sweep rows that would not fit are skipped"
    )
    p.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="write all results to PATH, one JSON object (atomically, after the main run and after each sweep row)",
    )
    args = p.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print(
            "bench_gpu: no CUDA GPU here. Run it on a machine with an NVIDIA GPU, or pass --smoke to check that the "
            "script runs on the CPU.",
            file=sys.stderr,
        )
        return 2
    try:
        batch_sizes = parse_sweep(args.sweep if args.sweep is not None else SMOKE_SWEEP if args.smoke else GPU_SWEEP)
    except ValueError as e:
        p.error(f"--sweep: {e}")
    overrides = {"max_steps": args.max_steps} if args.max_steps else {}
    if args.compile_mode:
        overrides["compile_mode"] = args.compile_mode
    if args.smoke:
        config, tc = preset_configs("tiny", **{"max_steps": 40, "eval_interval": 20, "device": "cpu", **overrides})
        warmup = min(args.warmup_steps, 10)
        sweep_steps, sweep_warmup = min(args.sweep_steps, 5), min(args.sweep_warmup, 2)
    else:
        config, tc = preset_configs("gpu", **overrides)
        warmup, sweep_steps, sweep_warmup = args.warmup_steps, args.sweep_steps, args.sweep_warmup
    json_path = args.json
    data = prepare_data(load_tinyshakespeare(), config.vocab_size)
    cuda = torch.cuda.is_available() and not args.smoke
    device_name = torch.cuda.get_device_name() if cuda else "CPU"
    print(
        f"device: {device_name} | torch {torch.__version__} | {count_parameters(config):,} parameters | "
        f"{tc.dtype}, compile={tc.compile} ({tc.compile_mode}) | batch {tc.batch_size} x {tc.seq_len}",
        flush=True,
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = train_fast(config, tc, data, progress=False, log=lambda message: None)
    wall = time.perf_counter() - t0
    peak = peak_bf16_flops(device_name) if cuda else None
    results = {
        "benchmark": "gpu",
        "smoke": args.smoke,
        "device": device_name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "parameters": count_parameters(config),
        "compile_mode": tc.compile_mode,
        "batch_size": tc.batch_size,
        "seq_len": tc.seq_len,
        "steps": result.steps,
        "peak_bf16_tflops": peak / 1e12 if peak else None,
    }
    status = 0
    if (speed := loop_speed(result.history, skip_steps=warmup)) is None:
        print(
            f"bench_gpu: the run made {result.steps} steps, too few to time after {warmup} warmup steps: use "
            "--max-steps or --warmup-steps.",
            file=sys.stderr,
        )
        results.update(
            timed_steps=0, ms_per_step=None, tokens_per_s=None, tflops=None, mfu=None, error="too few steps to time"
        )
        status = 1
    else:
        seconds_per_step, timed_steps = speed
        results.update(
            timed_steps=timed_steps, **speed_figures(config, tc.seq_len, seconds_per_step, tc.tokens_per_step, peak)
        )
        print(
            f"in the loop: {results['ms_per_step']:.1f} ms/step over {timed_steps} steps after step {warmup} | "
            f"{results['tokens_per_s']:,.0f} tokens/s | {results['tflops']:.1f} TFLOP/s | MFU "
            + (
                f"{results['mfu']:.1%} of {peak / 1e12:.0f} TFLOP/s"
                if peak
                else "not reported (no peak for this device)"
            ),
            flush=True,
        )
    results.update(
        peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        train_s=result.train_seconds,
        wall_s=wall,
        stopped_early=result.stopped_early,
        best_val_nats_per_char=result.best["nats_per_char"],
        best_step=result.best["step"],
        final_val_nats_per_char=result.final["nats_per_char"],
        sweep=[],
        sweep_not_run=[],
    )
    print(
        f"{result.steps} steps, {result.train_seconds:.1f} s of training ({wall:.0f} s wall) | best val "
        f"{results['best_val_nats_per_char']:.3f} nats/char at step {results['best_step']} | final "
        f"{results['final_val_nats_per_char']:.3f}" + (" | stopped early" if result.stopped_early else ""),
        flush=True,
    )
    del result
    if json_path:
        write_json(json_path, results)

    if batch_sizes:
        compile_mode = args.sweep_compile_mode if cuda and tc.compile else None
        print(
            f"sweep: batch sizes {batch_sizes} x {tc.seq_len} tokens, {sweep_steps} timed steps after "
            f"{sweep_warmup}, compile mode {compile_mode}",
            flush=True,
        )
    slowest = 0.0
    for batch_size in batch_sizes:
        if args.deadline is not None:
            left = args.deadline - time.time()
            if not row_fits(left, slowest, FIRST_ROW_GUESS_S["smoke" if args.smoke else "gpu"]):
                print(f"batch {batch_size:>4}: not run, {left:.0f} s left before the deadline", flush=True)
                results["sweep_not_run"].append(batch_size)
                continue
        t_row = time.perf_counter()
        try:
            row = sweep_row(
                config,
                tc,
                data.train_ids,
                batch_size,
                device=torch.device("cuda" if cuda else "cpu"),
                compile_mode=compile_mode,
                n_steps=sweep_steps,
                n_warmup=sweep_warmup,
                peak=peak,
            )
        except Exception as e:  # e.g. out of memory: keep the other rows
            row = {"batch_size": batch_size, "seq_len": tc.seq_len, "error": f"{type(e).__name__}: {e}"[:500]}
            status = 1
        slowest = max(slowest, time.perf_counter() - t_row)
        results["sweep"].append(row)
        print(format_row(row), flush=True)
        if json_path:
            write_json(json_path, results)
    if json_path:
        print(f"results written to {json_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
