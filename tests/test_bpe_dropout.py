"""BPE-dropout (Chapter 1, used by prepare_data in 6.1): exact at p = 0, lossless, seeded, the paper's rule."""

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import QUIET, tiny_config

from llama_nb.batches import prepare_data
from llama_nb.data import train_val_split
from llama_nb.tokenizer import encode_with_bpe_dropout

# `splits`, `tokenizer` (the book's, Chapter 1), `text` and `data` (its 512-token tokenizer, no dropout) are
# conftest.py's, shared with other files: never change them here.


@pytest.fixture(scope="module")
def sample(splits):
    return splits[1][:20_000]


def test_dropout_zero_is_exactly_hf_on_the_whole_corpus(tokenizer, corpus_text):
    assert (
        encode_with_bpe_dropout(tokenizer, corpus_text, 0.0, seed=0)
        == tokenizer.encode(corpus_text, add_special_tokens=False).ids
    )


def test_dropout_zero_is_exactly_hf_on_tricky_text(tokenizer):
    # Special tokens written in the text stay whole; in "lll" the leftmost of two equal merges goes first.
    text = "[BOS]To be[EOS] or [PAD][UNK] not,\n\n  to 🦙 be [BOS lll willl sssss ---- \t\r\n   \n"
    assert encode_with_bpe_dropout(tokenizer, text, 0.0, seed=0) == tokenizer.encode(text, add_special_tokens=False).ids
    assert encode_with_bpe_dropout(tokenizer, "", 0.3, seed=0) == []


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.7, 1.0])
def test_every_segmentation_decodes_to_the_text(tokenizer, sample, p):
    text = sample + " Ünïcödé, 漢字 and 🦙\r\n"
    assert tokenizer.decode(encode_with_bpe_dropout(tokenizer, text, p, seed=3)) == text


def test_dropout_one_gives_one_token_per_byte(tokenizer, sample):
    text = sample[:3000] + " 漢字 🦙"
    ids = encode_with_bpe_dropout(tokenizer, text, 1.0, seed=0)
    pieces = tokenizer.pre_tokenizer.pre_tokenize_str(text)  # byte-level: one printable character per byte
    byte_ids = [tokenizer.token_to_id(ch) for piece, _ in pieces for ch in piece]
    assert ids == byte_ids and len(ids) == len(text.encode("utf-8"))


def test_seeded_reproducible_and_seeds_differ(tokenizer, sample):
    a = encode_with_bpe_dropout(tokenizer, sample, 0.1, seed=7)
    assert a == encode_with_bpe_dropout(tokenizer, sample, 0.1, seed=7)
    assert a != encode_with_bpe_dropout(tokenizer, sample, 0.1, seed=8)
    assert a != tokenizer.encode(sample, add_special_tokens=False).ids


def test_token_count_grows_with_dropout(tokenizer, sample):
    counts = [len(encode_with_bpe_dropout(tokenizer, sample, p, seed=0)) for p in [0.0, 0.1, 0.2, 0.5, 0.9, 1.0]]
    assert counts == sorted(set(counts)), counts  # strictly increasing
    assert counts[-1] == len(sample.encode("utf-8"))


def _paper_algorithm_1(word_ids: list[int], ranks: dict, merged: dict, rng: np.random.Generator, p: float):
    "Algorithm 1 of Provilkov et al. (2020), literally: every step drops each candidate merge with probability p."
    while True:
        candidates = [(ranks[pair], i) for i, pair in enumerate(zip(word_ids, word_ids[1:])) if pair in ranks]
        kept = [c for c in candidates if rng.random() >= p]
        if not kept:
            return tuple(word_ids)
        rank, i = min(kept)  # the highest-priority merge left, leftmost among equals
        word_ids[i : i + 2] = [merged[rank]]


