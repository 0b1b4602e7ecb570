"""The built book as a reader sees it, in headless Chromium: math is typeset by MathJax with no raw TeX
left, every table is a table, nothing is wider than the main column (code, equations, tables), every
figure is drawn large enough to read, every image decodes, no page tries to reach the network, and
screenshots of the intro, the derivations chapter and the representation chapter land in
build/screenshots/ for CI.

Needs `make book` first and the Debian `chromium` package; runs only with SAVL_BROWSER_TEST=1 (see
conftest.py). SAVL_BOOK_ROOT points at another checkout whose `_toc.yml` and `_build/html` to test.
The first tests prove that the checker itself catches each kind of fault on small pages made here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
from browser_check import check_pages  # noqa: E402

BOOK_ROOT = Path(os.environ.get("SAVL_BOOK_ROOT", REPO)).resolve()
HTML = BOOK_ROOT / "_build" / "html"
SHOTS = REPO / "build" / "screenshots"
SCREENSHOT_PAGES = {"intro": "intro", "02_elbo_mi": "02_elbo_mi", "08_representation": "08_representation"}


def _toc_pages() -> list[str]:
    """Every page of the TOC as a path below _build/html, root first (jb-book format)."""
    toc_file = BOOK_ROOT / "_toc.yml"
    if not toc_file.is_file():  # reported by test_every_toc_page_was_built, not as a collection error
        return []
    toc = yaml.safe_load(toc_file.read_text())
    out: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("root", "file") and isinstance(value, str):
                    out.append(value.removesuffix(".ipynb").removesuffix(".md") + ".html")
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return out


PAGES = _toc_pages()


# --- the checker catches what it claims to catch -------------------------------------------------------


@pytest.fixture(scope="module")
def fault_reports(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(site / "good.png")
    (site / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.fromarray(rng.integers(0, 256, (100, 2000, 3), dtype=np.uint8)).save(site / "wide.png", dpi=(100, 100))
    pages = {
        "external.html": (
            '<link rel="stylesheet" href="https://fonts.example.net/a.css">'
            '<img src="https://cdn.example.org/pixel.png">'
            '<script>fetch("https://api.example.com/data").catch(() => null)</script><p>hello</p>'
        ),
        "images.html": '<img src="good.png"><img src="missing.png"><img src="corrupt.png">',
        "tex.html": (
            "<p>Area $$\\int_0^1 x\\,dx$$ left raw.</p><pre>code may say $$ and \\begin{align}</pre>"
            '<span class="math">\\(x^2\\)</span>'
        ),
        "clean.html": '<p>Nothing to see.</p><img src="good.png">',
        # what MyST-NB leaves when it renders a text/markdown output as CommonMark (no tables)
        "table.html": (
            "<main><p>| a | b |\n|---|---|\n| 1 | 2 |</p><pre>| code | may |\n|---|---|</pre>"
            # the same after Sphinx's smart quotes, which turn --- into an em dash
            "<p>| c | d |\n|\u2014|\u2014:|\n| 3 | 4 |</p></main>"
        ),
        # a code line that scrolls, an equation box that scrolls, a block that sticks out of the column
        "wide.html": (
            '<main style="width:600px">'
            '<pre style="overflow-x:auto">x = 1  # ' + "a long comment " * 20 + "</pre>"
            '<div class="math" style="overflow-x:auto"><span style="display:inline-block;width:1500px">E = mc^2</span>'
            '</div><div style="width:900px">a table far too wide</div>'
            '<pre style="overflow-x:auto">fits</pre></main>'
        ),
        # a 2000 px wide figure at 100 dpi squeezed into 400 px, and a small one at its natural size
        "small_image.html": (
            '<main style="width:400px"><img src="wide.png" style="max-width:100%"><img src="good.png"></main>'
        ),
    }
    for name, body in pages.items():
        (site / name).write_text(
            f'<!doctype html><html><head><meta charset="utf-8"><title>{name}</title></head><body>{body}</body></html>',
            encoding="utf-8",
        )
    return check_pages(site, list(pages))


def test_checker_sees_every_attempted_external_request(fault_reports):
    rep = fault_reports["external.html"]
    assert set(rep.external_requests) == {
        "https://fonts.example.net/a.css",
        "https://cdn.example.org/pixel.png",
        "https://api.example.com/data",
    }
    assert any("external request attempted" in p for p in rep.problems)


def test_checker_sees_missing_and_corrupt_images(fault_reports):
    rep = fault_reports["images.html"]
    widths = {Path(i["src"]).name: i["width"] for i in rep.images}
    assert widths == {"good.png": 20, "missing.png": 0, "corrupt.png": 0}
    assert sorted(Path(s).name for s in rep.broken_images) == ["corrupt.png", "missing.png"]
    assert any("missing.png (HTTP 404)" in f for f in rep.failed_requests)


def test_checker_sees_raw_tex_but_not_tex_inside_code(fault_reports):
    rep = fault_reports["tex.html"]
    assert len(rep.raw_tex) == 2  # "$$" in the paragraph and "\(" of the unrendered span; nothing from <pre>
    assert all("code may say" not in t for t in rep.raw_tex)
    assert (rep.math_elements, rep.math_unrendered, rep.mathjax) == (1, 1, "absent")
    assert "1 math elements but MathJax did not load" in rep.problems


def test_checker_sees_raw_markdown_tables_but_not_tables_in_code(fault_reports):
    rep = fault_reports["table.html"]
    assert len(rep.raw_tables) == 2, rep.raw_tables
    assert "| a | b |" in rep.raw_tables[0] and "| c | d |" in rep.raw_tables[1], rep.raw_tables
    assert any("raw Markdown table" in p for p in rep.problems)


def test_checker_sees_content_wider_than_the_column(fault_reports):
    rep = fault_reports["wide.html"]
    assert rep.column_width == 600
    # the column itself overflows (the block sticks out), then each of the three offenders once (not their
    # descendants), and not the short <pre>
    assert rep.too_wide[0].startswith("main column main (900 px content in 600 px)"), rep.too_wide
    kinds = sorted(w.split(" ")[0] for w in rep.too_wide[1:])
    assert kinds == ["div", "div.math", "pre"], rep.too_wide
    assert any("sticks out 300 px" in w for w in rep.too_wide), rep.too_wide
    assert not any(w.endswith(": fits") for w in rep.too_wide)


def test_checker_sees_images_too_small_to_read(fault_reports):
    rep = fault_reports["small_image.html"]
    scale = {Path(i["src"]).name: i["px_per_pt"] for i in rep.images}
    assert scale["wide.png"] == pytest.approx(400 / 2000 * 100 / 72, rel=1e-3)
    assert scale["good.png"] == pytest.approx(1.0)  # no dpi recorded: one pixel per point
    assert len(rep.small_images) == 1 and "wide.png" in rep.small_images[0]
    assert sum("too small to read" in p for p in rep.problems) == 1


def test_checker_passes_a_clean_page(fault_reports):
    rep = fault_reports["clean.html"]
    assert rep.problems == [] and rep.title == "clean.html" and len(rep.images) == 1


# --- the built book ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def book_reports():
    if not (HTML / "book" / "intro.html").is_file():
        pytest.fail(f"{HTML} holds no built book: run `make book` first (or set SAVL_BOOK_ROOT)")
    built = [p for p in PAGES if (HTML / p).is_file()]
    shots = {f"book/{stem}.html": SHOTS / f"{name}.png" for stem, name in SCREENSHOT_PAGES.items()}
    return check_pages(HTML, built, {p: s for p, s in shots.items() if p in built})


def test_every_toc_page_was_built():
    assert (BOOK_ROOT / "_toc.yml").is_file(), f"no _toc.yml in {BOOK_ROOT}"
    assert "book/intro.html" in PAGES and "book/02_elbo_mi.html" in PAGES
    missing = [p for p in PAGES if not (HTML / p).is_file()]
    assert not missing, f"pages in _toc.yml missing from {HTML}: {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_math_is_typeset(book_reports, page):
    rep = book_reports[page]
    if rep.math_elements:
        assert rep.mathjax != "absent", f"{page}: MathJax did not load"
        assert rep.math_unrendered == 0, f"{page}: {rep.math_unrendered}/{rep.math_elements} math elements raw"
        assert rep.mjx_containers >= rep.math_elements
    assert not rep.mjx_errors, f"{page}: MathJax errors {rep.mjx_errors}"
    assert not rep.raw_tex, f"{page}: raw TeX in the rendered text: {rep.raw_tex}"


def test_derivations_chapter_has_its_equations(book_reports):
    rep = book_reports["book/02_elbo_mi.html"]
    assert rep.mjx_containers >= 20 and rep.mathjax.startswith("3"), (rep.mjx_containers, rep.mathjax)


@pytest.mark.parametrize("page", PAGES)
def test_every_image_loads(book_reports, page):
    rep = book_reports[page]
    assert not rep.broken_images, f"{page}: images that did not load: {rep.broken_images}"
    # a second opinion: each image file exists under _build/html and Pillow decodes it to the same size
    for img in rep.images:
        rel = img["src"].split("/", 3)[3].split("?")[0]  # http://127.0.0.1:PORT/<rel>
        path = HTML / rel
        assert path.is_file(), f"{page}: {rel} is not in the build"
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif", ".webp"):
            with Image.open(path) as im:
                im.load()
                assert im.size == (img["width"], img["height"]), f"{page}: {rel} decodes to {im.size}"


@pytest.mark.parametrize("page", PAGES)
def test_tables_are_rendered_as_tables(book_reports, page):
    rep = book_reports[page]
    assert not rep.raw_tables, f"{page}: raw Markdown tables in the text: {rep.raw_tables}"


@pytest.mark.parametrize("page", PAGES)
def test_nothing_is_wider_than_the_column(book_reports, page):
    rep = book_reports[page]
    assert not rep.too_wide, f"{page}: wider than the {rep.column_width} px column: {rep.too_wide}"


@pytest.mark.parametrize("page", PAGES)
def test_figures_are_legible(book_reports, page):
    rep = book_reports[page]
    assert not rep.small_images, f"{page}: images too small to read: {rep.small_images}"


@pytest.mark.parametrize("page", PAGES)
def test_no_network_request_is_attempted(book_reports, page):
    rep = book_reports[page]
    assert not rep.external_requests, f"{page}: tried to reach {rep.external_requests}"
    assert not rep.failed_requests, f"{page}: local requests failed: {rep.failed_requests}"


def test_screenshots_are_saved(book_reports):
    for stem, name in SCREENSHOT_PAGES.items():
        if f"book/{stem}.html" not in book_reports:
            assert stem == "08_representation", f"book/{stem}.html is required"
            continue
        with Image.open(SHOTS / f"{name}.png") as im:
            px = np.asarray(im.convert("L"), dtype=np.float64)
        assert px.shape[1] == 1280 and px.shape[0] >= 600
        assert px.std() > 10, f"{name}.png looks blank"  # text on white, not an empty page
