"""Book chapters: stored clean, parametrised, listed in the TOC, shaped alike (prerequisites, reading time,
summary, exercises with hints, further reading), with code that fits the rendered column, and runnable in
the smoke profile; the reference appendix agrees with the library's defaults.

New chapters are picked up automatically: every check is parametrised over ``book/*.ipynb``.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
BOOK = REPO / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
IDS = [nb.name for nb in NOTEBOOKS]
#: The project's Jupyter kernel (`make venv` installs it); every chapter names it in its kernelspec.
KERNEL = "savl-book"
#: Longest code line that fits the book's main column (tests/book_browser checks the rendered page).
MAX_CODE_LINE = 88

# {glue:text}`key` or {glue:text}`key:.3f` (also {glue}`key`, {glue:md}`key`, ...) in markdown cells.
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`([^`:]+)(?::([^`]*))?`")


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def _calls(source: str, name: str) -> bool:
    """True if ``source`` calls ``name(...)`` (plain or as an attribute), judged from its syntax tree."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            fn = node.func
            if (isinstance(fn, ast.Name) and fn.id == name) or (isinstance(fn, ast.Attribute) and fn.attr == name):
                return True
    return False


def _assigned_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _glue_references(nb: nbformat.NotebookNode) -> dict[str, str | None]:
    refs: dict[str, str | None] = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for key, fmt in GLUE_ROLE.findall(cell.source):
                refs[key] = fmt or refs.get(key)
    return refs


def _toc_files(node) -> list[str]:
    """Every ``root``/``file`` entry of a jb-book TOC, in order."""
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("root", "file") and isinstance(value, str):
                out.append(value)
            else:
                out.extend(_toc_files(value))
    elif isinstance(node, list):
        for item in node:
            out.extend(_toc_files(item))
    return out


def test_there_are_chapters():
    assert NOTEBOOKS, "no book/*.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_stored_without_outputs(path):
    nb = _read(path)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; clear them before committing"
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    assert kernel == KERNEL, f"{path.name}: kernelspec is {kernel!r}; it must be the project's kernel {KERNEL!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_code_lines_fit_the_column(path):
    long = [
        f"cell {cell.get('id', i)}: {len(line)} characters"
        for i, cell in enumerate(_code_cells(_read(path)))
        for line in cell.source.splitlines()
        if len(line) > MAX_CODE_LINE
    ]
    assert not long, f"{path.name}: code lines longer than {MAX_CODE_LINE} characters: {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_chapter_has_the_common_anatomy(path):
    nb = _read(path)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    top = nb.cells[0].source
    assert nb.cells[0].cell_type == "markdown" and top.startswith("# "), f"{path.name}: no title cell"
    for marker in ("**Prerequisites.**", "**Reading time:**", "**What you will learn**"):
        assert marker in top, f"{path.name}: the first cell lacks {marker}"
    for heading in ("## Summary", "## Exercises", "## Further reading"):
        assert re.search(rf"^{re.escape(heading)}\s*$", text, re.M), f"{path.name}: no '{heading}' section"
    # hints or solutions to the exercises, collapsed (sphinx-togglebutton's dropdown class)
    assert re.search(r"^:class: dropdown\s*$", text, re.M), f"{path.name}: exercises have no collapsed hints"
    # the three opening cells (imports, parameters, checks) follow each other with no prose between them:
    # the introduction explains them once
    params = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    assert nb.cells[params + 1].cell_type == "code", f"{path.name}: prose between the parameters and the checks"
    assert nb.cells[params - 1].cell_type == "code", f"{path.name}: prose between the imports and the parameters"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_has_environment_cell_and_typed_parameters(path):
    nb = _read(path)
    code = _code_cells(nb)
    assert code, f"{path.name}: no code cells"
    # The first code cell brings in the environment banner (importing it, or calling it directly).
    assert "print_environment" in code[0].source, f"{path.name}: first code cell must use print_environment"
    assert any(_calls(c.source, "print_environment") for c in code), f"{path.name}: print_environment never called"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected exactly one cell tagged 'parameters', found {len(tagged)}"
    params = tagged[0].source
    assert "profile" in _assigned_names(params), f"{path.name}: the parameters cell must define `profile`"
    tree = ast.parse(params)
    profile_default = [
        n.value.value
        for n in tree.body
        if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", None) == "profile" and n.value is not None
    ]
    assert profile_default == ["book"], f'{path.name}: expected `profile: str = "book"` in the parameters cell'
    # the parameters are checked once injected: check_profile must run after the parameters cell
    after = code[code.index(tagged[0]) + 1 :]
    assert any(_calls(c.source, "check_profile") for c in after), f"{path.name}: check_profile(profile) missing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_code_parses(path):
    for cell in _code_cells(_read(path)):
        # IPython magics are not Python; skip lines that start with % or !
        source = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in cell.source.splitlines())
        ast.parse(source)