def test_same_distribution_as_the_papers_algorithm(tokenizer):
    "Our lazy draws (one per candidate examined, in rank order) must give the paper's distribution of segmentations."
    model = json.loads(tokenizer.to_str())["model"]
    vocab = model["vocab"]
    ranks = {(vocab[a], vocab[b]): r for r, (a, b) in enumerate(model["merges"])}
    merged = {r: vocab[a + b] for r, (a, b) in enumerate(model["merges"])}
    rng, n, p = np.random.default_rng(0), 4000, 0.2
    for word in ["Ġquestion", "ĠCoriolanus", "Ġthereof"]:  # byte-level spelling of " question", ...
        ours = encode_with_bpe_dropout(tokenizer, word.replace("Ġ", " ") * n, p, seed=1)
        ours_counts = Counter(_cut_into_words(ours, tokenizer, word))
        assert ours_counts.total() == n
        ref_counts = Counter(_paper_algorithm_1([vocab[c] for c in word], ranks, merged, rng, p) for _ in range(n))
        tv = sum(abs(ours_counts[s] - ref_counts[s]) for s in ours_counts | ref_counts) / (2 * n)
        assert tv < 0.05, (word, tv, ours_counts.most_common(3), ref_counts.most_common(3))


def _cut_into_words(ids: list[int], tokenizer, word: str) -> list[tuple[int, ...]]:
    "Cut the ids of `word` repeated n times back into the n segmentations of `word`."
    out, current, spelled = [], [], ""
    for i in ids:
        current.append(i)
        spelled += tokenizer.id_to_token(i)
        if spelled == word:
            out.append(tuple(current))
            current, spelled = [], ""
    assert not current
    return out


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dropout": -0.1}, r"dropout must be a number in \[0, 1\] \(a probability\)"),
        ({"dropout": 1.5}, r"dropout must be a number in \[0, 1\] \(a probability\)"),
        ({"dropout": math.nan}, r"dropout must be a number in \[0, 1\]"),
        ({"dropout": True}, "dropout must be"),
        ({"dropout": "0.1"}, "dropout must be"),
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"seed": 1.0}, "seed must be an int"),
        ({"seed": False}, "seed must be an int"),
        ({"text": b"bytes"}, "text must be a str"),
    ],
)
def test_bad_arguments(tokenizer, kwargs, match):
    args = {"tokenizer": tokenizer, "text": "To be", "dropout": 0.1, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=match):
        encode_with_bpe_dropout(**args)


def test_rejects_a_tokenizer_that_is_not_bpe():
    from tokenizers import Tokenizer, models

    with pytest.raises(ValueError, match="needs a BPE tokenizer.*WordLevel"):
        encode_with_bpe_dropout(Tokenizer(models.WordLevel({"a": 0}, unk_token="a")), "a", 0.1, seed=0)
    with pytest.raises(ValueError, match="must be a tokenizers.Tokenizer"):
        encode_with_bpe_dropout("gpt2", "a", 0.1, seed=0)
    char_bpe = Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2}, [("a", "b")]))
    assert encode_with_bpe_dropout(char_bpe, "abab", 0.0, seed=0) == char_bpe.encode("abab").ids == [2, 2]
    with pytest.raises(ValueError, match="'c' is not in the vocabulary"):
        encode_with_bpe_dropout(char_bpe, "abc", 0.0, seed=0)


# prepare_data (section 6.1): the augmented stream beside unchanged deterministic splits.


