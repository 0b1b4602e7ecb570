# The whole set-up on a fresh machine is `make book` and `make test` (README). Both create the
# virtual environment at .venv/ when it is missing; the constraints file pins the torch pair.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip install --disable-pip-version-check -c constraints.txt

.PHONY: venv test lint book smoke clean-book clean bench

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
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/jupyter-book build --all -W -n --keep-going .
	@echo "Open $(CURDIR)/_build/html/index.html"

clean-book:
	rm -rf book/_build _build

bench: $(STAMP)
	$(BIN)/python benchmarks/degrade.py

clean: clean-book
	rm -rf $(VENV)
