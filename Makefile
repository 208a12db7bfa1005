# Baby Llama from Scratch. `make help` lists the targets.
# `make book` and `make test` install the pinned environment first when needed, so each works alone on a
# fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The GPU chapter runs in CI in smoke mode, where its outputs differ from the stored GPU run: lax mode.
LAX_NOTEBOOKS := $(wildcard notebooks/07_*.ipynb)
# Every other notebook is validated with nbval in strict mode (every stored output must match a fresh run).
STRICT_NOTEBOOKS := $(sort $(filter-out $(LAX_NOTEBOOKS),$(wildcard notebooks/*.ipynb)))
NBVAL_OPTS := --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=900
export PYTHONHASHSEED := 0

.PHONY: help install book check-book test pytest-all unit lint export check-export bench lab clean
.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-data.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --no-compile -r requirements.txt
	@# pip compiles the bytecode file by file; compileall uses every core. Like pip, skip the files that do not compile.
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-data.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## Create .venv with the pinned versions and llama_nb installed in editable mode

book: $(STAMP) ## Build the HTML book from the stored notebook outputs into book/_build/html
	$(BIN)/jupyter-book build . --config book/_config.yml --toc book/_toc.yml --path-output book \
		--builder html -W -n --keep-going
	@echo "Open book/_build/html/index.html"

# Needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver; .ci/run installs them).
check-book: book ## Build the book, then read every page in headless Chromium: math, images, links, widths
	$(BIN)/python tests/book_check.py book/_build/html --out book/_build/book-check

# One pytest run executes the tests and every notebook on two worker processes (pytest-xdist). --dist loadscope keeps
# a notebook's cells together, in order, in one kernel; --no-loadscope-reorder keeps the order below, which starts
# the two longest notebooks (the training runs of 6.6 and 9.2) first. One thread per worker: two workers of two
# threads on two cores wait for each other. The stored outputs are the same with one thread or two (nbval checks
# them). Chapter 7 runs in smoke mode, its outputs checked as --nbval-lax does (--nbval-lax-notebook, conftest.py).
LONGEST_NOTEBOOKS := notebooks/06e_training_loop.ipynb notebooks/09b_gguf_export.ipynb
TEST_ORDER := $(LONGEST_NOTEBOOKS) $(filter-out $(LONGEST_NOTEBOOKS),$(STRICT_NOTEBOOKS)) $(LAX_NOTEBOOKS) tests
TEST_WORKERS ?= 2

# The book is built and read (check-book) while pytest runs (make -j2): together they finish sooner than one after
# the other (their first minute of output is interleaved).
test: $(STAMP) lint check-export ## Lint, export sync, the book read in a browser, unit tests, nbval
	$(MAKE) --no-print-directory -j2 check-book pytest-all

pytest-all: $(STAMP) ## The tests and every notebook (nbval), in one pytest run: make test without lint or the book
	LLAMA_NB_SMOKE=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest $(TEST_ORDER) --nbval $(NBVAL_OPTS) \
		$(addprefix --nbval-lax-notebook=,$(LAX_NOTEBOOKS)) -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# The tests marked slow (processes, a browser, a compiler, SmolLM2-135M) run only in `make test`, which selects no
# marker. One thread unless OMP_NUM_THREADS says otherwise: as fast on an idle machine, and on a busy one (CI, a
# notebook running) two threads that wait for each other made the tiny models' steps tens of times slower.
unit: $(STAMP) ## Only the fast tests in tests/: no book, browser, notebooks or slow tests (about a minute)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest tests -m "not slow" -q

lint: $(STAMP) ## Run ruff's linter and its formatter's check over .py files and notebooks
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

export: $(STAMP) ## Regenerate llama_nb/ from the notebooks' #| export cells
	$(BIN)/nbdev-export

check-export: $(STAMP) ## Fail if llama_nb/ differs from a fresh export of the notebooks
	$(BIN)/python tests/check_export_sync.py

# Benchmarks are not tests: they depend on the machine. `make bench BENCH_ARGS="--threads 4"` (or --only, --quick).
BENCH_ARGS ?=
bench: $(STAMP) ## Run every benchmark (~6 min on 2 cores); writes benchmarks/results/latest.{md,json}
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

lab: $(STAMP) ## Open the notebooks in JupyterLab
	$(BIN)/jupyter lab notebooks

clean: ## Remove the virtual environment, the built book and caches
	rm -rf $(VENV) book/_build .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