def test_prepare_data_with_bpe_dropout(text, data):
    copies, p = 3, 0.1
    aug = prepare_data(text, 512, bpe_dropout=p, dropout_copies=copies, seed=5)
    assert data.train_dropout_ids is None
    assert aug.tokenizer.to_str() == data.tokenizer.to_str()
    assert torch.equal(aug.train_ids, data.train_ids) and torch.equal(aug.val_ids, data.val_ids)
    assert aug.val_chars == data.val_chars
    ids = aug.train_dropout_ids
    assert ids.dtype == torch.long and ids.dim() == 1
    n = len(data.train_ids)
    assert copies * n < len(ids) < copies * n * 1.3
    train_text, _ = train_val_split(text)
    assert aug.tokenizer.decode(ids.tolist()) == train_text * copies
    expected = [i for c in range(copies) for i in encode_with_bpe_dropout(aug.tokenizer, train_text, p, seed=5 + c)]
    assert ids.tolist() == expected  # copy c uses seed + c: each copy is its own segmentation
    again = prepare_data(text, 512, tokenizer=data.tokenizer, bpe_dropout=p, dropout_copies=copies, seed=5)
    assert torch.equal(again.train_dropout_ids, ids)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bpe_dropout": 1.0}, r"bpe_dropout must be a number in \[0, 1\)"),
        ({"bpe_dropout": -0.1}, "bpe_dropout must be a number in"),
        ({"bpe_dropout": math.nan}, "bpe_dropout must be a number in"),
        ({"bpe_dropout": True}, "bpe_dropout must be a number in"),
        ({"dropout_copies": 0}, "dropout_copies must be an int >= 1"),
        ({"dropout_copies": 2.0}, "dropout_copies must be an int"),
        ({"dropout_copies": True}, "dropout_copies must be an int"),
        ({"seed": -1}, "seed must be an int >= 0"),
    ],
)
def test_prepare_data_rejects_bad_augmentation_arguments(text, data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        prepare_data(text, 512, tokenizer=data.tokenizer, **({"bpe_dropout": 0.1} | kwargs))


# The training loop (section 6.5): TrainConfig.bpe_dropout makes the copies and draws every training window from them.


def loop_config(**kw):
    from llama_nb.config import TrainConfig

    base = dict(
        batch_size=4,
        seq_len=16,
        max_steps=6,
        warmup_steps=1,
        eval_interval=3,
        sample_tokens=0,
        device="cpu",
        bpe_dropout=0.1,
    )
    return TrainConfig(**{**base, **kw})


def test_with_bpe_dropout_equals_prepare_data_and_zero_removes_the_copies(text, data):
    from llama_nb.batches import with_bpe_dropout

    made = with_bpe_dropout(data, 0.1, dropout_copies=2, seed=3)  # the train text decoded from train_ids
    direct = prepare_data(text, 512, tokenizer=data.tokenizer, bpe_dropout=0.1, dropout_copies=2, seed=3)
    assert torch.equal(made.train_dropout_ids, direct.train_dropout_ids) and made.bpe_dropout == 0.1
    assert with_bpe_dropout(made, 0.0).train_dropout_ids is None and data.bpe_dropout == 0.0


def test_the_loop_trains_on_the_copies_and_evaluates_on_the_deterministic_split(monkeypatch, data):
    import llama_nb.loop as loop_module
    from llama_nb.batches import evaluate, get_batch, with_bpe_dropout

    streams = []

    def recording_get_batch(ids, *args, **kwargs):
        streams.append(ids)
        return get_batch(ids, *args, **kwargs)

    monkeypatch.setattr(loop_module, "get_batch", recording_get_batch)
    tc = loop_config()
    result = loop_module.train(tiny_config(), tc, data, **QUIET)
    expected = with_bpe_dropout(data, 0.1, seed=tc.seed).train_dropout_ids
    assert len(streams) == 6 and all(torch.equal(s, expected) for s in streams)  # every window from the copies
    assert result.final == evaluate(result.model, data.val_ids, data.val_chars, 16)  # val: deterministic ids


def test_prepared_copies_are_reused_and_resume_checks_the_setting(monkeypatch, tmp_path, data):
    import llama_nb.loop as loop_module
    from llama_nb.batches import with_bpe_dropout
    from llama_nb.checkpoint import CheckpointError

    tc = loop_config()
    prepared = with_bpe_dropout(data, 0.1, seed=tc.seed)
    straight = loop_module.train(tiny_config(), tc, prepared, **QUIET)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the copies were made again")

    monkeypatch.setattr(loop_module, "with_bpe_dropout", must_not_run)
    loop_module.train(tiny_config(), tc, prepared, out_dir=tmp_path, stop_at=4, **QUIET)
    resumed = loop_module.train(tiny_config(), tc, prepared, out_dir=tmp_path, resume=True, **QUIET)
    assert resumed.final == straight.final  # exact, with the augmented stream
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=r"bpe_dropout=0.1 \(now 0.2\)"):
        loop_module.train(tiny_config(), loop_config(bpe_dropout=0.2), data, out_dir=tmp_path, resume=True, **QUIET)


@pytest.mark.parametrize("value", [1.0, -0.1, math.nan, True])
def test_train_config_rejects_a_bad_bpe_dropout(value):
    with pytest.raises(ValueError, match="bpe_dropout"):
        loop_config(bpe_dropout=value)


def test_cli_takes_bpe_dropout():
    from llama_nb.train_cli import build_train_parser, resolve_configs

    _, tc = resolve_configs(build_train_parser().parse_args(["--preset", "tiny", "--bpe-dropout", "0.1"]))
    assert tc.bpe_dropout == 0.1
