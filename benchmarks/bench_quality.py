"""Quality benchmark (Chapter 6): how good a model does our training loop make in the time nanoGPT's CPU recipe takes,
both measured in the same run on the same machine?

    python benchmarks/bench_quality.py                      # about 4 minutes on 2 cores
    python benchmarks/bench_quality.py --baseline-iters 200 # a short check (the anchor is then not nanoGPT's)

1. The anchor: nanoGPT's CPU "baby GPT" recipe (GPT-2, 4 layers, 4 heads, width 128, 64 characters of context,
   batch 12, 2,000 iterations; `gpt2_baseline.py`) is trained with `transformers`' GPT2LMHeadModel, and its
   training steps are timed.
2. Our model (the `cpu` preset, or any override of `python -m llama_nb.train_cli`'s options) is then trained for
   exactly that many seconds of training steps, with its cosine schedule fitted to the budget.
3. Both are scored with the same full validation pass in nats per character, and the difference is reported.

Both sections are timed on `--threads` threads (default 2) with their CPU share recorded; if either section did
not have its cores to itself, the difference is refused (see machine.py). `--budget SECONDS` replaces the
anchor's time with a fixed budget, for experiments; the result is then labelled as such. `--json PATH` also writes
the results to PATH, one JSON object (what `make bench` reads).
"""

import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch
from gpt2_baseline import NANOGPT_CPU, NANOGPT_REPORTED, char_data, train_baseline
from machine import DEFAULT_THREADS, CpuMeter, busy_reason, check_threads, figure, load_average, write_json

from llama_nb.batches import prepare_data
from llama_nb.data import load_tinyshakespeare
from llama_nb.loop import train
from llama_nb.train_cli import DEFAULT_PRESET, build_train_parser, resolve_configs

BASELINE_TOLERANCE = 0.05  # the full recipe should land within this of nanoGPT's reported 1.88 nats/char
EARLY_CHECK = 200  # from this many anchor steps on, every 100 steps: stop if the machine is already busy


