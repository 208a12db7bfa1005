"""The figures' copies embedded in the notebooks (part of make_figures.py).

A figure cell is a markdown cell holding the line `<!-- figure: NAME STAMP ... -->` followed by an `<img>` tag
whose source is the figure as a PNG data URI; STAMP is a hash of the SVG and the alt text. When the stamp is out of
date those two lines are rewritten and everything else in the notebook is left untouched.
"""

from __future__ import annotations

import base64
import html
import json
import re

from catalog import BY_NAME
from rendering import Rendered, css_width, render

# A figure cell holds this marker line, then the <img> line, then anything (a caption). The script rewrites the two
# lines when the stamp differs; the PNG bytes themselves may differ between Pillow versions, the stamp does not.
MARKER = re.compile(r"<!-- figure: (?P<name>[a-z0-9_]+) (?P<stamp>[0-9a-f]{16}) [^\n]*-->\n(?P<img><img [^\n]*>)")


def figure_html(name: str, r: Rendered) -> str:
    "The marker line and the <img> line of a figure cell."
    alt = html.escape(BY_NAME[name].alt_text(), quote=True)
    data = base64.b64encode(r.png).decode("ascii")
    return (
        f"<!-- figure: {name} {r.stamp} (drawn by notebooks/figures/make_figures.py, which rewrites this line "
        f"and the next: edit the script, not them) -->\n"
        f'<img alt="{alt}" width="{css_width(r.svg)}" src="data:image/png;base64,{data}">'
    )


def figure_cell_source(name: str, caption: str) -> str:
    "The source of a new figure cell showing `name`, with the markdown `caption` below the image."
    return f"{figure_html(name, render(BY_NAME[name]))}\n\n{caption}"


def dump_notebook(nb: dict) -> str:
    "The notebook as Jupyter writes it (keys in the order read, one-space indent, UTF-8, final newline)."
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def figure_cells(nb: dict) -> list[tuple[dict, re.Match]]:
    "(cell, marker match) for every figure shown in the notebook's markdown cells."
    return [
        (cell, m)
        for cell in nb["cells"]
        if cell["cell_type"] == "markdown"
        for m in MARKER.finditer("".join(cell["source"]))
    ]


def refresh_notebook(nb: dict, rendered: dict[str, Rendered], where: str = "notebook") -> bool:
    "Rewrite the stale figure cells of `nb` in place; True if anything changed."
    changed = False
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        src = "".join(cell["source"])

        def fresh(m: re.Match) -> str:
            if m["name"] not in rendered:
                raise RuntimeError(
                    f"{where}: a figure cell shows {m['name']!r}, which make_figures.py does not draw "
                    f"(it draws {', '.join(rendered)})"
                )
            r = rendered[m["name"]]
            return m[0] if m["stamp"] == r.stamp else figure_html(m["name"], r)

        new = MARKER.sub(fresh, src)
        if new != src:
            cell["source"], changed = new.splitlines(keepends=True), True
    return changed
