"""The optional llama.cpp check of Chapter 9.2 (not part of `make test`: llama-cpp-python compiles llama.cpp).

It trains the model of section 9.2 (the `cpu` preset, `--steps` steps) or loads `--checkpoint`, writes it with
`llama_nb.gguf_export.write_gguf` as each of `--types`, and for each file asks llama.cpp itself, through the
`llama-cpp-python` bindings, for
- its token ids for the validation split (llama.cpp's own BPE and `gpt-2` pre-tokenizer), against ours;
- its logits for a prompt and its next-token top 5, against our model loaded from the same file;
- its greedy continuation of the prompt (`--new-tokens` tokens), against ours: the number of tokens that agree;
- its decoding speed, batch 1, one token at a time (median of `--repeats`), beside our KV-cache decoding of the
  same tokens (llama.cpp multiplies the blocks as they are; our loader dequantizes to float32).
llama.cpp quantizes the activations too when it multiplies Q8_0 and Q4_1 blocks, so its logits differ from ours
in the last digits; the check reports how much, and whether that ever changes the chosen token.

Install (once, a few minutes on 2 cores): `.venv/bin/pip install llama-cpp-python==0.3.36`
Run: `.venv/bin/python benchmarks/check_llama_cpp.py [--json PATH]`; `benchmarks/README.md` records a run.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llama_nb.batches import prepare_data
from llama_nb.checkpoint import load_model_from_checkpoint
from llama_nb.config import preset_configs
from llama_nb.data import load_tinyshakespeare, train_val_split
from llama_nb.gguf_export import FILE_TYPES, write_gguf
from llama_nb.gguf_model import load_gguf
from llama_nb.loop import train
from llama_nb.sampling import encode_as_text, generate

PROMPT = "ROMEO:\n"


def trained_model(args):
    "The model and tokenizer of section 9.2 (or of --checkpoint), and the validation text."
    text = load_tinyshakespeare()
    val_text = train_val_split(text)[1]
    if args.checkpoint:
        model, tokenizer, _ = load_model_from_checkpoint(args.checkpoint)
        return model, tokenizer, val_text
    config, run = preset_configs("cpu", max_steps=args.steps, eval_interval=args.steps)
    data = prepare_data(text, config.vocab_size)
    result = train(config, run, data, progress=False, log=lambda message: None)
    return result.model.eval(), data.tokenizer, val_text


def cpp_greedy(llm, prompt, n):
    "llama.cpp's greedy continuation, one token per eval, and its logits at the end of the prompt."
    llm.reset()
    llm.eval(prompt)
    first = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([out[-1]])
    return out, first


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_file(path, tokenizer, val_text, args):
    from llama_cpp import Llama as LlamaCpp

    ours = load_gguf(path)
    llm = LlamaCpp(
        model_path=str(path), n_ctx=ours.config.max_seq_len, n_threads=args.threads, logits_all=True, verbose=False
    )
    ids = tokenizer.encode(val_text, add_special_tokens=False).ids
    cpp_ids = llm.tokenize(val_text.encode("utf-8"), add_bos=False, special=False)
    prompt = encode_as_text(tokenizer, PROMPT)
    cpp_tokens, cpp_logits = cpp_greedy(llm, prompt, args.new_tokens)
    with torch.no_grad():
        our_logits = ours(torch.tensor([prompt]))[0][0, -1].numpy()
    our_tokens = generate(ours, prompt, args.new_tokens, greedy=True, eos_id=None)
    agree = next((i for i, (a, b) in enumerate(zip(our_tokens, cpp_tokens)) if a != b), len(our_tokens))
    torch.set_num_threads(args.threads)
    cpp_s = median_seconds(lambda: cpp_greedy(llm, prompt, args.new_tokens), args.repeats)
    our_s = median_seconds(lambda: generate(ours, prompt, args.new_tokens, greedy=True, eos_id=None), args.repeats)
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "token_ids_equal": cpp_ids == ids,
        "n_val_tokens": len(ids),
        "max_abs_logit_diff": float(np.abs(cpp_logits - our_logits).max()),
        "top5_ours": np.argsort(-our_logits)[:5].tolist(),
        "top5_llama_cpp": np.argsort(-cpp_logits)[:5].tolist(),
        "greedy_tokens_agreeing": agree,
        "new_tokens": args.new_tokens,
        "llama_cpp_tokens_per_s": args.new_tokens / cpp_s,
        "llama_nb_tokens_per_s": args.new_tokens / our_s,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="a llama-nb-train checkpoint directory instead of training")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the cpu preset (as section 9.2)")
    parser.add_argument("--types", default=",".join(FILE_TYPES), help="file types to write and check")
    parser.add_argument("--new-tokens", type=int, default=100, help="greedy tokens to compare and time")
    parser.add_argument("--repeats", type=int, default=5, help="timed decodes of each (the median is reported)")
    parser.add_argument("--threads", type=int, default=2, help="threads for llama.cpp and for torch")
    parser.add_argument("--json", help="also write the results to this path")
    args = parser.parse_args(argv)
    try:
        import llama_cpp
    except ImportError:
        sys.exit(
            "llama-cpp-python is not installed: .venv/bin/pip install llama-cpp-python==0.3.36 (compiles llama.cpp)"
        )
    torch.manual_seed(0)
    model, tokenizer, val_text = trained_model(args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for qtype in args.types.split(","):
            path = write_gguf(model, tokenizer, Path(tmp) / f"baby-llama-{qtype}.gguf", qtype)
            rows.append({"type": qtype, **check_file(path, tokenizer, val_text, args)})
    print(f"llama-cpp-python {llama_cpp.__version__}, torch {torch.__version__}, {args.threads} threads")
    print(
        "| type | file | llama.cpp ids = ours | max abs Δlogit | top 5 equal | greedy tokens agreeing | "
        "llama.cpp tok/s | llama_nb tok/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['type']} | {r['bytes'] / 1e6:.2f} MB | {r['token_ids_equal']} ({r['n_val_tokens']:,} tokens) | "
            f"{r['max_abs_logit_diff']:.1e} | {r['top5_ours'] == r['top5_llama_cpp']} | "
            f"{r['greedy_tokens_agreeing']}/{r['new_tokens']} | {r['llama_cpp_tokens_per_s']:,.0f} | "
            f"{r['llama_nb_tokens_per_s']:,.0f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"llama_cpp": llama_cpp.__version__, "rows": rows}, indent=1))
    return 0 if all(r["token_ids_equal"] and r["top5_ours"] == r["top5_llama_cpp"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