def build_parser():
    parser = build_train_parser()  # the training CLI's presets and overrides (--dim, --lr, --seq-len, ...)
    parser.prog = "python benchmarks/bench_quality.py"
    parser.description = __doc__.split("\n\n")[0]
    b = parser.add_argument_group("benchmark")
    b.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"torch.set_num_threads for both models (default: {DEFAULT_THREADS})",
    )
    b.add_argument(
        "--baseline-iters",
        type=int,
        default=NANOGPT_CPU.max_iters,
        help=f"training steps of the anchor (default: nanoGPT's {NANOGPT_CPU.max_iters}; fewer only "
        "for a quick check of the script)",
    )
    b.add_argument(
        "--budget",
        dest="fixed_budget_s",
        type=float,
        help="train our model for this many seconds instead of the anchor's time (an experiment, not the benchmark)",
    )
    b.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the results to PATH, one JSON object (atomically)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        threads = check_threads(args.threads)
        config, tc = resolve_configs(args)
    except ValueError as e:
        parser.error(str(e))
    preset = args.preset or DEFAULT_PRESET
    if not 1 <= args.baseline_iters <= NANOGPT_CPU.max_iters:
        parser.error(f"--baseline-iters must be in [1, {NANOGPT_CPU.max_iters}], got {args.baseline_iters}.")
    if args.fixed_budget_s is not None and not args.fixed_budget_s > 0:
        parser.error(f"--budget must be > 0 seconds, got {args.fixed_budget_s}.")
    torch.set_num_threads(threads)
    text = load_tinyshakespeare() if args.data is None else open(args.data, encoding="utf-8").read()
    print(f"torch {torch.__version__}, {threads} threads, load average {load_average()}", flush=True)

    # 1. The anchor, nanoGPT's recipe: its training steps alone are timed.
    print(
        f"anchor: nanoGPT's CPU recipe with transformers' GPT2LMHeadModel, {args.baseline_iters} iterations "
        f"(about {args.baseline_iters * 0.05:.0f} s on 2 idle cores)...",
        flush=True,
    )
    base_meter = CpuMeter(threads)
    # On a busy machine the figure will be refused anyway: say so after a few hundred steps, not after many minutes.
    busy_so_far = lambda steps: (
        steps >= EARLY_CHECK and steps % 100 == 0 and busy_reason(base_meter.share_so_far(), threads) is not None
    )
    base = train_baseline(char_data(text), max_iters=args.baseline_iters, meter=base_meter, stop=busy_so_far)
    if base.steps < args.baseline_iters:
        print(f"  stopped after {base.steps} of {args.baseline_iters} steps: the machine is busy", flush=True)
    full_recipe = base.steps == NANOGPT_CPU.max_iters
    print(
        f"  {base.steps} steps in {base.train_seconds:.1f} s ({base.params:,} parameters, {base.vocab_size} "
        f"characters) | CPU share {base_meter.cpu_share:.2f} of {threads} | val {base.val_nats_per_char:.4f} "
        f"nats/char (nanoGPT reports {NANOGPT_REPORTED} for this recipe)",
        flush=True,
    )
    if full_recipe and abs(base.val_nats_per_char - NANOGPT_REPORTED) > BASELINE_TOLERANCE:
        print(
            f"  warning: the anchor is {base.val_nats_per_char - NANOGPT_REPORTED:+.3f} nats/char away from "
            "nanoGPT's result: the recipe is not reproduced, so the comparison below is suspect.",
            flush=True,
        )

    name = "val nats/char, ours - nanoGPT CPU recipe, same training time"
    if not full_recipe:
        name += f" (SHORT: anchor {base.steps} iterations)"
    if args.fixed_budget_s is not None:
        name += f" (FIXED budget {args.fixed_budget_s:g} s, not the anchor's time)"
    reference = dict(
        signed=True,
        measure="val nats/char",
        reference=round(base.val_nats_per_char, 4),
        reference_label=f"GPT-2 (transformers), nanoGPT CPU recipe, {base.steps} iterations",
    )
    anchor = {
        "recipe": asdict(NANOGPT_CPU),
        "steps": base.steps,
        "params": base.params,
        "train_s": round(base.train_seconds, 1),
        "val_nats_per_char": round(base.val_nats_per_char, 4),
    }
    if base_meter.busy and args.fixed_budget_s is None:
        # The anchor's time is then not this machine's time: training ours for it would only waste minutes.
        fig = figure(
            name,
            None,
            "nats/char",
            [base_meter],
            ours=None,
            **reference,
            sections={"anchor": {"train_s": round(base.train_seconds, 1), **base_meter.record()}},
        )
        print(f"REFUSED: {fig['refused']}\n(our model was not trained: its time would have been the busy anchor's)")
        if args.json:
            write_json(args.json, {"benchmark": "quality", "figures": [fig], "anchor": anchor})
            print(f"results written to {args.json}")
        return 0

    # 2. Our model, for exactly the anchor's training time (or a fixed budget, if asked for).
    budget = base.train_seconds if args.fixed_budget_s is None else args.fixed_budget_s
    tc = replace(tc, max_steps=1_000_000, eval_interval=0, sample_tokens=0, time_budget_s=budget)
    data = prepare_data(text, config.vocab_size)
    source = "the anchor's time" if args.fixed_budget_s is None else "a FIXED budget"
    print(f"ours: preset {preset}, {budget:.1f} s of training steps ({source})...", flush=True)
    ours_meter = CpuMeter(threads)
    with ours_meter:
        result = train(config, tc, data, progress=False, log=lambda message: None)
    chars_per_token = data.val_chars / (len(data.val_ids) - 1)
    ours_nats = result.final["nats_per_char"]
    print(
        f"  {result.steps} steps in {result.train_seconds:.1f} s ({result.model.num_parameters():,} parameters, "
        f"vocab {config.vocab_size}, {chars_per_token:.2f} characters per token) | CPU share "
        f"{ours_meter.cpu_share:.2f} of {threads} | val {result.final['nats_per_token']:.4f} nats/token, "
        f"{ours_nats:.4f} nats/char",
        flush=True,
    )

    # 3. The figure: the difference, refused if either section was disturbed.
    fig = figure(
        name,
        round(ours_nats - base.val_nats_per_char, 4),
        "nats/char",
        [base_meter, ours_meter],
        ours=round(ours_nats, 4),
        ours_label=f"llama_nb `{preset}` preset, {result.steps} steps",
        **reference,
        sections={
            "anchor": {"train_s": round(base.train_seconds, 1), **base_meter.record()},
            "ours": {"train_s": round(result.train_seconds, 1), **ours_meter.record()},
        },
    )
    if fig["refused"]:
        print(f"REFUSED: {fig['refused']}")
    else:
        better = "lower (better)" if fig["value"] < 0 else "higher (worse)"
        when = (
            f"in the same {budget:.0f} s"
            if args.fixed_budget_s is None
            else f"(ours in a FIXED {budget:g} s, the anchor in {base.train_seconds:.1f} s)"
        )
        print(
            f"result: ours {ours_nats:.4f} vs anchor {base.val_nats_per_char:.4f} nats/char {when}: "
            f"{abs(fig['value']):.3f} nats/char {better}"
        )
    if args.json:
        ours = {
            "preset": preset,
            **config.to_dict(),
            "seq_len": tc.seq_len,
            "batch_size": tc.batch_size,
            "lr": tc.lr,
            "min_lr": tc.min_lr,
            "warmup_steps": tc.warmup_steps,
            "steps": result.steps,
            "train_s": round(result.train_seconds, 1),
            "tokens_per_s": round(result.steps * tc.tokens_per_step / result.train_seconds),
            "val_nats_per_token": round(result.final["nats_per_token"], 4),
            "val_nats_per_char": round(ours_nats, 4),
        }
        write_json(args.json, {"benchmark": "quality", "figures": [fig], "ours": ours, "anchor": anchor})
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