def test_toc_lists_every_chapter_and_only_existing_files():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    assert toc["format"] == "jb-book" and toc["root"] == "book/intro"
    listed = _toc_files(toc)
    assert len(listed) == len(set(listed)), f"_toc.yml lists a file twice: {listed}"
    for entry in listed:
        candidates = [REPO / f"{entry}{ext}" for ext in ("", ".ipynb", ".md")]
        assert any(p.is_file() for p in candidates), f"_toc.yml lists {entry!r}, which does not exist"
    missing = [nb.name for nb in NOTEBOOKS if f"book/{nb.stem}" not in listed]
    assert not missing, f"_toc.yml does not list {missing}"


def test_book_config_guards_against_the_known_traps():
    cfg = yaml.safe_load((REPO / "_config.yml").read_text())
    sphinx = cfg["sphinx"]
    # a raising notebook must fail the (-W) build; math must render offline
    assert sphinx["config"]["nb_execution_raise_on_error"] is True
    # text/markdown outputs (the chapters' tables) parsed as MyST: CommonMark, the default, has no tables
    assert sphinx["config"]["nb_render_markdown_format"] == "myst"
    assert "sphinx-mathjax-offline" in sphinx["extra_extensions"]
    assert cfg["only_build_toc_files"] is True
    assert cfg["bibtex_bibfiles"] == ["book/references.bib"] and (REPO / "book/references.bib").is_file()
    assert cfg["execute"]["execute_notebooks"] in ("force", "cache")
    # Jupyter Book injects every .js under a _static folder into every page: none may be there
    stray = [
        p.relative_to(REPO).as_posix()
        for folder in (REPO / "_static", BOOK / "_static")
        if folder.is_dir()
        for p in folder.rglob("*.js")
    ]
    assert not stray, f"JavaScript under _static would be injected into every page: {stray}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_in_smoke_profile(path, tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / path.name
    env_backup = os.environ.get("MPLBACKEND")
    # The kernel inherits the environment: without MPLBACKEND it uses the inline backend, so figures become
    # image outputs, as in the book build (a headless backend such as Agg would silently drop them).
    os.environ.pop("MPLBACKEND", None)
    try:
        executed = papermill.execute_notebook(
            str(path),
            str(out),
            parameters={"profile": "smoke"},
            kernel_name=KERNEL,
            cwd=str(BOOK),
            progress_bar=False,
            log_output=False,
            execution_timeout=600,
        )
    finally:
        if env_backup is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_backup
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "smoke" in injected[0].source
    errors = [o for c in _code_cells(executed) for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    # A cell that carries a figure label (metadata mystnb.figure.name) must produce an image, or {numref} breaks.
    for cell in _code_cells(executed):
        name = cell.metadata.get("mystnb", {}).get("figure", {}).get("name")
        if name:
            images = [o for o in cell.outputs if any(k.startswith("image/") for k in o.get("data", {}))]
            assert images, f"{path.name}: the cell labelled {name!r} produced no image"
    # Every {glue:text}`key` in the prose was glued; a key quoted with a number format holds a plain number
    # (a numpy scalar's repr or a str would render badly or fail the book build).
    glued: dict[str, str] = {}
    for cell in _code_cells(executed):
        for o in cell.outputs:
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is not None:
                glued[name] = next((v for k, v in o.data.items() if k.endswith("text/plain")), "")
    for key, fmt in _glue_references(executed).items():
        assert key in glued, f"{path.name}: prose quotes {{glue}}`{key}` but no cell glues it"
        if fmt:
            try:
                float(glued[key])
            except ValueError:
                pytest.fail(f"{path.name}: glue {key!r} is {glued[key]!r}; glue a Python float or int")


def test_reference_appendix_agrees_with_the_library_defaults():
    """Rows of the appendix's tables that name a field (`field` | `default`) hold that field's default."""
    from savl.degrade.realesrgan import RealESRGANConfig
    from savl.evaluate import EvalProtocol

    text = (BOOK / "appendix_reference.md").read_text()
    objects = {"RealESRGANConfig": RealESRGANConfig(), "EvalProtocol": EvalProtocol()}
    checked = 0
    for section, obj in objects.items():
        # the first table after the class is named: from its header row to the blank line after it
        start = text.index("\n|", text.index(f"`{section}`"))
        block = text[start : text.index("\n\n", start)]
        for row in block.strip().splitlines()[2:]:  # below the header and the |---| row
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            fields = re.findall(r"`([\w.]+)`", cells[-2])
            values = re.findall(r"`([^`]+)`", cells[-1])
            assert len(fields) == len(values), row
            for name, value in zip(fields, values):
                actual = obj
                for part in name.split("."):
                    actual = getattr(actual, part)
                assert actual == ast.literal_eval(value), f"appendix says {name} = {value}, the code {actual!r}"
                checked += 1
    assert checked >= 25, checked
