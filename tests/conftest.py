"""Fixtures shared by the test files. The session-scoped ones are made once per run and shared by every file that
asks for them: a test must never change one (copy it first). Constants, model configurations and the subprocess
runner are in helpers.py."""

import hashlib
import sys
from pathlib import Path

import pytest

# Chapter 7's experiment (notebooks/ladder.py) is imported the way its notebook imports it: from beside the notebook.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))

# ../conftest.py points LLAMA_NB_TINYSHAKESPEARE at the shared copy of the corpus, for these tests and the notebooks.

# The command lines' files, where every test starts processes: marked slow here, not in the files themselves, so
# that `make unit` leaves them out.
SLOW_FILES = {"test_cli.py", "test_generate_cli.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def corpus_path() -> Path:
    "A verified local TinyShakespeare (session-scoped, so it resolves before any test changes the environment)."
    from llama_nb.data import tinyshakespeare_path

    return tinyshakespeare_path()


@pytest.fixture(scope="session")
def corpus_text(corpus_path) -> str:
    return corpus_path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory, corpus_text) -> Path:
    "The first 40,000 characters of the corpus as a file: enough for the `tiny` preset's CLI runs."
    path = tmp_path_factory.mktemp("corpus") / "slice.txt"
    path.write_text(corpus_text[:40_000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def splits(corpus_text) -> tuple[str, str]:
    "The whole corpus cut by characters into nanoGPT's train and validation splits (90% / 10%)."
    from llama_nb.data import train_val_split

    return train_val_split(corpus_text)


@pytest.fixture(scope="session")
def tokenizer(splits):
    "The book's tokenizer (Chapter 1): 2,048 tokens trained on the train split of the whole corpus."
    from llama_nb.tokenizer import train_tokenizer

    tok = train_tokenizer(splits[0], 2048)
    before = tok.to_str()
    yield tok
    assert tok.to_str() == before, "a test changed the session's `tokenizer`: change a copy"


@pytest.fixture(scope="session")
def text(corpus_text) -> str:
    "The first 60,000 characters of the corpus: the text of `data`."
    return corpus_text[:60_000]


def _digest(ids) -> str | None:
    return None if ids is None else hashlib.sha256(ids.numpy().tobytes()).hexdigest()


def _fingerprint(data) -> tuple:
    "What a test could change in a TokenizedData: its tokenizer, its ids, its numbers."
    return (
        data.tokenizer.to_str(),
        _digest(data.train_ids),
        _digest(data.val_ids),
        _digest(data.train_dropout_ids),
        data.val_chars,
        data.bpe_dropout,
    )


@pytest.fixture(scope="session")
def data(text):
    """`text` split 90/10 and tokenized by a 512-token tokenizer trained on its train split (`prepare_data`): the
    data every tiny training run of the tests uses (helpers.tiny_config and two_layer_config fit it)."""
    from llama_nb.batches import prepare_data

    prepared = prepare_data(text, 512)
    before = _fingerprint(prepared)
    yield prepared
    assert _fingerprint(prepared) == before, "a test changed the session's `data`: change a copy"
