"""savl.data.download against a local HTTP server on 127.0.0.1 (Range, cut transfers, failures) and
hand-made malicious archives. Hashes are checked against hashlib on the served bytes."""

import hashlib
import io
import os
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from savl.data.download import extract, fetch, sha256_file
from savl.errors import DataError

PAYLOAD = bytes((i * 7919 + i // 256) % 256 for i in range(300_000))
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Server:
    """A tiny file server with knobs: honour Range or not, cut the first transfers short, fail N times."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.support_range = True
        self.cut_after: int | None = None  # bytes sent before hanging up ...
        self.cuts_left = 0  # ... for this many responses
        self.fail_left = 0  # answer 503 this many times
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                if server.fail_left > 0:
                    server.fail_left -= 1
                    self.send_error(503, "try later")
                    return
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "no such file")
                    return
                start, status = 0, 200
                rng = self.headers.get("Range")
                if rng and server.support_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if server.cuts_left > 0 and server.cut_after is not None:
                    server.cuts_left -= 1
                    self.wfile.write(body[: server.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.mark.network
def test_full_download_with_hash(tmp_path):
    dest = tmp_path / "sub" / "file.bin"
    with _Server({"/f": PAYLOAD}) as srv:
        out = fetch(srv.url("/f"), dest, sha256=PAYLOAD_SHA, backoff=0)
        assert out == dest and dest.read_bytes() == PAYLOAD
        assert sha256_file(dest) == PAYLOAD_SHA
        assert not (tmp_path / "sub" / "file.bin.part").exists()
        # a second call with a good file does not touch the network
        n = len(srv.requests)
        fetch(srv.url("/f"), dest, sha256=PAYLOAD_SHA, backoff=0)
        assert len(srv.requests) == n


@pytest.mark.network
def test_truncated_transfer_resumes_with_range(tmp_path):
    dest = tmp_path / "file.bin"
    with _Server({"/f": PAYLOAD}) as srv:
        srv.cut_after, srv.cuts_left = 100_000, 2
        fetch(srv.url("/f"), dest, sha256=PAYLOAD_SHA, backoff=0, timeout=10)
        assert dest.read_bytes() == PAYLOAD
        # first request whole file, then resumes at 100000 (cut again) and at 200000
        assert [r for _, r in srv.requests] == [None, "bytes=100000-", "bytes=200000-"]


@pytest.mark.network
def test_existing_partial_file_is_resumed(tmp_path):
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:12345])
    with _Server({"/f": PAYLOAD}) as srv:
        fetch(srv.url("/f"), dest, sha256=PAYLOAD_SHA, backoff=0)
        assert srv.requests == [("/f", "bytes=12345-")]
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.network
def test_server_without_range_support_restarts_cleanly(tmp_path):
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"garbage that must not stay in front")
    with _Server({"/f": PAYLOAD}) as srv:
        srv.support_range = False
        fetch(srv.url("/f"), dest, sha256=PAYLOAD_SHA, backoff=0)
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.network
def test_retries_server_errors_then_gives_up(tmp_path):
    dest = tmp_path / "file.bin"
    with _Server({"/f": PAYLOAD}) as srv:
        srv.fail_left = 2
        fetch(srv.url("/f"), dest, retries=3, backoff=0)
        assert dest.read_bytes() == PAYLOAD and len(srv.requests) == 3
        srv.fail_left = 10
        with pytest.raises(DataError, match="after 3 attempts"):
            fetch(srv.url("/f"), tmp_path / "other.bin", retries=2, backoff=0)
        srv.fail_left = 0
        with pytest.raises(DataError, match="HTTP 404"):
            fetch(srv.url("/missing"), tmp_path / "missing.bin", backoff=0)
    assert not (tmp_path / "other.bin").exists() and not (tmp_path / "missing.bin").exists()


@pytest.mark.network
def test_wrong_hash_raises_and_leaves_nothing(tmp_path):
    dest = tmp_path / "file.bin"
    wrong = "0" * 64
    with _Server({"/f": PAYLOAD}) as srv:
        with pytest.raises(DataError) as e:
            fetch(srv.url("/f"), dest, sha256=wrong, backoff=0)
        msg = str(e.value)
        assert srv.url("/f") in msg and wrong in msg and PAYLOAD_SHA in msg and "\n" not in msg
    assert not dest.exists() and not (tmp_path / "file.bin.part").exists()


@pytest.mark.network
def test_corrupt_existing_file_is_downloaded_again(tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(PAYLOAD[:-1] + b"\x00")
    with _Server({"/f": PAYLOAD}) as srv:
        fetch(srv.url("/f"), dest, sha256=PAYLOAD_SHA, backoff=0)
        assert len(srv.requests) == 1
    assert dest.read_bytes() == PAYLOAD


def test_refuses_non_http_urls(tmp_path):
    with pytest.raises(DataError, match="http"):
        fetch("file:///etc/passwd", tmp_path / "x")


# ----------------------------------------------------------------------------------------- archives
def _tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None, mode="w:gz"):
    data = data or {}
    with tarfile.open(path, mode) as tf:
        for m in members:
            payload = data.get(m.name)
            if payload is not None:
                m.size = len(payload)
                tf.addfile(m, io.BytesIO(payload))
            else:
                tf.addfile(m)


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_tar_with_parent_traversal_is_refused(tmp_path):
    arc = tmp_path / "evil.tar.gz"
    good, evil = tarfile.TarInfo("ok.txt"), tarfile.TarInfo("../x")
    _tar(arc, [good, evil], {"ok.txt": b"fine", "../x": b"owned"})
    dest = tmp_path / "out"
    with pytest.raises(DataError, match=r"'\.\./x'"):
        extract(arc, dest)
    assert not (tmp_path / "x").exists()
    assert _listing(dest) == []  # nothing extracted, not even the good member
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # temp dir removed


def test_tar_with_absolute_path_is_refused(tmp_path):
    arc = tmp_path / "abs.tar"
    _tar(arc, [tarfile.TarInfo("/tmp/savl_abs_test")], {"/tmp/savl_abs_test": b"x"}, mode="w")
    with pytest.raises(DataError, match="absolute"):
        extract(arc, tmp_path / "out")


def test_tar_with_symlink_outside_is_refused(tmp_path):
    arc = tmp_path / "link.tar.bz2"
    link = tarfile.TarInfo("etc")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc"
    follow = tarfile.TarInfo("etc/savl_owned")  # the classic write-through-the-link attack
    _tar(arc, [link, follow], {"etc/savl_owned": b"owned"}, mode="w:bz2")
    with pytest.raises(DataError, match="'etc'"):
        extract(arc, tmp_path / "out")
    assert not Path("/etc/savl_owned").exists()
    assert _listing(tmp_path / "out") == []

    arc2 = tmp_path / "rel.tar.xz"
    rel = tarfile.TarInfo("a/up")
    rel.type, rel.linkname = tarfile.SYMTYPE, "../../secret"
    _tar(arc2, [rel], mode="w:xz")
    with pytest.raises(DataError, match="outside"):
        extract(arc2, tmp_path / "out")

    arc3 = tmp_path / "hard.tar"
    hard = tarfile.TarInfo("h")
    hard.type, hard.linkname = tarfile.LNKTYPE, "../../etc/passwd"
    _tar(arc3, [hard], mode="w")
    with pytest.raises(DataError, match="'h'"):
        extract(arc3, tmp_path / "out")


def test_tar_with_inside_symlink_and_files_extracts(tmp_path):
    arc = tmp_path / "good.tar.gz"
    f = tarfile.TarInfo("set/HR/0001.png")
    d = tarfile.TarInfo("set/HR")
    d.type = tarfile.DIRTYPE
    link = tarfile.TarInfo("set/latest.png")
    link.type, link.linkname = tarfile.SYMTYPE, "HR/0001.png"
    _tar(arc, [d, f, link], {"set/HR/0001.png": b"png bytes"})
    dest = extract(arc, tmp_path / "out")
    assert (dest / "set" / "HR" / "0001.png").read_bytes() == b"png bytes"
    assert (dest / "set" / "latest.png").read_bytes() == b"png bytes"


def test_good_zip_extracts_and_replaces_previous_entries(tmp_path):
    arc = tmp_path / "good.zip"
    files = {"DIV2K_valid_HR/0801.png": b"a" * 1000, "DIV2K_valid_HR/0802.png": os.urandom(500)}
    with zipfile.ZipFile(arc, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    dest = tmp_path / "out"
    (dest / "DIV2K_valid_HR").mkdir(parents=True)
    (dest / "DIV2K_valid_HR" / "stale.png").write_bytes(b"old")
    (dest / "keep.txt").write_text("untouched")
    extract(arc, dest)
    for name, data in files.items():
        assert (dest / name).read_bytes() == data
    assert not (dest / "DIV2K_valid_HR" / "stale.png").exists()
    assert (dest / "keep.txt").read_text() == "untouched"


def test_zip_traversal_and_garbage_are_refused(tmp_path):
    arc = tmp_path / "evil.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("fine.txt", b"ok")
        zf.writestr("../../zip_owned", b"owned")
    with pytest.raises(DataError, match="zip_owned"):
        extract(arc, tmp_path / "out")
    assert not (tmp_path.parent / "zip_owned").exists() and _listing(tmp_path / "out") == []
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive at all")
    with pytest.raises(DataError, match="not a zip or tar"):
        extract(junk, tmp_path / "out2")


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, target
    return m


@pytest.mark.parametrize("has_filter", [True, False], ids=["with-data-filter", "old-python"])
def test_tar_link_chain_out_of_the_destination_is_refused(tmp_path, monkeypatch, has_filter):
    """`d -> .`, then `d/e -> ..`: each name looks harmless, together they lead to the parent folder. Pythons
    before 3.10.12 / 3.11.4 have no `data` filter to catch it (simulated by removing it)."""
    if not has_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    arc = tmp_path / "chain.tar"
    evil = tarfile.TarInfo("e/outside/evil.txt")
    _tar(arc, [_link("d", "."), _link("d/e", ".."), evil], {"e/outside/evil.txt": b"owned"}, mode="w")
    work = tmp_path / "work"
    work.mkdir()
    (work / "outside").mkdir()
    with pytest.raises(DataError, match=r"'d/e'.*outside"):
        extract(arc, work / "out")
    assert not (work / "outside" / "evil.txt").exists()
    assert _listing(work) == ["outside"]  # nothing extracted, no temporary folder left


def test_tar_link_chains_are_judged_by_where_they_resolve(tmp_path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    dest = tmp_path / "out"
    cases = {
        # a link through a link whose target climbs out one level at a time
        "deep": [_link("a", "b/c"), _link("b", "."), _link("c", "..")],
        # '..' applies after the link it follows, as in the kernel: x -> d1/d2, then y -> x/../../..
        "dotdot-after-link": [_link("x", "d1/d2"), _link("y", "x/../../..")],
        # a loop of links
        "loop": [_link("p", "q"), _link("q", "p"), tarfile.TarInfo("p/file")],
        # a hard link through a link that leaves
        "hard": [_link("up", ".."), _link("h", "up/secret", tarfile.LNKTYPE)],
    }
    for label, members in cases.items():
        arc = tmp_path / f"{label}.tar"
        _tar(arc, members, {"p/file": b"x"}, mode="w")
        with pytest.raises(DataError, match="refused"):
            extract(arc, dest)
        assert _listing(dest) == [], label
    # Chains that stay inside are fine: d -> ., d/e -> d (i.e. `e` -> `.`), e/f.txt lands in the destination.
    arc = tmp_path / "inside.tar"
    _tar(arc, [_link("d", "."), _link("d/e", "d"), tarfile.TarInfo("e/f.txt")], {"e/f.txt": b"fine"}, mode="w")
    extract(arc, dest)
    assert (dest / "f.txt").read_bytes() == b"fine"
