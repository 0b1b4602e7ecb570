# The whole set-up on a fresh machine is `make book` and `make test` (README). Both create the
# virtual environment at .venv/ when it is missing; the constraints file pins the torch pair.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip install --disable-pip-version-check -c constraints.txt
# The Jupyter kernel of this project's environment; every chapter's kernelspec names it.
KERNEL := savl-book

.PHONY: venv test lint book lab browser-test reproduce clean-book clean bench models models-long test-torch-floor

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -e .
	$(BIN)/pip check
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (savl-book)" >/dev/null
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

# The chapters in JupyterLab, opened at the book's folder, with the project's kernel (see book/intro.md).
lab: $(STAMP)
	env -u MPLBACKEND PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/jupyter lab --notebook-dir="$(CURDIR)" \
		--LabApp.default_url=/lab/tree/book --MappingKernelManager.default_kernel_name=$(KERNEL)

# The rendered book as a reader sees it, in headless Chromium (needs `make book` first and Debian's chromium).
browser-test: $(STAMP)
	SAVL_BROWSER_TEST=1 $(BIN)/python -m pytest -q tests/book_browser

# The paper-profile chapters in order, headless, on a GPU (book/11_at_scale).
reproduce: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/reproduce.sh --profile paper --device cuda --out runs/paper

# The model zoo (models/): train every cpu-tier entry whose files are missing, resumably (runs/zoo/), and write
# its card (about 90 minutes on 2 idle cores: benchmarks/results/zoo_budget.md). `make models-long` trains the
# long tier (the 6,000-step record of chapter 6). `make book` never retrains what the zoo holds;
# `savl models verify` checks every file against its card. One entry per core at a time (each at one thread);
# JOBS=1 trains them one after another.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
models: $(STAMP)
	$(BIN)/savl models train --tier cpu --jobs $(JOBS)
	$(BIN)/savl models verify --tier cpu

models-long: $(STAMP)
	$(BIN)/savl models train --tier long --jobs $(JOBS)
	$(BIN)/savl models verify --tier long

clean-book:
	rm -rf book/_build _build

bench: $(STAMP)
	$(BIN)/python benchmarks/degrade.py
	$(BIN)/python benchmarks/srnet.py

# The library on the oldest torch that pyproject.toml allows (2.13, the CPU wheel): the non-book tests in a
# virtual environment of their own. No torchvision is published here for that torch, so the tests that need it
# (16-bit PNG reading, LPIPS, the VGG perceptual loss and the training chain whose GAN stage uses it) are
# deselected. About 23 minutes on 2 busy cores (1.5 to install, 21.5 to test): more than CI's 30-minute budget
# leaves beside `make test` and `make book`, hence a target of its own rather than a step of .ci/run.
FLOOR := .venv-torch-floor
FLOOR_TORCH := torch==2.13.0
FLOOR_NEEDS_TORCHVISION := png16 or gray16 or sr_keeps_gray_16bit or lpips or perceptual or cli_errors_are_one_line
FLOOR_CHAIN := every_stage_runs_and_chains joint_shares_encoder_and_stage2_freezes_it ema_follows_its_recursion \
	metrics_keys_and_beta_schedule validation_psnr_matches_skimage checkpoints_are_weights_only_and_pruned \
	get_or_train_returns_cached_run existing_run_needs_resume

test-torch-floor:
	@test -x $(FLOOR)/bin/python || $(PY) -m venv $(FLOOR)
	$(FLOOR)/bin/pip install --disable-pip-version-check -q "$(FLOOR_TORCH)" -e ".[dev]"
	$(FLOOR)/bin/python -c "import torch; assert torch.__version__.startswith('2.13'), torch.__version__"
	$(FLOOR)/bin/python -m pytest -q -p no:cacheprovider --ignore=tests/test_notebooks.py --ignore=tests/book_browser \
		-k "not ($(FLOOR_NEEDS_TORCHVISION))" $(foreach t,$(FLOOR_CHAIN),--deselect tests/test_train_loop.py::test_$(t))

clean: clean-book
	rm -rf $(VENV) $(FLOOR)
