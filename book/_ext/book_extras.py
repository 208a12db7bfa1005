"""Sphinx extension for the book's HTML: round author-year citations, and one copy of each inline script.

Loaded by book/_config.yml (`sphinx: local_extensions`). Two things the pinned Sphinx stack does not do by itself:

- Citations as the prose writes them: `{cite:t}` gives "Zhang and Sennrich (2019)", `{cite:p}` gives
  "(Su et al., 2021)". sphinxcontrib-bibtex's `author_year` style uses square brackets; this registers
  `author_year_round`, the same style with round ones (the recipe in sphinxcontrib-bibtex's documentation), and
  `plain_author_year`, pybtex's plain bibliography whose entries are labelled [Su et al., 2021] instead of [31],
  so that the bibliography page lists works the way the chapters name them.
- Sphinx 7.4 writes an inline script that an extension adds while the builder starts (sphinx-thebe's
  `const THEBE_JS_URL = ...`, sphinx-togglebutton's selector) twice into every page: once as registered and once
  re-added from the registry with an empty file name instead of None. The second `const` throws "Identifier
  'THEBE_JS_URL' has already been declared" in every page's console (tests/book_check.py reports console errors).
  `_one_copy_of_each_script` keeps the first of identical scripts.
"""

import dataclasses
from collections import Counter

import pybtex.plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle as AuthorYearTitleSorting
from sphinxcontrib.bibtex.plugin import register_plugin
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle


def _round() -> BracketStyle:
    return BracketStyle(left="(", right=")")


@dataclasses.dataclass
class RoundAuthorYearReferenceStyle(AuthorYearReferenceStyle):
    "Author-year citations in round brackets: (Su et al., 2021); Zhang and Sennrich (2019)."

    bracket_parenthetical: BracketStyle = dataclasses.field(default_factory=_round)
    bracket_textual: BracketStyle = dataclasses.field(default_factory=_round)
    bracket_author: BracketStyle = dataclasses.field(default_factory=_round)
    bracket_label: BracketStyle = dataclasses.field(default_factory=_round)
    bracket_year: BracketStyle = dataclasses.field(default_factory=_round)


register_plugin("sphinxcontrib.bibtex.style.referencing", "author_year_round", RoundAuthorYearReferenceStyle)


def _authors(entry) -> str:
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    last = [" ".join(n.render_as("text") for n in p.rich_last_names) for p in persons]
    if not last:
        return entry.fields.get("title", entry.key)
    if len(last) == 1:
        return last[0]
    if len(last) == 2 and last[1] != "others":
        return f"{last[0]} and {last[1]}"
    return f"{last[0]} et al."


class AuthorYearLabelStyle(BaseLabelStyle):
    "Labels like 'Su et al., 2021'; two works with the same label get 2023a, 2023b."

    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [f"{_authors(e)}, {e.fields.get('year', 'n.d.')}" for e in entries]
        counts, seen = Counter(labels), Counter()
        for label in labels:
            if counts[label] > 1:
                seen[label] += 1
                label += "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            yield label


class AuthorYearTitleSortingNoBraces(AuthorYearTitleSorting):
    "Sort by author, year, title, ignoring the braces that keep an organisation's name whole ({Hugging Face})."

    def person_key(self, person):
        return super().person_key(person).replace("{", "").replace("}", "")


class PlainAuthorYearStyle(PlainStyle):
    "pybtex's plain bibliography style, labelled by author and year, sorted by author as the labels read."

    default_label_style = "author_year"
    default_sorting_style = "author_year_title_no_braces"


pybtex.plugin.register_plugin("pybtex.style.labels", "author_year", AuthorYearLabelStyle)
pybtex.plugin.register_plugin("pybtex.style.sorting", "author_year_title_no_braces", AuthorYearTitleSortingNoBraces)
pybtex.plugin.register_plugin("pybtex.style.formatting", "plain_author_year", PlainAuthorYearStyle)


def _one_copy_of_each_script(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, unique = set(), []
    for js in scripts:
        key = (js.filename or "", js.priority, tuple(sorted(js.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique  # in place: Sphinx restores its own list before the next page


def setup(app):
    # Last, after every extension has added its per-page scripts.
    app.connect("html-page-context", _one_copy_of_each_script, priority=999)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
