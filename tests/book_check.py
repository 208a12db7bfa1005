"""Read every page of the built book in a real browser, as a reader would, and fail on what the reader would see wrong.

    python tests/book_check.py [book/_build/html] [--out book/_build/book-check] [--width 1366] [--height 900]

`make check-book` builds the book and runs this; `make test` runs `make check-book`. The pages are served from
127.0.0.1 and opened in headless Chromium (the system browser, driven by Selenium through chromedriver), at a desktop
viewport of 1366 x 900 CSS pixels: the most common laptop screen. The layout in book/_static/custom.css gives code its
120 columns (ruff's line length) from 1280 px up, so at 1366 px a few columns to spare absorb font differences between
machines; `--width` checks another width. On every page it checks:

- math: MathJax loaded (offline, from the book's own _static/) and typeset every formula; no formula has a TeX error
  (`mjx-merror`); no formula shows a literal backslash (a `\\_` inside `\\text{}` is printed as `\\_` by MathJax);
  no raw LaTeX is left in the prose; no formula is wider than its column;
- images: every <img> loaded (naturalWidth > 0), every <object>/<embed>/SVG <image> file exists;
- links: every internal link points at a file of the book, and its #fragment at an id on that page;
- width: no code line, output line, table or formula is wider than its box, and the page never scrolls sideways.
  Code and outputs are measured as if unwrapped: an output that only fits because the browser wrapped it (a table,
  a progress bar, a traceback) fails too. The CSS wraps outputs and lets tables and formulas scroll inside their
  box, but only as a fallback for narrower screens: at the checked viewport nothing may need it;
- the page itself: no JavaScript error or failed request in the console, nothing loaded from outside the book (it
  must work offline), no more than 3 stored progress-bar frames in one output.

Failures are printed page by page (page#section [kind] what, and a snippet) and the script exits 1 if there are any.
Full-page screenshots of a few pages and a copy of the report go to --out, for CI artifacts.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HTML = ROOT / "book" / "_build" / "html"
DEFAULT_OUT = ROOT / "book" / "_build" / "book-check"
DEFAULT_SCREENSHOTS = ("book/intro.html", "notebooks/04_swiglu.html", "notebooks/05c_model.html")
BROWSERS = (
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
)
DRIVERS = (
    "/usr/bin/chromedriver",
    "/usr/lib/chromium/chromedriver",
    "/opt/homebrew/bin/chromedriver",
    "/usr/local/bin/chromedriver",
)
MAX_SCREENSHOT_HEIGHT = 30000  # CSS px; the longest chapter is shorter, a cap keeps artifacts bounded

# Runs in the page once it has loaded. Resolves to a dict of failures, statistics, links and ids (see inspect_page).
INSPECT_JS = r"""
const done = arguments[arguments.length - 1];
const MAX_PROGRESS_FRAMES = 3;
(async () => {
  const failures = [];
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const snippet = (s, n = 110) => {
    s = (s || '').replace(/\s+/g, ' ').trim();
    return s.length > n ? s.slice(0, n - 1) + '…' : s;
  };
  // Where a reader finds the element: the id of the innermost section around it.
  const where = (el) => {
    const s = el && el.closest && el.closest('section[id], div[id].section');
    return s ? '#' + s.id : '';
  };
  const fail = (kind, el, what, text) => failures.push({kind, where: where(el), what, snippet: snippet(text)});
  const sleep = (ms) => new Promise(r => setTimeout(r, ms));

  // 1. Wait for MathJax (loaded with `defer` from _static/mathjax) to finish typesetting, for images and for fonts.
  const mathEls = Array.from(document.querySelectorAll('.math'));
  if (mathEls.length) {
    for (let i = 0; i < 200 && !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++) await sleep(50);
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      try { await MathJax.startup.promise; } catch (e) { fail('math', null, 'MathJax failed', String(e)); }
    } else {
      fail('math', null, 'MathJax did not load (it must load offline from _static/mathjax)',
           mathEls.length + ' formulas');
    }
  }
  const imgs = Array.from(document.images);
  imgs.forEach(img => { if (img.loading === 'lazy') img.loading = 'eager'; });
  await Promise.all(imgs.map(img => img.complete ? null :
    new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); setTimeout(r, 10000); })));
  await document.fonts.ready;

  // 2. Math: every formula typeset, no TeX error, no literal backslash, nothing wider than its column.
  for (const el of mathEls) {
    if (!el.querySelector('mjx-container') && !(el.tagName === 'MJX-CONTAINER')) {
      fail('math', el, 'formula not typeset', el.textContent);
    }
  }
  const items = (window.MathJax && MathJax.startup && MathJax.startup.document)
    ? Array.from(MathJax.startup.document.math) : [];
  let nMath = 0;
  for (const item of items) {
    const box = item.typesetRoot;
    if (!box || !box.isConnected) continue;
    nMath++;
    const tex = item.math;
    const err = box.querySelector('mjx-merror, [data-mjx-error]');
    if (err) fail('math', box, 'TeX error: ' + (err.getAttribute('data-mjx-error') || err.textContent), tex);
    let mml = '';
    try { mml = MathJax.startup.toMML(item.root); } catch (e) { mml = ''; }
    // Text content of the MathML (tags stripped): a backslash there was printed literally, e.g. \_ inside \text{}.
    const shown = mml.replace(/<[^>]*>/g, ' ');
    const lit = shown.match(/\\(?:[A-Za-z]+|.)/);
    if (lit) {
      const why = /^\\[A-Za-z]/.test(lit[0]) ? `unknown TeX command ${lit[0]} shown as text`
        : `formula shows "${lit[0]}" literally `
          + '(MathJax prints \\_ as is inside \\text{}: write \\mathtt{a\\_b} in math mode)';
      fail('math', box, why, tex);
    }
    const inner = box.querySelector('mjx-math');
    if (inner) {
      const need = inner.getBoundingClientRect().width;
      if (item.display) {
        if (need > box.clientWidth + 1) {
          fail('math', box, `display formula ${Math.round(need)} px wide in a ${box.clientWidth} px column`, tex);
        }
      } else {
        const block = box.closest('p, li, td, th, dd, div, blockquote') || article;
        const right = block.getBoundingClientRect().right - parseFloat(getComputedStyle(block).paddingRight);
        if (box.getBoundingClientRect().right > right + 1) {
          fail('math', box, 'inline formula runs past the right edge of its paragraph', tex);
        }
      }
    }
  }
  // Raw LaTeX left in the prose (math that was not recognised as math).
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT, {acceptNode: (n) =>
    n.parentElement.closest('pre, code, kbd, samp, script, style, mjx-container, .math, .MathJax, .highlight')
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const m = n.nodeValue.match(/\\(?:[A-Za-z]+\b|[_{}])|\$\$/);
    if (m) fail('math', n.parentElement, `raw LaTeX "${m[0]}" in the text (not typeset)`, n.nodeValue);
  }

  // 3. Images.
  for (const img of imgs) {
    if (!(img.complete && img.naturalWidth > 0)) fail('image', img, 'image did not load', img.getAttribute('src'));
  }
  const objects = Array.from(document.querySelectorAll('object[data], embed[src], svg image'));
  for (const o of objects) {
    const url = o.getAttribute('data') || o.getAttribute('src') || o.getAttribute('href')
      || o.getAttribute('xlink:href');
    if (!url || url.startsWith('data:')) continue;
    try {
      const r = await fetch(new URL(url, location.href), {method: 'HEAD'});
      if (!r.ok) fail('image', o, `${o.tagName.toLowerCase()} file missing (HTTP ${r.status})`, url);
    } catch (e) { fail('image', o, `${o.tagName.toLowerCase()} file could not be fetched`, url); }
  }

  // 4. Widths. Code and outputs are measured unwrapped: white-space is set to `pre` for the measurement.
  const stats = {code_lines: 0, code_over: 0, output_lines: 0, output_over: 0, boxes_over: 0};
  const ctx = document.createElement('canvas').getContext('2d');
  for (const pre of Array.from(article.querySelectorAll('pre'))) {
    if (!pre.offsetParent) continue;  // hidden (e.g. a collapsed cell)
    const kind = pre.closest('.cell_output, .output') ? 'output' : 'code';
    const cs = getComputedStyle(pre);
    const saved = pre.style.whiteSpace;
    pre.style.whiteSpace = 'pre';
    const over = pre.scrollWidth > pre.clientWidth + 1;
    ctx.font = cs.font;
    const avail = pre.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    const ch = ctx.measureText('0'.repeat(100)).width / 100;
    const lines = pre.textContent.replace(/\n$/, '').split('\n').map(l => l.replace(/\t/g, '        '));
    const long = lines.filter(l => ctx.measureText(l).width > avail + 0.5);
    pre.style.whiteSpace = saved;
    stats[kind + '_lines'] += lines.length;
    const nOver = over ? Math.max(long.length, 1) : 0;
    stats[kind + '_over'] += nOver;
    if (over) {
      stats.boxes_over++;
      const worst = long.length ? long.reduce((a, b) => (b.length > a.length ? b : a)) : lines[0];
      fail(kind, pre, `${nOver} of ${lines.length} ${kind} lines wider than the box `
           + `(longest ${worst.length} chars, the box fits ${Math.floor(avail / ch)})`, worst);
    }
    // Stored progress-bar frames (tqdm): a reader sees dozens of copies of the bar.
    if (kind === 'output') {
      const frames = lines.filter(l => /\d+%\|/.test(l) || /\r/.test(l)).length;
      if (frames > MAX_PROGRESS_FRAMES) {
        fail('output', pre, `${frames} progress-bar frames stored in one output (at most ${MAX_PROGRESS_FRAMES})`,
             lines.find(l => /\d+%\|/.test(l)) || '');
      }
    }
  }
  for (const table of Array.from(article.querySelectorAll('table'))) {
    if (!table.offsetParent || table.closest('table') !== table) continue;
    let box = table.parentElement;
    while (box && getComputedStyle(box).display.startsWith('table')) box = box.parentElement;
    const cs = getComputedStyle(box);
    const avail = box.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    const need = Math.max(table.scrollWidth, table.getBoundingClientRect().width);
    if (need > avail + 1) {
      fail('table', table, `table ${Math.round(need)} px wide in a ${Math.round(avail)} px box`,
           (table.rows[0] || table).textContent);
    }
  }
  if (document.documentElement.scrollWidth > window.innerWidth + 1) {
    fail('width', document.body, 'the page scrolls sideways '
         + `(${document.documentElement.scrollWidth} px content in a ${window.innerWidth} px window)`, '');
  }

  // 5. Resources from outside the book (they fail offline), and the links and ids for the link check in Python.
  for (const r of performance.getEntriesByType('resource')) {
    if (new URL(r.name).origin !== location.origin) {
      fail('offline', null, 'loads a resource from outside the book', r.name);
    }
  }
  const links = Array.from(document.querySelectorAll('a[href]')).map(a =>
    ({href: a.href, raw: a.getAttribute('href'), text: snippet(a.textContent, 60), where: where(a)}));
  const ids = Array.from(document.querySelectorAll('[id], a[name]')).map(e => e.id || e.getAttribute('name'));
  stats.math = nMath; stats.images = imgs.length + objects.length; stats.links = links.length;
  return {failures, stats, links, ids};
})().then(done, (e) => done({error: String(e && e.stack || e)}));
"""


@dataclass
class Failure:
    page: str
    kind: str
    what: str
    where: str = ""
    snippet: str = ""

    def __str__(self) -> str:
        text = f"  {self.page}{self.where} [{self.kind}] {self.what}"
        return text + (f"\n      {self.snippet}" if self.snippet else "")


@dataclass
class PageResult:
    page: str
    failures: list[Failure] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    links: list[dict] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    seconds: float = 0.0


def find_executable(env_var: str, candidates: tuple[str, ...], names: tuple[str, ...]) -> str | None:
    if os.environ.get(env_var):
        return os.environ[env_var]
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    for name in names:
        if found := shutil.which(name):
            return found
    return None


def start_browser(width: int, height: int):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        sys.exit("book_check: selenium is not installed; run `make install` (it is pinned in requirements.txt).")
    browser = find_executable("BOOK_CHECK_BROWSER", BROWSERS, ("chromium", "chromium-browser", "google-chrome"))
    driver_path = find_executable("BOOK_CHECK_DRIVER", DRIVERS, ("chromedriver",))
    if not browser or not driver_path:
        sys.exit(
            "book_check: needs Chromium and chromedriver. On Debian/Ubuntu: "
            "`sudo apt-get install chromium chromium-driver` (Ubuntu: google-chrome and its chromedriver); "
            "or point BOOK_CHECK_BROWSER and BOOK_CHECK_DRIVER at a Chrome/Chromium and a matching chromedriver. "
            f"Found browser={browser}, chromedriver={driver_path}."
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
        "--lang=en-US",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    # Exactly this viewport, whatever the window decorations: it is what the widths are judged at.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    driver.set_script_timeout(90)
    driver.set_page_load_timeout(60)
    return driver


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".woff2": "font/woff2",
        ".woff": "font/woff",
        ".js": "text/javascript",
        ".svg": "image/svg+xml",
    }

    def log_message(self, *args):  # the browser's own log reports failed requests
        pass


def serve(root: Path) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def list_pages(root: Path) -> list[str]:
    skip = ("_static/", "_sources/", "_images/", "_downloads/", "book-check/")
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*.html")
        if not p.relative_to(root).as_posix().startswith(skip)
    )


def is_redirect(path: Path) -> str | None:
    "The target of a page that only redirects (the root index.html of a Jupyter Book), else None."
    m = re.search(r'<meta http-equiv="Refresh" content="0; url=([^"]+)"', path.read_text(errors="replace"), re.I)
    return m.group(1) if m else None


def console_failures(page: str, entries: list[dict], base: str) -> list[Failure]:
    out = []
    for e in entries:
        if e.get("level") != "SEVERE":
            continue
        msg = e.get("message", "")
        # Chrome asks for /favicon.ico by itself when a page names no icon; that is not the page's doing.
        if msg.startswith(base + "/favicon.ico "):
            continue
        out.append(Failure(page, "console", "error in the browser console", "", msg.replace(base + "/", "")))
    return out


def inspect_page(driver, base: str, page: str) -> PageResult:
    start = time.time()
    result = PageResult(page)
    driver.get(f"{base}/{page}")
    for _ in range(200):
        if driver.execute_script("return document.readyState") == "complete":
            break
        time.sleep(0.05)
    data = driver.execute_async_script(INSPECT_JS)
    if not isinstance(data, dict) or "error" in data:
        result.failures.append(Failure(page, "check", "the in-page check crashed", str(data)))
        return result
    result.failures += [Failure(page, f["kind"], f["what"], f["where"], f["snippet"]) for f in data["failures"]]
    result.stats, result.links, result.ids = data["stats"], data["links"], set(data["ids"])
    result.failures += console_failures(page, driver.get_log("browser"), base)
    result.seconds = time.time() - start
    return result


def ids_in_file(path: Path) -> set[str]:
    text = path.read_text(errors="replace")
    return set(re.findall(r'\sid="([^"]+)"', text)) | set(re.findall(r'<a[^>]*\sname="([^"]+)"', text))


def check_links(root: Path, base: str, results: dict[str, PageResult]) -> list[Failure]:
    "Every internal link must name a file of the book, and its fragment an id on the target page."
    failures, id_cache = [], {}
    for page, res in results.items():
        for link in res.links:
            href = link["href"]
            if not href.startswith(base + "/"):
                scheme = urlsplit(href).scheme
                if scheme not in ("http", "https", "mailto"):
                    failures.append(
                        Failure(
                            page,
                            "link",
                            f"link with an unusable scheme {scheme!r}",
                            link["where"],
                            f"{link['raw']} ({link['text']})",
                        )
                    )
                continue
            parts = urlsplit(href[len(base) :])
            rel = unquote(parts.path).lstrip("/") or "index.html"
            target = root / rel
            if target.is_dir():
                rel, target = rel.rstrip("/") + "/index.html", target / "index.html"
            if not target.is_file():
                failures.append(
                    Failure(page, "link", "broken link: no such file", link["where"], f"{link['raw']} ({link['text']})")
                )
                continue
            frag = unquote(parts.fragment)
            if not frag or not rel.endswith(".html"):
                continue
            if rel in results and results[rel].ids:
                ids = results[rel].ids
            else:
                ids = id_cache.setdefault(rel, ids_in_file(target))
            if frag not in ids:
                failures.append(
                    Failure(
                        page,
                        "link",
                        f"broken anchor: no id {frag!r} on {rel}",
                        link["where"],
                        f"{link['raw']} ({link['text']})",
                    )
                )
    return failures


def screenshot(driver, base: str, page: str, path: Path, width: int, height: int) -> None:
    "A full-page PNG of one page (capped at MAX_SCREENSHOT_HEIGHT CSS px), laid out at the checked width."
    driver.get(f"{base}/{page}")
    wait_js = (
        "const done = arguments[arguments.length - 1];"
        "(async () => { if (window.MathJax && MathJax.startup && MathJax.startup.promise)"
        " await MathJax.startup.promise; await document.fonts.ready; })().then(done, done);"
    )
    driver.execute_async_script(wait_js)
    full = driver.execute_script("return document.documentElement.scrollHeight")
    # A viewport as tall as the page (Chrome's captureBeyondViewport mislays the theme's sticky sidebars).
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": min(full, MAX_SCREENSHOT_HEIGHT), "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        driver.execute_async_script(wait_js)
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(base64.b64decode(shot["data"]))
    os.replace(tmp, path)


def run(
    html: Path, out: Path | None, width: int, height: int, screenshots: tuple[str, ...], pages: list[str] | None = None
) -> tuple[list[Failure], dict[str, PageResult]]:
    "Check the book in `html`; returns (failures, per-page results). Screenshots go to `out` when given."
    if not (html / "index.html").is_file() and not pages:
        sys.exit(f"book_check: {html} has no index.html; build the book first (`make book`).")
    pages = pages or list_pages(html)
    server = serve(html)
    base = f"http://127.0.0.1:{server.server_port}"
    driver = start_browser(width, height)
    results: dict[str, PageResult] = {}
    failures: list[Failure] = []
    try:
        for page in pages:
            target = is_redirect(html / page)
            if target is not None:
                if not (html / page).parent.joinpath(unquote(urlsplit(target).path)).is_file():
                    failures.append(Failure(page, "link", "redirects to a missing page", "", target))
                continue
            res = inspect_page(driver, base, page)
            results[page] = res
            failures += res.failures
        failures += check_links(html, base, results)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            for old in out.glob("*.png"):
                old.unlink()
            for page in screenshots:
                if (html / page).is_file():
                    png = out / (page.replace("/", "__").removesuffix(".html") + ".png")
                    screenshot(driver, base, page, png, width, height)
                else:
                    failures.append(Failure(page, "check", "page to screenshot does not exist"))
    finally:
        driver.quit()
        server.shutdown()
    return failures, results


def summary_table(results: dict[str, PageResult], failures: list[Failure]) -> list[str]:
    "One line per page: failures, and how many code and output lines are wider than their box."
    count: dict[str, int] = {}
    for f in failures:
        count[f.page] = count.get(f.page, 0) + 1
    width = max([len(p) for p in results] + [4])
    lines = [f"{'page':{width}}  failures  code lines too wide  output lines too wide  formulas  images  links"]
    for page, res in results.items():
        s = res.stats
        code = f"{s.get('code_over', 0)}/{s.get('code_lines', 0)}"
        output = f"{s.get('output_over', 0)}/{s.get('output_lines', 0)}"
        lines.append(
            f"{page:{width}}  {count.get(page, 0):8}  {code:>19}  {output:>21}  {s.get('math', 0):8}  "
            f"{s.get('images', 0):6}  {s.get('links', 0):5}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html", nargs="?", type=Path, default=DEFAULT_HTML, help="the built book (default %(default)s)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="screenshots and report (default %(default)s)")
    ap.add_argument("--width", type=int, default=1366, help="viewport width in CSS px (default %(default)s)")
    ap.add_argument("--height", type=int, default=900, help="viewport height in CSS px (default %(default)s)")
    ap.add_argument(
        "--screenshot",
        action="append",
        metavar="PAGE",
        help=f"page to screenshot, relative to the book (repeatable; default {', '.join(DEFAULT_SCREENSHOTS)})",
    )
    args = ap.parse_args(argv)
    start = time.time()
    shots = tuple(args.screenshot) if args.screenshot else DEFAULT_SCREENSHOTS
    print(f"book_check: reading every page of {args.html} in headless Chromium at {args.width}x{args.height}")
    failures, results = run(args.html.resolve(), args.out.resolve(), args.width, args.height, shots)
    lines = summary_table(results, failures)
    lines.append(
        f"book_check: {len(results)} pages in {time.time() - start:.0f} s; screenshots and this report in {args.out}"
    )
    if failures:
        by_page: dict[str, list[Failure]] = {}
        for f in failures:
            by_page.setdefault(f.page, []).append(f)
        lines.append(f"book_check: FAILED, {len(failures)} failures on {len(by_page)} pages:")
        for page in sorted(by_page):
            lines += [str(f) for f in by_page[page]]
    else:
        lines.append("book_check: every page passed")
    report = "\n".join(lines)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "report.txt.tmp"
    tmp.write_text(report + "\n")
    os.replace(tmp, args.out / "report.txt")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
