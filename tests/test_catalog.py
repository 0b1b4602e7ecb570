"""savl.data.catalog: the shipped catalog lists the datasets SAVL trains and evaluates on; strict validation,
verification of hand-built dataset folders, and a full download -> extract -> verify against a local server."""

import functools
import hashlib
import io
import socket
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from savl.data import catalog as cat
from savl.data import download_dataset, list_datasets, load_catalog, verify, verify_dataset
from savl.errors import ConfigError, DataError
from savl.io import write_image

EXPECTED_NAMES = ["DIV2K", "Flickr2K", "OST", "RealSR", "DRealSR", "SVSR", "RealSRSet", "DPED", "BSD100"]


def test_shipped_catalog_lists_the_expected_datasets():
    c = load_catalog()
    assert list(c) == EXPECTED_NAMES == list_datasets()
    # It ships inside the package; the repository's data/catalog.yaml is a link to the same file.
    assert cat.CATALOG_PATH == Path(__file__).resolve().parents[1] / "savl" / "data" / "catalog.yaml"
    assert (Path(__file__).resolve().parents[1] / "data" / "catalog.yaml").resolve() == cat.CATALOG_PATH.resolve()
    for name, e in c.items():
        assert e.name == name and e.description and e.licence and e.citation
        for f in e.files:
            assert f.url is None or f.url.startswith(("http://", "https://")), name
            assert f.sha256 is None or len(f.sha256) == 64
        if not e.files or any(f.url is None for f in e.files):
            assert e.note, f"{name}: no URL and no note on where to get it"
    assert c["DRealSR"].pairs[0].count == 93
    assert [x.count for x in c["DIV2K"].counts] == [800, 100]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "catalog.yaml"
    p.write_text(text)
    return p


GOOD = """
version: 1
datasets:
  Tiny:
    description: a test set
    licence: CC0
    layout: paired
    scale: [2]
    files:
      - name: tiny.zip
        url: {url}
        sha256: {sha}
    counts:
      - path: tiny/hr
        count: 2
    pairs:
      - path: "**/tiny"
        layout: folders
        scale: 2
        count: 2
  Manual:
    description: no public link
    licence: unknown
    layout: lr
    note: ask the authors
"""


