"""GPU training in the real loop (Chapter 7): ms per step, tokens/s, MFU and the best validation loss.

    python benchmarks/bench_gpu.py                    # the `gpu` preset on the first CUDA GPU (a few minutes)
    python benchmarks/bench_gpu.py --max-steps 300    # shorter
    python benchmarks/bench_gpu.py --compile-mode reduce-overhead   # the compiled steps replayed as CUDA graphs
    python benchmarks/bench_gpu.py --smoke            # the `tiny` preset on the CPU: checks that the script runs

The run is `llama_nb.gpu.train_fast` itself, so the figures include everything the loop does between steps
(batches, the learning rate, logging); evaluations are excluded, and so are the first `--warmup-steps` steps, where
torch.compile compiles. MFU counts 6N + 12·L·T·d FLOPs per token (Chapter 7) against the GPU's dense bf16 peak.
The target for this book's model on an H100/H200: in-loop MFU >= 20 % of the bf16 peak, best val <= 1.40 nats/char
within 300 s of training.
"""

import argparse
import json
import sys
import time

import torch

from llama_nb.batches import prepare_data
from llama_nb.data import load_tinyshakespeare
from llama_nb.gpu import flops_per_token, loop_speed, mfu, peak_bf16_flops, preset_configs, train_fast
from llama_nb.loop import COMPILE_MODES
from llama_nb.model import count_parameters


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-steps", type=int, help="override the preset's max_steps")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, help="torch.compile's mode (reduce-overhead: CUDA graphs)")
    p.add_argument("--warmup-steps", type=int, default=100, help="steps excluded from the speed (compilation)")
    p.add_argument("--smoke", action="store_true", help="the tiny preset on the CPU (no figures worth reporting)")
    p.add_argument("--json", action="store_true", help="print one JSON line of results at the end")
    args = p.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU here. Run it on a machine with an NVIDIA GPU, or pass --smoke to check that the "
              "script runs on the CPU.", file=sys.stderr)
        return 2
    overrides = {"max_steps": args.max_steps} if args.max_steps else {}
    if args.compile_mode:
        overrides["compile_mode"] = args.compile_mode
    if args.smoke:
        config, tc = preset_configs("tiny", **{"max_steps": 40, "eval_interval": 20, "device": "cpu", **overrides})
        warmup = min(args.warmup_steps, 10)
    else:
        config, tc = preset_configs("gpu", **overrides)
        warmup = args.warmup_steps
    data = prepare_data(load_tinyshakespeare(), config.vocab_size)
    device_name = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.smoke else "CPU"
    print(f"device: {device_name} | torch {torch.__version__} | {count_parameters(config):,} parameters | "
          f"{tc.dtype}, compile={tc.compile} ({tc.compile_mode}) | batch {tc.batch_size} x {tc.seq_len}", flush=True)
    t0 = time.perf_counter()
    result = train_fast(config, tc, data, progress=False, log=lambda message: None)
    wall = time.perf_counter() - t0
    if (speed := loop_speed(result.history, skip_steps=warmup)) is None:
        print(f"bench_gpu: the run made {result.steps} steps, too few to time after {warmup} warmup steps: use "
              "--max-steps or --warmup-steps.", file=sys.stderr)
        return 1
    seconds_per_step, timed_steps = speed
    tokens_per_s = tc.tokens_per_step / seconds_per_step
    peak = peak_bf16_flops(device_name) if device_name != "CPU" else None
    row = {"device": device_name, "torch": torch.__version__, "compile_mode": tc.compile_mode, "steps": result.steps,
           "timed_steps": timed_steps,
           "ms_per_step": 1e3 * seconds_per_step, "tokens_per_s": tokens_per_s,
           "tflops": flops_per_token(config, tc.seq_len) * tokens_per_s / 1e12,
           "mfu": mfu(config, tc.seq_len, tokens_per_s, peak) if peak else None,
           "train_s": result.train_seconds, "wall_s": wall, "stopped_early": result.stopped_early,
           "best_val_nats_per_char": result.best["nats_per_char"], "best_step": result.best["step"],
           "final_val_nats_per_char": result.final["nats_per_char"]}
    print(f"in the loop: {row['ms_per_step']:.1f} ms/step over {timed_steps} steps after step {warmup} | "
          f"{tokens_per_s:,.0f} tokens/s | "
          f"{row['tflops']:.1f} TFLOP/s | MFU "
          + (f"{row['mfu']:.1%} of {peak / 1e12:.0f} TFLOP/s" if peak else "not reported (no peak for this device)"))
    print(f"{result.steps} steps, {result.train_seconds:.1f} s of training ({wall:.0f} s wall) | best val "
          f"{row['best_val_nats_per_char']:.3f} nats/char at step {row['best_step']} | final "
          f"{row['final_val_nats_per_char']:.3f}" + (" | stopped early" if result.stopped_early else ""))
    if args.json:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
