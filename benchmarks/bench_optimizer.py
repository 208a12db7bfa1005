"""Optimizer benchmark (section 6.2): AdamW against Muon on a preset's model, in the same wall time, measured in the
same run on the same machine.

    python benchmarks/bench_optimizer.py                 # the benchmark: about 8 minutes on 2 cores
    python benchmarks/bench_optimizer.py --budget 10 --rounds 1   # a short check of the script

Both optimizers train the preset's model (`cpu` by default) from the same seed, each for `--budget` seconds of
training steps, with the cosine schedule fitted to the time (section 6.6's `time_budget_s`): a slower step means
fewer steps, which is the fair comparison. AdamW takes `--adamw-lr` (its floor a tenth of it: the `cpu` preset's
AdamW schedule before it switched to Muon); Muon takes `--muon-lr` (its floor a hundredth of it), on the block
matrices, with AdamW at the same rate on the rest (section 6.2's `configure_muon`). The runs alternate, AdamW,
Muon, Muon, AdamW for two rounds, so that a machine that slows down during the benchmark slows both alike; each is
scored with the full validation pass, in nats per character, and the difference of the medians is reported
(Muon − AdamW; < 0: Muon is better). A run that did not have its cores to itself is refused, as in the other
benchmarks (machine.py).
"""

import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch
from machine import DEFAULT_THREADS, CpuMeter, check_threads, figure, load_average, write_json

from llama_nb.batches import prepare_data
from llama_nb.data import load_tinyshakespeare
from llama_nb.loop import train
from llama_nb.train_cli import DEFAULT_PRESET, build_train_parser, resolve_configs


def build_parser():
    parser = build_train_parser()  # the training CLI's presets and overrides (--preset, --dim, --lr, ...)
    parser.prog = "python benchmarks/bench_optimizer.py"
    parser.description = __doc__.split("\n\n")[0]
    b = parser.add_argument_group("benchmark")
    b.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=f"torch threads (default: {DEFAULT_THREADS})")
    b.add_argument("--budget", type=float, default=100.0, help="seconds of training steps per run (default: 100)")
    b.add_argument("--adamw-lr", type=float, default=2e-3, help="AdamW's peak learning rate (default: 2e-3)")
    b.add_argument("--muon-lr", type=float, default=4e-3, help="Muon's peak learning rate (default: 4e-3)")
    b.add_argument("--rounds", type=int, default=2, help="rounds of AdamW, Muon (the second reversed; default: 2)")
    b.add_argument("--json", type=Path, metavar="PATH", help="also write the results to PATH (atomically)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        threads = check_threads(args.threads)
        config, tc = resolve_configs(args)
    except ValueError as e:
        parser.error(str(e))
    if not args.budget > 0 or not args.adamw_lr > 0 or not args.muon_lr > 0 or args.rounds < 1:
        parser.error("--budget, --adamw-lr and --muon-lr must be > 0, and --rounds at least 1.")
    preset = args.preset or DEFAULT_PRESET
    torch.set_num_threads(threads)
    text = load_tinyshakespeare() if args.data is None else open(args.data, encoding="utf-8").read()
    data = prepare_data(text, config.vocab_size)
    timed = dict(max_steps=1_000_000, eval_interval=0, sample_tokens=0, time_budget_s=args.budget)
    runs = {
        "adamw": replace(tc, optimizer="adamw", lr=args.adamw_lr, min_lr=args.adamw_lr / 10, **timed),
        "muon": replace(tc, optimizer="muon", lr=args.muon_lr, min_lr=args.muon_lr / 100, **timed),
    }
    print(f"torch {torch.__version__}, {threads} threads, load average {load_average()}", flush=True)
    print(f"preset {preset}: {args.budget:g} s of training steps per run, {args.rounds} round(s)", flush=True)
    results, meters = {name: [] for name in runs}, []
    order = [name for r in range(args.rounds) for name in (("adamw", "muon") if r % 2 == 0 else ("muon", "adamw"))]
    for name in order:
        meter = CpuMeter(threads)
        with meter:
            result = train(config, runs[name], data, progress=False, log=lambda message: None)
        meters.append(meter)
        row = {
            "steps": result.steps,
            "train_s": round(result.train_seconds, 1),
            "ms_per_step": round(1000 * result.train_seconds / result.steps, 1),
            "val_nats_per_char": round(result.final["nats_per_char"], 4),
            "cpu_share": round(meter.cpu_share, 2),
        }
        results[name].append(row)
        print(
            f"  {name:5s} lr {runs[name].lr:g}: {row['steps']:5d} steps in {row['train_s']:5.1f} s "
            f"({row['ms_per_step']:.1f} ms/step) | val {row['val_nats_per_char']:.4f} nats/char | CPU share "
            f"{row['cpu_share']:.2f} of {threads}",
            flush=True,
        )
    median = {name: statistics.median(r["val_nats_per_char"] for r in rows) for name, rows in results.items()}
    fig = figure(
        f"val nats/char, Muon - AdamW, {preset} preset, {args.budget:g} s of training steps each",
        round(median["muon"] - median["adamw"], 4),
        "nats/char",
        meters,
        signed=True,
        adamw=median["adamw"],
        muon=median["muon"],
        runs=results,
    )
    if fig["refused"]:
        print(f"REFUSED: {fig['refused']}")
    else:
        winner = "Muon" if fig["value"] < 0 else "AdamW"
        print(
            f"result: Muon {median['muon']:.4f} vs AdamW {median['adamw']:.4f} nats/char (medians) in the same "
            f"{args.budget:g} s: {winner} is better by {abs(fig['value']):.3f}"
        )
    if args.json:
        write_json(args.json, {"benchmark": "optimizer", "figures": [fig]})
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
