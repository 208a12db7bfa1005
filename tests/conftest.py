from pathlib import Path

import pytest

# ../conftest.py points LLAMA_NB_TINYSHAKESPEARE at the shared copy of the corpus, for these tests and the notebooks.


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
