"""Benchmark llama_nb's Llama against transformers' LlamaForCausalLM on the CPU (same config, same weights).

1. A full fp32 training step (forward, cross-entropy, backward, AdamW) at dim 128, 4 layers, 4 heads, context 64,
   batch 12, vocabulary 2048: median tokens/s over >= 30 steps after warm-up, both models stepped alternately so
   that load from other processes hits both alike.
2. Greedy generation of 256 tokens: llama_nb without a cache (rerun the whole sequence per token), llama_nb with
   its KV cache, and transformers' `generate` with its cache, timed with torch.utils.benchmark.Timer in rounds
   that run the three in turn (each once untimed, then once timed): median tokens/s of the rounds. All three must
   produce the same tokens.

Run: `.venv/bin/python benchmarks/bench_model.py` (about a minute on 2 cores) or `--quick` (a few seconds).
`--threads` (default 2) sets torch's thread count; each timed section records its CPU share, and a ratio measured
while other programs took CPU time is refused (see machine.py). `--json PATH` also writes the results to PATH, one
JSON object.
transformers is a dev dependency, needed only here and in tests.
"""

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from machine import CpuMeter, add_cpu_benchmark_args, alternating_medians, figure, parse_cpu_benchmark_args, write_json

from llama_nb.hf import transformers_twin
from llama_nb.model import Llama, LlamaConfig

TRAIN = dict(vocab_size=2048, dim=128, n_layers=4, n_heads=4, max_seq_len=64)
BATCH = 12


def hf_twin(model: Llama):
    "transformers' LlamaForCausalLM with the weights of `model` (default attention implementation: SDPA)."
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers_twin(model)  # callers choose .train() or .eval()


def make_optimizer(model):
    # The same optimizer for both models (PyTorch's defaults pick the multi-tensor `foreach` AdamW on CPU).
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)


def train_step_ours(model, opt, x, y):
    _, loss = model(x, targets=y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def train_step_hf(model, opt, x, y):
    logits = model(input_ids=x).logits  # the same loss as ours (labels=... would shift internally)
    loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def bench_train(steps: int, warmup: int, meter: CpuMeter) -> dict:
    "Median tokens/s of each model's training step; the loop (warm-up included) runs inside `meter`."
    torch.manual_seed(0)
    ours = Llama(LlamaConfig(**TRAIN)).train()
    hf = hf_twin(ours).train()
    opt_ours, opt_hf = make_optimizer(ours), make_optimizer(hf)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, TRAIN["vocab_size"], (steps + warmup, BATCH, TRAIN["max_seq_len"] + 1), generator=g)
    times, losses = {"llama_nb": [], "transformers": []}, {}
    # Not torch.utils.benchmark.Timer: each step changes the weights and takes the next batch, and the first losses
    # are compared; Timer's untimed warm-up calls would be extra steps. So the loop, alternating, is timed by hand.
    with meter:
        for i, batch in enumerate(data):
            x, y = batch[:, :-1], batch[:, 1:]
            for name, step, model, opt in (
                ("llama_nb", train_step_ours, ours, opt_ours),
                ("transformers", train_step_hf, hf, opt_hf),
            ):
                t0 = time.perf_counter()
                losses[name] = step(model, opt, x, y).item()
                dt = time.perf_counter() - t0
                if i >= warmup:
                    times[name].append(dt)
            if i == 0 and abs(losses["llama_nb"] - losses["transformers"]) > 1e-4:
                raise SystemExit(
                    f"error: same weights and batch, but the first losses differ: {losses}. The "
                    "models are not the same, so their speeds cannot be compared."
                )
    tokens = BATCH * TRAIN["max_seq_len"]
    return {name: tokens / statistics.median(t) for name, t in times.items()}


# Generation runs under torch.inference_mode(): like no_grad, plus no view/version tracking, which cuts the
# per-operation overhead that dominates a one-token step of a small model. Applied to all three methods.
@torch.inference_mode()
def greedy_cached(model, prompt, n_new):
    cache = model.new_cache(prompt.shape[0], prompt.shape[1] + n_new)
    logits, _ = model(prompt, cache=cache)
    out = [prompt]
    for i in range(n_new):
        out.append(logits[:, -1].argmax(-1, keepdim=True))
        if i + 1 < n_new:
            logits, _ = model(out[-1], cache=cache)
    return torch.cat(out, dim=1)


@torch.inference_mode()
def greedy_uncached(model, prompt, n_new):
    ids = prompt
    for _ in range(n_new):
        logits, _ = model(ids)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


@torch.inference_mode()
def greedy_hf(hf, prompt, n_new):
    return hf.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=n_new,
        min_new_tokens=n_new,
        do_sample=False,
        use_cache=True,
        pad_token_id=0,
    )


