"""The data module: the real download code against a local HTTP server, the cache, the env var, the split."""

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from llama_nb import data
from llama_nb.data import DataError, download_file, tinyshakespeare_path, train_val_split

GOOD = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 200
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/good":
            body, length = GOOD, len(GOOD)
        elif self.path == "/corrupt":
            body, length = GOOD[:-1] + b"?", len(GOOD)  # same length, one byte changed
        elif self.path == "/truncated":
            body, length = GOOD[: len(GOOD) // 2], len(GOOD)  # promises more than it sends
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    monkeypatch.setenv(data.CACHE_ENV_VAR, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_good_file(server, tmp_path):
    dest = download_file(f"{server}/good", tmp_path / "out" / "corpus.txt", GOOD_SHA)
    assert dest.read_bytes() == GOOD
    assert _leftovers(tmp_path / "out") == ["corpus.txt"]  # no temporary file left behind


def test_corrupt_download_is_rejected_and_leaves_nothing(server, tmp_path):
    with pytest.raises(DataError, match="SHA-256.*Nothing was written"):
        download_file(f"{server}/corrupt", tmp_path / "corpus.txt", GOOD_SHA)
    assert _leftovers(tmp_path) == []


def test_truncated_download_is_rejected_and_leaves_nothing(server, tmp_path):
    with pytest.raises(DataError, match="cut short"):
        download_file(f"{server}/truncated", tmp_path / "corpus.txt", GOOD_SHA)
    assert _leftovers(tmp_path) == []


def test_failed_download_keeps_existing_good_file(server, tmp_path):
    dest = download_file(f"{server}/good", tmp_path / "corpus.txt", GOOD_SHA)
    with pytest.raises(DataError):
        download_file(f"{server}/truncated", dest, GOOD_SHA)
    assert dest.read_bytes() == GOOD and _leftovers(tmp_path) == ["corpus.txt"]


def test_no_network_error_says_what_to_do(tmp_path):
    # Port 9 on loopback ("discard") has nothing listening here: the connection is refused at once.
    with pytest.raises(DataError, match="Check your internet connection.*LLAMA_NB_TINYSHAKESPEARE"):
        download_file("http://127.0.0.1:9/input.txt", tmp_path / "corpus.txt", GOOD_SHA, timeout=5)
    assert _leftovers(tmp_path) == []


def test_http_error_is_clear(server, tmp_path):
    with pytest.raises(DataError, match="Could not download"):
        download_file(f"{server}/missing", tmp_path / "corpus.txt", GOOD_SHA)


def test_tinyshakespeare_download_goes_through_the_cache(server, cache, corpus_path, monkeypatch):
    real = corpus_path.read_bytes()

    class RealFileHandler(_Handler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(real)))
            self.end_headers()
            self.wfile.write(real)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RealFileHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/input.txt"
        path = tinyshakespeare_path(url=url)
        assert path == cache / "tinyshakespeare.txt" and path.read_bytes() == real
        # A second call uses the verified cache, without the network.
        assert tinyshakespeare_path(url="http://127.0.0.1:9/unreachable") == path
        # A damaged cache is replaced by a fresh, verified download.
        path.write_bytes(b"damaged")
        assert tinyshakespeare_path(url=url).read_bytes() == real
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_corrupt_upstream_never_reaches_the_cache(server, cache):
    with pytest.raises(DataError, match="SHA-256"):
        tinyshakespeare_path(url=f"{server}/good")  # right length, wrong bytes for TinyShakespeare
    assert _leftovers(cache) == []


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("nope.txt", None, "does not exist.*unset LLAMA_NB_TINYSHAKESPEARE"),
        ("empty.txt", "", "is empty"),
        ("wrong.txt", "not shakespeare", "unmodified copy"),
    ],
)
def test_env_var_pointing_at_a_bad_file_is_a_clear_error(monkeypatch, tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:  # None: the file does not exist
        path.write_text(content)
    monkeypatch.setenv(data.DATA_ENV_VAR, str(path))
    with pytest.raises(DataError, match=match):
        tinyshakespeare_path()


def test_local_copy_and_split(corpus_path):
    text = data.load_tinyshakespeare()
    assert len(text) == 1_115_394 and text.startswith("First Citizen:")
    train, val = train_val_split(text)
    assert train + val == text
    assert len(train) == 1_003_854 and len(val) == 111_540  # nanoGPT's split, by characters


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 1.5])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"train_fraction must be a number in \(0, 1\)"):
        train_val_split("abc", fraction)


def test_split_rejects_empty_text():
    with pytest.raises(ValueError, match="empty"):
        train_val_split("")
