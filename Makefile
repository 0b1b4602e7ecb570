# The whole set-up on a fresh machine is `make book` and `make test` (README). Both create the
# virtual environment at .venv/ when it is missing; the constraints file pins the torch pair.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip install --disable-pip-version-check -c constraints.txt

.PHONY: venv test lint book browser-test reproduce clean-book clean bench models

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -e .
	$(BIN)/pip check
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

book: $(STAMP)
	@# A headless MPLBACKEND (e.g. Agg) would reach the kernels and leave every figure out of the book.
	env -u MPLBACKEND PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/jupyter-book build --all -W -n --keep-going .
	@echo "Open $(CURDIR)/_build/html/index.html"

# The rendered book as a reader sees it, in headless Chromium (needs `make book` first and Debian's chromium).
browser-test: $(STAMP)
	SAVL_BROWSER_TEST=1 $(BIN)/python -m pytest -q tests/book_browser

# The paper-profile chapters in order, headless, on a GPU (book/11_at_scale).
reproduce: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/reproduce.sh --profile paper --device cuda --out runs/paper

# The model zoo (models/): train every entry whose files are missing, resumably (runs/zoo/), and write its card.
# `make book` never retrains what the zoo holds; `savl models verify` checks every file against its card.
models: $(STAMP)
	$(BIN)/savl models train
	$(BIN)/savl models verify

clean-book:
	rm -rf book/_build _build

bench: $(STAMP)
	$(BIN)/python benchmarks/degrade.py
	$(BIN)/python benchmarks/srnet.py

clean: clean-book
	rm -rf $(VENV)
