"""The book's diagrams (notebooks/figures/make_figures.py): committed copies are current, references resolve, and
what the figures show is what the code does."""

import base64
import html
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES_DIR = ROOT / "notebooks" / "figures"
sys.path.insert(0, str(FIGURES_DIR))  # the script's modules: make_figures.py and its neighbours
import catalog  # noqa: E402
import facts  # noqa: E402
import make_figures  # noqa: E402, F401  (the entry point imports)
import notebook_cells as cells  # noqa: E402
import rendering  # noqa: E402
import style  # noqa: E402

REGENERATE = "run `python notebooks/figures/make_figures.py` and commit what it writes"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
INTRO = ROOT / "book" / "intro.md"


@pytest.fixture(scope="module")
def rendered() -> dict:
    return {fig.name: rendering.render(fig) for fig in catalog.FIGURES}


def figure_cells() -> list[tuple[str, re.Match]]:
    "(notebook name, marker match) for every figure cell of every notebook."
    return [
        (path.name, m)
        for path in NOTEBOOKS
        for _, m in cells.figure_cells(json.loads(path.read_text(encoding="utf-8")))
    ]


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_svgs_are_current(rendered):
    "Every committed SVG is byte for byte what the script draws now (so it is also reproducible)."
    stale = [
        name
        for name, r in rendered.items()
        if not (FIGURES_DIR / f"{name}.svg").is_file() or (FIGURES_DIR / f"{name}.svg").read_bytes() != r.svg
    ]
    assert not stale, f"stale or missing SVGs: {stale}; {REGENERATE}"
    extra = sorted({p.stem for p in FIGURES_DIR.glob("*.svg")} - set(rendered))
    assert not extra, f"SVGs that make_figures.py no longer draws: {extra}; delete them"


def test_svgs_need_no_fonts_and_no_network(rendered):
    "Text is drawn as paths and nothing is fetched: the figures look the same offline, on any machine."
    for name, r in rendered.items():
        svg = r.svg.decode()
        assert "<text" not in svg and "font-family" not in svg, f"{name}: SVG text depends on the reader's fonts"
        assert not re.search(r'(href|src)="https?:', svg), f"{name}: the SVG loads something from the network"


