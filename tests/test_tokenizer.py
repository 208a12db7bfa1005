"""llama_nb.tokenizer: the by-hand BPE, the byte-level tokenizer, save/load, and transformers' view of it."""

import pytest

from llama_nb.tokenizer import (
    BOS_ID,
    EOS_ID,
    MIN_VOCAB_SIZE,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    TokenizerError,
    load_tokenizer,
    save_tokenizer,
    toy_bpe,
    toy_bpe_encode,
    train_tokenizer,
)

# `splits` and `tokenizer` (the book's, 2,048 tokens trained on the train split) are conftest.py's.


def test_toy_bpe_learns_the_classic_merges():
    corpus = "low " * 5 + "lower " * 2 + "newest " * 6 + "widest " * 3
    merges = toy_bpe(corpus, 4)
    assert [pair for pair, _ in merges] == [("e", "s"), ("es", "t"), ("l", "o"), ("lo", "w")]
    assert [count for _, count in merges] == [9, 9, 7, 7]
    assert toy_bpe_encode("lowest", merges) == ("low", "est")


def test_toy_bpe_stops_when_nothing_is_left_to_merge():
    assert len(toy_bpe("ab ab", 10)) == 1
    with pytest.raises(ValueError, match="n_merges"):
        toy_bpe("ab", -1)


def test_special_token_ids(tokenizer):
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [UNK_ID, PAD_ID, BOS_ID, EOS_ID] == [0, 1, 2, 3]
    ids = tokenizer.encode("To be").ids
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert BOS_ID not in tokenizer.encode("To be", add_special_tokens=False).ids


def test_lossless_on_the_whole_corpus(tokenizer, corpus_text):
    ids = tokenizer.encode(corpus_text, add_special_tokens=False).ids
    assert tokenizer.decode(ids) == corpus_text
    assert UNK_ID not in ids


def test_any_unicode_round_trips(tokenizer):
    text = "Ünïcödé, 漢字, emoji 🦙 and\ttabs\r\n"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_trained_on_train_split_only(splits):
    # A word that appears only in the validation split must not become a single token.
    train, val = splits
    val_only = sorted(w for w in set(val.split()) if w.isalpha() and len(w) > 6 and w not in train)
    assert val_only, "expected some validation-only words"
    tok = train_tokenizer(train, 4096)
    assert all(len(tok.encode(" " + w, add_special_tokens=False).ids) > 1 for w in val_only)


def test_deterministic_training(splits):
    assert train_tokenizer(splits[0][:200_000], 600).to_str() == train_tokenizer(splits[0][:200_000], 600).to_str()


def test_save_load_identical_ids(tokenizer, splits, tmp_path):
    path = save_tokenizer(tokenizer, tmp_path / "sub" / "tokenizer.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokenizer.json"]  # no temp file left
    sample = splits[1][:5000]
    assert load_tokenizer(path).encode(sample).ids == tokenizer.encode(sample).ids


def test_transformers_loads_it(tokenizer, splits, tmp_path):
    from transformers import PreTrainedTokenizerFast

    path = save_tokenizer(tokenizer, tmp_path / "tokenizer.json")
    hf = PreTrainedTokenizerFast(
        tokenizer_file=str(path), bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]", pad_token="[PAD]"
    )
    sample = splits[1][:3000]
    assert hf(sample)["input_ids"] == tokenizer.encode(sample).ids
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id, hf.unk_token_id) == (BOS_ID, EOS_ID, PAD_ID, UNK_ID)


@pytest.mark.parametrize("size", [0, 100, MIN_VOCAB_SIZE - 1, 1000.0, "2048"])
def test_bad_vocab_size(size):
    with pytest.raises(ValueError, match="vocab_size must be an int"):
        train_tokenizer("some text", size)


def test_empty_text():
    with pytest.raises(ValueError, match="empty"):
        train_tokenizer("", 300)


def test_load_missing_file(tmp_path):
    with pytest.raises(TokenizerError, match="No tokenizer file"):
        load_tokenizer(tmp_path / "nope.json")


def test_load_truncated_file(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer.to_str()[:500])
    with pytest.raises(TokenizerError, match="truncated or corrupt"):
        load_tokenizer(path)


def test_load_foreign_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models

    foreign = Tokenizer(models.WordLevel({"hello": 0, "[UNK]": 1}, unk_token="[UNK]"))
    path = tmp_path / "tokenizer.json"
    foreign.save(str(path))
    with pytest.raises(TokenizerError, match="expects"):
        load_tokenizer(path)