def bench_generate(n_new: int, prompt_len: int, repeats: int, meter: CpuMeter) -> tuple[dict, bool]:
    "Tokens/s of each decoding method (median of `repeats`) and whether all produced the same tokens."
    torch.manual_seed(0)
    cfg = LlamaConfig(**{**TRAIN, "max_seq_len": prompt_len + n_new})
    ours = Llama(cfg).eval()
    hf = hf_twin(ours).eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(1))
    runs = {
        "llama_nb, no cache": lambda: greedy_uncached(ours, prompt, n_new),
        "llama_nb, KV cache": lambda: greedy_cached(ours, prompt, n_new),
        "transformers generate": lambda: greedy_hf(hf, prompt, n_new),
    }
    with meter:  # each round: each method once untimed (warm-up), then once timed, in turn
        seconds, outputs = alternating_medians(runs, repeats)
    ref = outputs["llama_nb, KV cache"]
    same = all(torch.equal(o, ref) for o in outputs.values())
    return {name: n_new / s for name, s in seconds.items()}, same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run: 5 training steps, 64 new tokens")
    add_cpu_benchmark_args(parser)
    args, threads = parse_cpu_benchmark_args(parser, argv)
    steps, warmup = (5, 2) if args.quick else (30, 5)
    n_new, repeats = (64, 1) if args.quick else (256, 3)

    print(f"torch {torch.__version__}, {threads} threads", flush=True)
    train_meter, gen_meter = CpuMeter(threads), CpuMeter(threads)
    train = bench_train(steps, warmup, train_meter)
    gen, same = bench_generate(n_new, 16, repeats, gen_meter)

    cfg = ", ".join(f"{k}={v}" for k, v in TRAIN.items())
    print(
        f"\nTraining step (fp32, forward + loss + backward + AdamW), {cfg}, batch={BATCH}, "
        f"median of {steps} steps after {warmup} warm-up | CPU share {train_meter.cpu_share:.2f} of {threads}"
    )
    print(f"  {'model':24s} {'tokens/s':>10s}")
    for name, tps in train.items():
        print(f"  {name:24s} {tps:10,.0f}")
    print(f"  llama_nb / transformers: {train['llama_nb'] / train['transformers']:.2f}x")

    print(
        f"\nGreedy generation of {n_new} tokens after a 16-token prompt, batch 1, median of {repeats} | CPU share "
        f"{gen_meter.cpu_share:.2f} of {threads}"
    )
    print(f"  {'method':24s} {'tokens/s':>10s}")
    for name, tps in gen.items():
        print(f"  {name:24s} {tps:10,.0f}")
    cached, uncached, hf = gen["llama_nb, KV cache"], gen["llama_nb, no cache"], gen["transformers generate"]
    print(f"  KV cache speed-up:               {cached / uncached:.1f}x")
    print(f"  llama_nb cache / transformers:   {cached / hf:.2f}x")
    print(f"  all three produce the same tokens: {same}")
    if not same:
        print("error: the three decoders disagree, so their speeds cannot be compared.", file=sys.stderr)
        return 1

    short = " (QUICK)" if args.quick else ""
    figures = [
        figure(
            f"training step tokens/s, llama_nb / transformers{short}",
            round(train["llama_nb"] / train["transformers"], 3),
            "x",
            [train_meter],
            ours=round(train["llama_nb"]),
            reference=round(train["transformers"]),
            measure="tokens/s",
            ours_label="llama_nb Llama",
            reference_label="transformers LlamaForCausalLM, same weights",
        ),
        figure(
            f"greedy decoding of {n_new} tokens, KV cache / no cache{short}",
            round(cached / uncached, 3),
            "x",
            [gen_meter],
            measure="tokens/s",
            ours=round(cached),
            reference=round(uncached),
            ours_label="llama_nb, KV cache",
            reference_label="llama_nb, whole sequence re-run per token",
        ),
        figure(
            f"greedy decoding of {n_new} tokens, llama_nb / transformers generate{short}",
            round(cached / hf, 3),
            "x",
            [gen_meter],
            measure="tokens/s",
            ours=round(cached),
            reference=round(hf),
            ours_label="llama_nb, KV cache",
            reference_label="transformers generate, its cache",
        ),
    ]
    for fig in figures:
        if fig["refused"]:
            print(f"REFUSED {fig['name']}: {fig['refused']}")
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "model",
                "figures": figures,
                "settings": {
                    **TRAIN,
                    "batch": BATCH,
                    "train_steps": steps,
                    "warmup_steps": warmup,
                    "new_tokens": n_new,
                    "prompt_tokens": 16,
                    "repeats": repeats,
                    "threads": threads,
                },
            },
        )
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