def test_notebook_figures_are_current(rendered):
    "Each figure cell has the current stamp, alt text and width, and its PNG is the figure."
    cells = figure_cells()
    for notebook, m in cells:
        name = m["name"]
        assert name in rendered, f"{notebook}: figure cell for unknown figure {name!r}"
        r = rendered[name]
        assert m["stamp"] == r.stamp, f"{notebook}: the {name} figure is stale; {REGENERATE}"
        tag = m["img"]
        alt = re.search(r'alt="([^"]*)"', tag)[1]
        assert alt == html.escape(catalog.BY_NAME[name].alt_text(), quote=True), f"{notebook}: {name} alt text"
        assert f'width="{rendering.css_width(r.svg)}"' in tag, f"{notebook}: {name} width"
        embedded = decode_png(base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', tag)[1]))
        fresh = decode_png(r.png)
        assert embedded.shape == fresh.shape, f"{notebook}: {name} has the wrong size {embedded.shape}"
        # Identical with the pinned Pillow; another Pillow may pick a slightly different palette.
        assert np.abs(embedded - fresh).mean() < 2.0, f"{notebook}: the embedded {name} image is another picture"


def test_references_resolve():
    "Every figure a page or a notebook points at exists; the intro shows the whole model."
    pattern = re.compile(r"figures/([A-Za-z0-9_\-]+)\.svg")
    sources = {INTRO.name: INTRO.read_text(encoding="utf-8")}
    sources.update(
        {
            p.name: "".join(
                "".join(c["source"])
                for c in json.loads(p.read_text(encoding="utf-8"))["cells"]
                if c["cell_type"] == "markdown"
            )
            for p in NOTEBOOKS
        }
    )
    for where, text in sources.items():
        for name in pattern.findall(text):
            assert (FIGURES_DIR / f"{name}.svg").is_file(), f"{where} shows figures/{name}.svg, which does not exist"
    assert "](../notebooks/figures/llama_model.svg)" in sources[INTRO.name], "the intro must show the whole model"
    alt = re.search(r"!\[([^\]]*)\]\(\.\./notebooks/figures/llama_model\.svg\)", sources[INTRO.name])[1]
    assert len(alt) > 100, "the intro's figure needs a real alt text"


def test_every_figure_is_shown():
    "No figure is drawn for nobody: each appears in a notebook or in the intro."
    shown = {m["name"] for _, m in figure_cells()} | set(re.findall(r"figures/(\w+)\.svg", INTRO.read_text()))
    missing = sorted({fig.name for fig in catalog.FIGURES} - shown)
    assert not missing, f"figures that no notebook or page shows: {missing}"


def test_refresh_rewrites_only_stale_cells(rendered):
    "A stale figure cell is rewritten to the current one; everything else in the notebook stays as it was."
    path = next(p for p in NOTEBOOKS if any(True for _ in cells.figure_cells(json.loads(p.read_text()))))
    original = json.loads(path.read_text(encoding="utf-8"))
    assert cells.dump_notebook(original) == path.read_text(encoding="utf-8"), "the notebook's format is not kept"
    assert not cells.refresh_notebook(json.loads(json.dumps(original)), rendered)
    stale = json.loads(json.dumps(original))
    cell, m = cells.figure_cells(stale)[0]
    text = "".join(cell["source"]).replace(m["stamp"], "0" * 16).replace("base64,", "base64,AAAA")
    cell["source"] = text.splitlines(keepends=True)
    assert cells.refresh_notebook(stale, rendered)
    assert stale == original


def test_figures_show_the_code():
    "What the figures draw is measured from llama_nb, not typed: check the facts against the code's behaviour."
    f = facts.facts()
    assert f["idx"] == "(B, T)"
    assert f["model"]["tok_embeddings"] == f["model"]["layers.0"] == "(B, T, dim)"
    assert f["model"]["layers.0.feed_forward.w1"] == "(B, T, hidden_dim)"
    assert f["model"]["output"] == "(B, T, vocab_size)"
    a = f["attention"]
    assert (a["q"], a["k"]) == ("(B, n_heads, T, head_dim)", "(B, n_kv_heads, T, head_dim)")
    assert a["k_cached"] == "(B, n_kv_heads, S, head_dim)" and a["y"] == "(B, n_heads, T, head_dim)"
    assert f["cache_shape"] == "(n_layers, B, n_kv_heads, max_seq_len, head_dim)"
    assert f["gqa"]["GQA"] == (8, 2, [0, 0, 0, 0, 1, 1, 1, 1]) and f["gqa"]["MQA"][2] == [0] * 8
    assert f["rope"]["partner"] == [4, 5, 6, 7, 0, 1, 2, 3]  # split-half pairs
    assert f["swiglu"]["llama7b"] == (4096, 11008)
    assert [(s.start, s.stop) for s in f["ddp"]["shares"]] == [(0, 2), (2, 4), (4, 6), (6, 8)]


def test_a_renamed_name_stops_the_script(monkeypatch):
    "A name the figures print that the code does not have is an error, not a silently outdated figure."
    monkeypatch.setattr(facts, "DRAWN_NAMES", [*facts.DRAWN_NAMES, "KVCache.append"])
    with pytest.raises(RuntimeError, match="KVCache.append"):
        facts._check_names()
    with pytest.raises(RuntimeError, match="none of"):
        facts._symbolic((2, 999), facts.SIZES)


def test_layout_check_finds_bad_text():
    "The layout check catches text that overlaps, runs off the figure, or is too small to read on a phone."
    import matplotlib.pyplot as plt

    with plt.rc_context(style.RC):
        c = style.Canvas(1.0)
        try:
            c.text(1.0, 0.5, "one label")
            assert rendering.layout_problems(c) == []
            c.text(1.05, 0.5, "another label")
            c.text(style.WIDTH - 0.1, 0.5, "off the edge", ha="left")
            c.text(3.0, 0.8, "tiny", size=6)
            problems = " | ".join(rendering.layout_problems(c))
        finally:
            plt.close(c.fig)
    assert "overlap" in problems and "runs off" in problems and "smaller than" in problems
