"""Quality benchmark (Chapter 6): train a baby Llama on TinyShakespeare for a fixed wall-clock budget on 2 CPU
threads, then print the validation loss in nats per character from the full validation pass.

    python benchmarks/bench_quality.py                        # the cpu preset, 190 s of training
    python benchmarks/bench_quality.py --budget 60 --dim 192 --lr 2e-3 --json

The budget counts training steps only: start-up, tokenizer training and the final evaluation are not included.
190 s is what nanoGPT's CPU "baby GPT" configuration needs on the reference machine (2 threads) to reach
1.886 nats/char on the same split; the target is <= 1.65. This is a script, not a timed test: results depend on
the machine and on whatever else is running on it, so the load average is printed with the result.
"""

import json
import os
import sys
import time
from dataclasses import replace

import torch

from llama_nb.data import load_tinyshakespeare
from llama_nb.train import build_train_parser, prepare_data, resolve_configs, train

NANOGPT_CPU_SECONDS = 190.0  # nanoGPT's CPU config to 1.886 nats/char, 2 threads, reference machine
TARGET_NATS_PER_CHAR = 1.65


def main(argv: list[str] | None = None) -> int:
    parser = build_train_parser()  # the training CLI's presets and overrides (--dim, --lr, --seq-len, ...)
    parser.prog = "python benchmarks/bench_quality.py"
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--budget", dest="time_budget_s", type=float,
                        help=f"seconds of training steps (default: {NANOGPT_CPU_SECONDS:.0f})")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default: 2)")
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    parser.set_defaults(time_budget_s=NANOGPT_CPU_SECONDS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    config, tc = resolve_configs(args)
    # No evaluation, samples or checkpoints during the budget; max_steps is only a cap, the budget decides.
    tc = replace(tc, max_steps=1_000_000, eval_interval=0, sample_tokens=0)
    text = load_tinyshakespeare() if args.data is None else open(args.data, encoding="utf-8").read()
    data = prepare_data(text, config.vocab_size)

    load_before, cpu_before = os.getloadavg(), os.times()
    t0 = time.perf_counter()
    result = train(config, tc, data, progress=False, log=lambda message: None)
    wall = time.perf_counter() - t0
    load_after, cpu_after = os.getloadavg(), os.times()
    # CPU seconds this process got per wall second (training and final evaluation): about `threads` when the
    # machine is otherwise idle, less when other jobs take cores away.
    cpu_share = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / wall

    tokens = result.steps * tc.tokens_per_step
    chars_per_token = data.val_chars / (len(data.val_ids) - 1)
    row = {
        "preset": args.preset, "vocab_size": config.vocab_size, "dim": config.dim, "n_layers": config.n_layers,
        "n_heads": config.n_heads, "seq_len": tc.seq_len, "batch_size": tc.batch_size, "lr": tc.lr,
        "min_lr": tc.min_lr, "warmup_steps": tc.warmup_steps, "params": result.model.num_parameters(),
        "budget_s": tc.time_budget_s, "train_s": round(result.train_seconds, 1), "steps": result.steps,
        "tokens_per_s": round(tokens / result.train_seconds), "threads": torch.get_num_threads(),
        "val_nats_per_token": round(result.final["nats_per_token"], 4),
        "val_nats_per_char": round(result.final["nats_per_char"], 4),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
        "cpu_share": round(cpu_share, 2),
    }
    print(f"config: V={config.vocab_size} dim={config.dim} layers={config.n_layers} heads={config.n_heads} "
          f"seq_len={tc.seq_len} batch={tc.batch_size} lr={tc.lr:g}->{tc.min_lr:g} warmup={tc.warmup_steps} "
          f"({row['params']:,} parameters, {chars_per_token:.2f} characters per token)")
    print(f"trained {result.steps} steps in {result.train_seconds:.1f} s of training steps "
          f"({row['tokens_per_s']:,} tokens/s on {row['threads']} threads; {wall:.1f} s with the final evaluation)")
    print(f"load average (1, 5, 15 min) before: {row['load_before']}, after: {row['load_after']} | CPU share of "
          f"this process: {cpu_share:.2f} of {row['threads']} threads")
    print(f"val: {row['val_nats_per_token']:.4f} nats/token | {row['val_nats_per_char']:.4f} nats/char "
          f"(nanoGPT CPU config: 1.886 in {NANOGPT_CPU_SECONDS:.0f} s; target <= {TARGET_NATS_PER_CHAR})")
    if args.json:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
