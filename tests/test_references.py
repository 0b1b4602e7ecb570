"""The repository stands on its own: no file refers to a document that is not in it, and the licence and
citation files exist and name the paper's authors."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
# A developers' briefing was once kept outside the repository; section references to it (its name in
# capitals followed by a section sign and number) or its file name would send a reader to nothing. The name is
# assembled here so that this file does not itself match a plain search for it.
_BRIEFING = "DES" + "IGN"
DANGLING = re.compile(_BRIEFING + r"(\.md| §)")
AUTHORS = ("Haowei", "Pengxu", "Dongyu", "Liang")


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    files = []
    for name in out.splitlines():
        path = REPO / name
        if path.is_file() and not path.is_symlink() and path.suffix not in (".png", ".jpg", ".safetensors", ".npz"):
            files.append(path)
    return files


def test_no_file_refers_to_an_absent_design_document():
    hits = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            if DANGLING.search(line) and path.name != "test_references.py":
                hits.append(f"{path.relative_to(REPO)}:{i}")
    assert not hits, f"references to a document that is not in the repository: {hits}"


def test_licence_and_citation_exist_and_name_the_papers_authors():
    licence = (REPO / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "CC BY 2.0" in licence  # the two scikit-learn photographs
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT" and cff["title"]
    paper = cff["references"][0]
    assert [a["given-names"] for a in paper["authors"]] == list(AUTHORS) and paper["year"] == 2026
    bib = (REPO / "book" / "references.bib").read_text()
    entry = bib[bib.index("@inproceedings{savl2026") :].split("\n}", 1)[0]
    assert "Anonymous" not in entry and all(name in entry for name in ("Li, Haowei", "Wei, Pengxu"))
