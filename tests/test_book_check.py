"""tests/book_check.py must catch what a reader would see wrong: each defect is planted on its own page of a small
site (served and opened in headless Chromium, MathJax loaded offline like the book's), and a clean page passes."""

import base64
import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import book_check  # noqa: E402

pytestmark = pytest.mark.slow  # a headless Chromium: `make unit` starts no browser, `make test` runs these

HEAD = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body {{ margin: 0; font-family: sans-serif; }} article {{ width: 600px; padding: 0 20px; }}
pre {{ font: 13px monospace; padding: 8px; overflow-x: auto; white-space: pre; }}</style>
<script>window.MathJax = {{"options": {{"processHtmlClass": "math"}}}}</script>
<script defer src="_static/mathjax/tex-chtml.js"></script></head>
<body><article class="bd-article"><section id="top"><h1>{title}</h1>{body}</section></article></body></html>"""

# A clean page: inline and display math (with an underscore written the right way), an image, a link to an
# anchor on another page, a code cell and an output that fit, a table that fits.
GOOD = r"""
<p>Inline <span class="math notranslate nohighlight">\(h = \tfrac{2}{3}\cdot 4d\)</span> and a name in code font.</p>
<div class="math notranslate nohighlight">
\[h = \mathtt{multiple\_of}\cdot\Big\lceil \tfrac{h_1}{\mathtt{multiple\_of}} \Big\rceil\]</div>
<p><img src="dot.png" alt="a dot"> <a href="other.html#target">see the target</a> and <a href="#top">the top</a>.</p>
<div class="cell"><div class="cell_input"><div class="highlight"><pre>print("short line")</pre></div></div>
<div class="cell_output"><div class="output"><div class="highlight"><pre>short line
</pre></div></div></div></div>
<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>
"""

PLANTED = {
    "broken_link": ('<p><a href="missing.html">a page that does not exist</a></p>', "link", "no such file"),
    "broken_anchor": ('<p><a href="other.html#nowhere">an anchor that does not exist</a></p>', "link", "broken anchor"),
    "missing_image": ('<p><img src="nope.png" alt="missing"></p>', "image", "did not load"),
    "text_underscore": (
        r'<div class="math notranslate nohighlight">\[\text{ffn\_dim\_multiplier}\cdot h\]</div>',
        "math",
        "literally",
    ),
    "tex_error": (r'<p><span class="math notranslate nohighlight">\(x^2^3\)</span></p>', "math", "TeX error"),
    "unknown_command": (
        r'<p><span class="math notranslate nohighlight">\(\frac{1}{2}\undefinedmacro\)</span></p>',
        "math",
        "unknown TeX command",
    ),
    "raw_latex": (r"<p>The gain \alpha was never typeset.</p>", "math", "raw LaTeX"),
    "wide_formula": (
        '<div class="math notranslate nohighlight">\\[' + " + ".join(f"x_{{{i}}}" for i in range(60)) + "\\]</div>",
        "math",
        "display formula",
    ),
    "long_code_line": (
        '<div class="cell"><div class="cell_input"><div class="highlight"><pre>x = "'
        + "a" * 150
        + '"</pre></div></div></div>',
        "code",
        "wider than the box",
    ),
    "long_output_line": (
        '<div class="cell_output"><div class="output"><div class="highlight">'
        '<pre style="white-space: pre-wrap">' + "word " * 40 + "</pre></div></div></div>",
        "output",
        "wider than the box",
    ),
    "progress_bar": (
        '<div class="cell_output"><div class="output"><div class="highlight"><pre>'
        + "".join(f"{p:3d}%|#   | {p}/100 [00:01]\n" for p in range(0, 100, 20))
        + "</pre></div></div></div>",
        "output",
        "progress-bar frames",
    ),
    "wide_table": (
        "<table><tr>" + "".join(f"<td>column_number_{i}</td>" for i in range(20)) + "</tr></table>",
        "table",
        "table",
    ),
    "js_error": ("<script>undefinedFunction()</script><p>text</p>", "console", "console"),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    mathjax = Path(importlib.import_module("sphinx-mathjax-offline").__file__).parent / "static" / "mathjax"
    assert (mathjax / "tex-chtml.js").is_file(), f"MathJax not found at {mathjax}"
    (root / "_static").mkdir()
    (root / "_static" / "mathjax").symlink_to(mathjax, target_is_directory=True)
    (root / "dot.png").write_bytes(
        base64.b64decode(  # a 1x1 PNG
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
        )
    )
    (root / "index.html").write_text(HEAD.format(title="Good", body=GOOD))
    (root / "other.html").write_text(HEAD.format(title="Other", body='<p id="target">the target</p>'))
    for name, (body, _, _) in PLANTED.items():
        (root / f"{name}.html").write_text(HEAD.format(title=name, body=body))
    return root


@pytest.fixture(scope="module")
def results(site):
    if not (
        book_check.find_executable("BOOK_CHECK_BROWSER", book_check.BROWSERS, ("chromium", "google-chrome"))
        and book_check.find_executable("BOOK_CHECK_DRIVER", book_check.DRIVERS, ("chromedriver",))
    ):
        pytest.skip("no Chromium/chromedriver here (apt-get install chromium chromium-driver); CI installs them")
    pages = ["index.html", "other.html"] + [f"{name}.html" for name in PLANTED]
    failures, _ = book_check.run(site, None, 1366, 900, (), pages=pages)
    by_page: dict[str, list] = {}
    for f in failures:
        by_page.setdefault(f.page, []).append(f)
    return by_page


def test_a_clean_page_passes(results):
    assert "index.html" not in results, "\n".join(map(str, results["index.html"]))
    assert "other.html" not in results, "\n".join(map(str, results["other.html"]))


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_each_planted_defect_is_caught(results, name):
    _, kind, words = PLANTED[name]
    found = results.get(f"{name}.html", [])
    assert any(f.kind == kind and words in f"{f.what} {f.snippet}" for f in found), (
        f"{name}: expected a [{kind}] failure mentioning {words!r}, got:\n" + "\n".join(map(str, found))
    )
