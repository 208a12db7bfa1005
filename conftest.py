"""pytest's root configuration, for the tests and for the notebooks nbval runs (whose kernels inherit this
process's environment): developers and CI keep a copy of the corpus in ../shared beside the checkout, so use it when
nothing else is set, and nothing is downloaded."""

import os
from pathlib import Path

SHARED_COPY = Path(__file__).resolve().parent.parent / "shared" / "data" / "tinyshakespeare.txt"
if SHARED_COPY.is_file():
    os.environ.setdefault("LLAMA_NB_TINYSHAKESPEARE", str(SHARED_COPY))
