"""The rendered-book browser test runs only when asked: after `make book`, with `SAVL_BROWSER_TEST=1`.

`make test` runs pytest on tests/, which collects this folder too; without the variable every test here
is reported as skipped (nothing is run: no Chromium, no built book needed). CI runs it explicitly:
    SAVL_BROWSER_TEST=1 .venv/bin/python -m pytest -q tests/book_browser
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SAVL_BROWSER_TEST") == "1":
        return
    skip = pytest.mark.skip(reason="rendered-book browser test: set SAVL_BROWSER_TEST=1 (after `make book`)")
    for item in items:
        # this hook sees every collected test of the session: mark only the ones in this folder
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(skip)
