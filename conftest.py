"""pytest's root configuration, for the tests and for the notebooks nbval runs (whose kernels inherit this
process's environment): developers and CI keep a copy of the corpus in ../shared beside the checkout, so use it when
nothing else is set, and nothing is downloaded."""

import os
from pathlib import Path

SHARED_COPY = Path(__file__).resolve().parent.parent / "shared" / "data" / "tinyshakespeare.txt"
if SHARED_COPY.is_file():
    os.environ.setdefault("LLAMA_NB_TINYSHAKESPEARE", str(SHARED_COPY))


def pytest_addoption(parser):
    parser.addoption(
        "--nbval-lax-notebook",
        action="append",
        default=[],
        metavar="PATH",
        help="check this notebook's outputs as nbval's --nbval-lax does (only cells marked NBVAL_CHECK_OUTPUT) while "
        "every other notebook stays strict, so that one pytest run, and one pool of workers, executes them all",
    )


def pytest_collection_modifyitems(config, items):
    lax = {Path(p).resolve() for p in config.getoption("--nbval-lax-notebook")}
    if not lax:
        return
    from nbval.plugin import find_comment_markers, find_metadata_tags

    for item in items:
        if item.path.resolve() in lax and hasattr(item, "cell"):  # an nbval cell of a lax notebook
            marked = {**dict(find_metadata_tags(item.cell.metadata)), **dict(find_comment_markers(item.cell.source))}
            item.options["check"] = bool(marked.get("check", False))