def test_unknown_missing_and_malformed_keys_raise_one_line_config_errors(tmp_path):
    base = GOOD.format(url="http://127.0.0.1/x.zip", sha="null")
    assert set(load_catalog(_write(tmp_path, base))) == {"Tiny", "Manual"}
    bad = base.replace("        count: 2\n  Manual", "        count: 2\n        colour: red\n  Manual")
    with pytest.raises(ConfigError) as e:
        load_catalog(_write(tmp_path, bad))
    assert "unknown key 'datasets.Tiny.pairs.0.colour'" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown key 'datasets.Manual.homepagee'"):
        load_catalog(_write(tmp_path, base + "    homepagee: x\n"))
    with pytest.raises(ConfigError, match="unknown key 'extra'"):
        load_catalog(_write(tmp_path, base + "extra: 1\n"))
    with pytest.raises(ConfigError, match="missing key 'datasets.Manual.licence'"):
        load_catalog(_write(tmp_path, base.replace("    licence: unknown\n", "")))
    with pytest.raises(ConfigError, match="sha256"):
        load_catalog(_write(tmp_path, GOOD.format(url="http://127.0.0.1/x.zip", sha="abc123")))
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_catalog(_write(tmp_path, "version: 1\ndatasets: [\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_catalog(tmp_path / "nope.yaml")


def test_data_root_default_and_env_override(monkeypatch, tmp_path):
    monkeypatch.delenv("SAVL_DATA_DIR", raising=False)
    assert cat.data_root() == Path(__file__).resolve().parents[1] / "data" / "downloads"  # a source checkout
    monkeypatch.setenv("SAVL_DATA_DIR", str(tmp_path))
    assert cat.data_root() == tmp_path
    assert cat.data_root(tmp_path / "x") == tmp_path / "x"
    report = verify_dataset("DIV2K")
    assert report["ok"] is False and report["problems"] == [f"{tmp_path / 'DIV2K'}: not downloaded"]
    with pytest.raises(DataError, match="unknown dataset 'DIV3K'; known: DIV2K, Flickr2K"):
        verify_dataset("DIV3K")


def _tiny_zip() -> bytes:
    """tiny/hr/{a,b}.png with tiny/lr/{a,b}.png at x2."""
    buf = io.BytesIO()
    g = torch.Generator().manual_seed(0)
    with zipfile.ZipFile(buf, "w") as zf:
        for n in ("a", "b"):
            lr = torch.randint(0, 256, (3, 4, 5), generator=g).float() / 255
            hr = lr.repeat_interleave(2, 1).repeat_interleave(2, 2)
            for sub, img in (("hr", hr), ("lr", lr)):
                tmp = io.BytesIO()
                from PIL import Image

                arr = (img.permute(1, 2, 0) * 255).round().byte().numpy()
                Image.fromarray(arr).save(tmp, format="PNG")
                zf.writestr(f"tiny/{sub}/{n}.png", tmp.getvalue())
    return buf.getvalue()


def test_verify_counts_pairs_and_hashes(tmp_path):
    data = _tiny_zip()
    sha = hashlib.sha256(data).hexdigest()
    c = load_catalog(_write(tmp_path, GOOD.format(url="http://127.0.0.1/x.zip", sha=sha)))
    folder = tmp_path / "root" / "Tiny"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(folder)
    (folder / "tiny.zip").write_bytes(data)
    r = verify("Tiny", tmp_path / "root", catalog=c)
    assert r["ok"], r["problems"]
    assert r["counts"] == [{"path": "tiny/hr", "expected": 2, "found": 2, "ok": True}]
    assert r["pairs"][0]["pairs"] == 2 and r["files"][0]["sha256_ok"] is True

    (folder / "tiny.zip").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    write_image(folder / "tiny" / "lr" / "b.png", torch.zeros(3, 3, 5))  # wrong LR size
    (folder / "tiny" / "hr" / "a.png").unlink()
    r = verify("Tiny", tmp_path / "root", catalog=c)
    assert not r["ok"]
    assert r["files"][0]["sha256_ok"] is False and r["counts"][0]["found"] == 1
    text = " | ".join(r["problems"])
    assert "sha256 does not match" in text and "1 images, expected 2" in text
    assert "a.png: LR file has no HR partner" in text
    m = verify("Manual", tmp_path / "root", catalog=c)
    assert not m["ok"] and "not downloaded" in m["problems"][0]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.mark.network
def test_download_extract_verify_end_to_end(tmp_path):
    serve = tmp_path / "srv"
    serve.mkdir()
    data = _tiny_zip()
    (serve / "tiny.zip").write_bytes(data)
    handler = functools.partial(_QuietHandler, directory=str(serve))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/tiny.zip"
        c = load_catalog(_write(tmp_path, GOOD.format(url=url, sha=hashlib.sha256(data).hexdigest())))
        root = tmp_path / "root"
        folder = download_dataset("Tiny", root, catalog=c, progress=None, backoff=0)
        assert folder == root / "Tiny" and (folder / "tiny.zip").read_bytes() == data
        assert verify("Tiny", root, catalog=c)["ok"]
        # a rerun neither downloads nor extracts again
        (folder / "tiny" / "hr" / "keep.txt").write_text("x")
        download_dataset("Tiny", root, catalog=c, progress=None, backoff=0)
        assert (folder / "tiny" / "hr" / "keep.txt").exists()
        with pytest.raises(DataError, match="Manual: no download is known; ask the authors"):
            download_dataset("Manual", root, catalog=c)
        bad = load_catalog(_write(tmp_path, GOOD.format(url=url, sha="f" * 64)))
        with pytest.raises(DataError, match="sha256 mismatch"):
            download_dataset("Tiny", tmp_path / "other", catalog=bad, progress=None, backoff=0)
        assert not (tmp_path / "other" / "Tiny" / "tiny.zip").exists()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    # a port nothing listens on: unreachable, said in one line
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    gone = load_catalog(_write(tmp_path, GOOD.format(url=f"http://127.0.0.1:{dead}/x.zip", sha="null")))
    with pytest.raises(DataError, match="download failed after 2 attempts"):
        download_dataset("Tiny", tmp_path / "gone", catalog=gone, progress=None, retries=1, backoff=0)


def test_entries_without_url_say_where_to_get_them():
    with pytest.raises(DataError, match='RealSR: no download is known; Download "RealSR'):
        download_dataset("RealSR", "/nonexistent-root")
