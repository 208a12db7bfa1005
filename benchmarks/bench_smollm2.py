"""Benchmark greedy KV-cache decoding of SmolLM2-135M-Instruct: llama_nb against transformers' `generate`.

Both models hold the same weights, dequantized from the same GGUF file (llama_nb.gguf_model.load_gguf and
transformers' own GGUF loader); before timing, the script checks that they give the same logits and the same
greedy tokens. Then it decodes `--new-tokens` tokens after the prompt, batch 1, with each implementation's KV cache,
timed with torch.utils.benchmark.Timer in `--repeats` rounds that alternate the two (each once untimed, then once
timed) so that load from other processes hits both alike, and reports the median tokens/s of each and their ratio
(llama_nb ÷ transformers; > 1 means llama_nb is faster). Prefill is included, as in a user's call to `generate`.
The figures are measured in float32 and, with both models' weights cast to bfloat16, in bf16 (`--dtype`). A figure
measured while other programs took CPU time is refused (see machine.py).

Run: `.venv/bin/python benchmarks/bench_smollm2.py` (about a minute on 2 cores), `--quick` (a few seconds of
decoding), `--json PATH` (also write the results to PATH, one JSON object, for `make bench`).
"""

import argparse
import sys
from unittest import mock

import torch
from machine import CpuMeter, add_cpu_benchmark_args, alternating_medians, figure, parse_cpu_benchmark_args, write_json

from llama_nb.chat import load_pretrained_gguf
from llama_nb.gguf_format import smollm2_gguf_path
from llama_nb.sampling import generate


def load_hf(path):
    "transformers' LlamaForCausalLM from the same GGUF (its own reader, dequantizer and un-permutation)."
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    with mock.patch("transformers.modeling_gguf_pytorch_utils.tqdm", lambda items, **kw: items):  # its own bar
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()
    hf.generation_config.eos_token_id = None  # decode exactly --new-tokens tokens, as llama_nb does with eos_id=None
    hf.generation_config.pad_token_id = 2
    return hf


def decode_ours(model, ids, n):
    return generate(model, ids, n, greedy=True, eos_id=None)


@torch.no_grad()
def decode_hf(hf, ids, n):
    out = hf.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
    return out[0, len(ids) :].tolist()


def bench(ours, hf, ids, n, repeats, meter):
    "Median tokens/s of each, in alternating rounds (each once untimed, then once timed); the tokens must agree."
    calls = {"llama_nb": lambda: decode_ours(ours, ids, n), "transformers": lambda: decode_hf(hf, ids, n)}
    with meter:
        seconds, outputs = alternating_medians(calls, repeats)
    for name, out in outputs.items():
        assert len(out) == n, (name, len(out))
    same = outputs["llama_nb"] == outputs["transformers"]
    return {name: n / s for name, s in seconds.items()}, outputs["llama_nb"], same


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="The capital of France is")
    parser.add_argument("--new-tokens", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="8 new tokens, 2 repeats")
    add_cpu_benchmark_args(parser)
    args, threads = parse_cpu_benchmark_args(parser, argv)
    if args.quick:
        args.new_tokens, args.repeats = 8, 2
    path = smollm2_gguf_path()
    p = load_pretrained_gguf(path)
    hf = load_hf(path)
    ids = p.tokenizer.encode(args.prompt, add_special_tokens=False).ids
    with torch.no_grad():
        x = torch.tensor([ids])
        diff = (p.model(x)[0] - hf(x).logits).abs().max().item()
    if diff >= 1e-4:
        print(f"error: the two models disagree before timing: max |Δlogits| = {diff:.3g}", file=sys.stderr)
        return 1
    print(
        f"SmolLM2-135M-Instruct ({path.name}), prompt {args.prompt!r} ({len(ids)} tokens), {args.new_tokens} new "
        f"tokens, greedy, batch 1, {threads} threads, median of {args.repeats}; max |Δlogits| fp32 {diff:.1e}",
        flush=True,
    )
    short = " (QUICK)" if args.quick else ""
    figures = []
    for dtype in ["float32", "bfloat16"] if args.dtype == "both" else [args.dtype]:
        meter = CpuMeter(threads)
        ours, theirs = p.model.to(getattr(torch, dtype)), hf.to(getattr(torch, dtype))
        speed, tokens, same = bench(ours, theirs, ids, args.new_tokens, args.repeats, meter)
        ratio = speed["llama_nb"] / speed["transformers"]
        print(
            f"  {dtype:9s} llama_nb {speed['llama_nb']:6.1f} tok/s | transformers generate "
            f"{speed['transformers']:6.1f} tok/s | ratio {ratio:.2f}x | same tokens: {same} | CPU share "
            f"{meter.cpu_share:.2f} of {threads}",
            flush=True,
        )
        print(f"  {'':9s} text: {p.tokenizer.decode(ids + tokens)!r}")
        if dtype == "float32" and not same:
            print("error: in float32 the two models must decode the same tokens", file=sys.stderr)
            return 1
        name = f"SmolLM2 greedy decoding of {args.new_tokens} tokens ({dtype}), llama_nb / transformers generate"
        figures.append(
            figure(
                name + short,
                round(ratio, 3),
                "x",
                [meter],
                measure="tokens/s",
                ours=round(speed["llama_nb"], 1),
                reference=round(speed["transformers"], 1),
                ours_label=f"llama_nb KV cache, {dtype} weights",
                reference_label=f"transformers generate, {dtype} weights",
                same_tokens=same,
            )
        )
    for fig in figures:
        if fig["refused"]:
            print(f"REFUSED {fig['name']}: {fig['refused']}")
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "smollm2",
                "figures": figures,
                "settings": {
                    "model": path.name,
                    "prompt": args.prompt,
                    "prompt_tokens": len(ids),
                    "new_tokens": args.new_tokens,
                    "repeats": args.repeats,
                    "threads": threads,
                    "max_abs_logit_diff_fp32": diff,
                },
            },
        )
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
