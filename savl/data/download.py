"""Checksummed, resumable downloads and safe archive extraction (what `savl data download` runs).

Standard library only (urllib, zipfile, tarfile): no new dependencies. Our own member checks run before
anything is written, so a refused archive leaves nothing behind, on every Python version: each member's
real location is resolved through the links the archive itself creates, so a chain of harmless-looking
links cannot lead outside the destination. The `data` extraction filter of newer Pythons (3.10.12+,
3.11.4+) is applied on top where available, and the extracted tree is checked once more before it moves
into place.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from savl.errors import DataError

_CHUNK = 1 << 20
_RETRY_HTTP = {408, 425, 429, 500, 502, 503, 504}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class _Incomplete(Exception):
    """A transfer that ended early; the partial file is kept for a Range resume."""


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) from "bytes 100-199/200" or "bytes */200"; None where absent."""
    if not value or "/" not in value:
        return None, None
    span, tail = value.split(" ", 1)[-1].rsplit("/", 1)
    first = span.split("-", 1)[0].strip()
    tail = tail.strip()
    return (int(first) if first.isdigit() else None), (int(tail) if tail.isdigit() else None)


def _transfer(url: str, part: Path, timeout: float, progress) -> None:
    """One attempt: continue `part` from its current size if the server honours Range."""
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "savl-data/1"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            _, total = _content_range(e.headers.get("Content-Range"))
            if total == offset:
                return  # the partial file is already complete
            part.unlink()  # the partial file is longer than the remote one: start over
            raise _Incomplete(f"range not satisfiable at offset {offset}") from None
        raise
    with resp:
        status = resp.status
        first, total = _content_range(resp.headers.get("Content-Range"))
        if status == 206:
            if first != offset:  # not the range we asked for: drop the partial file and start over
                part.unlink(missing_ok=True)
                raise _Incomplete(f"server answered range {first} for offset {offset}")
            start, mode = offset, "ab"
        else:  # 200: the server ignored Range (or there was none): rewrite from the start
            start, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        done = start
        with open(part, mode) as f:
            while True:
                block = resp.read(_CHUNK)
                if not block:
                    break
                f.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
    if total is not None and done < total:
        raise _Incomplete(f"got {done} of {total} bytes")


def fetch(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    *,
    retries: int = 3,
    timeout: float = 60.0,
    backoff: float = 1.0,
    progress=None,
) -> Path:
    """Download `url` to `dest`: stream to `dest.part`, resume it with an HTTP Range request after a
    cut-off transfer, retry connection errors with exponential backoff (`backoff * 2**k` seconds), check
    `sha256`, then rename atomically. An existing `dest` with the right hash is kept; one with the wrong
    hash is downloaded again. A wrong final hash raises DataError (url and both hashes) and leaves no
    file at `dest`. `progress(done_bytes, total_or_None)` is called as bytes arrive.
    """
    dest = Path(dest)
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in {"http", "https"}:
        raise DataError(f"{url}: only http(s) URLs can be downloaded")
    expected = sha256.lower() if sha256 else None
    if dest.exists():
        if expected is None:
            return dest
        if sha256_file(dest) == expected:
            return dest
        dest.unlink()  # corrupt or stale: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    last: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            _transfer(url, part, timeout, progress)
            break
        except urllib.error.HTTPError as e:
            if e.code not in _RETRY_HTTP:
                raise DataError(f"{url}: HTTP {e.code} {e.reason}") from None
            last = e
        except (_Incomplete, urllib.error.URLError, http.client.HTTPException, OSError) as e:
            last = e
    else:
        reason = getattr(last, "reason", None) or last
        kept = f"; partial file kept at {part}" if part.exists() else ""
        raise DataError(f"{url}: download failed after {retries + 1} attempts ({reason}){kept}")

    if expected is not None:
        got = sha256_file(part)
        if got != expected:
            part.unlink()
            raise DataError(f"{url}: sha256 mismatch, expected {expected}, got {got}; nothing saved")
    os.replace(part, dest)
    return dest


# ------------------------------------------------------------------------------------------- extraction
def _safe_name(name: str, archive: Path) -> str:
    """Normalised relative member path; refuses absolute paths and `..` traversal."""
    n = name.replace("\\", "/")
    if n.startswith("/") or (len(n) > 1 and n[1] == ":"):
        raise DataError(f"{archive}: member {name!r} has an absolute path; refused")
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"{archive}: member {name!r} leaves the destination ('..'); refused")
    return "/".join(parts)


def _check_link(member: str, target: str, archive: Path, *, relative_to_member: bool) -> None:
    """A zip link member (extracted as a plain file by zipfile) must still name a place inside the folder."""
    t = target.replace("\\", "/")
    if t.startswith("/") or (len(t) > 1 and t[1] == ":"):
        raise DataError(f"{archive}: link {member!r} points to absolute path {target!r}; refused")
    base = posixpath.dirname(member) if relative_to_member else ""
    resolved = posixpath.normpath(posixpath.join(base, t))
    if resolved == ".." or resolved.startswith("../"):
        raise DataError(f"{archive}: link {member!r} points outside the destination ({target!r}); refused")


class _Tree:
    """The folder a tar archive would build, as far as links go: where each path really ends up.

    Links are judged by where they resolve, not by their names: `d -> .` followed by `d/e -> ..` is a link
    to the parent of the destination although neither name contains a '..' that leaves it. Paths are
    resolved component by component as the kernel does (a link is followed before a later '..' applies).
    """

    _MAX_HOPS = 40  # the kernel's own limit on symbolic links in one lookup

    def __init__(self, archive: Path):
        self.archive = archive
        self.links: dict[str, str] = {}  # real location (relative to the destination) -> link target

    def resolve(self, parts: list[str], member: str, follow_last: bool = True) -> list[str]:
        """Real location of `parts` (relative to the destination); DataError if it leaves it."""
        out: list[str] = []
        todo = list(parts)
        hops = 0
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not out:
                    raise DataError(f"{self.archive}: member {member!r} resolves outside the destination; refused")
                out.pop()
                continue
            out.append(part)
            target = self.links.get("/".join(out))
            if target is not None and (todo or follow_last):
                hops += 1
                if hops > self._MAX_HOPS:
                    raise DataError(f"{self.archive}: member {member!r} goes through a loop of links; refused")
                if target.startswith("/"):
                    raise DataError(f"{self.archive}: member {member!r} goes through an absolute link; refused")
                out.pop()
                todo = target.split("/") + todo
        return out

    def add(self, m: tarfile.TarInfo, name: str) -> None:
        if not name:  # the destination folder itself
            return
        parts = name.split("/")
        where = [*self.resolve(parts[:-1], m.name), parts[-1]]
        if m.issym():
            target = m.linkname.replace("\\", "/")
            if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
                raise DataError(f"{self.archive}: link {m.name!r} points to absolute path {m.linkname!r}; refused")
            try:
                self.resolve([*where[:-1], *target.split("/")], m.name)
            except DataError:
                raise DataError(
                    f"{self.archive}: link {m.name!r} points outside the destination ({m.linkname!r}); refused"
                ) from None
            self.links["/".join(where)] = target
            return
        if m.islnk():  # a hard link names its target from the archive root
            try:
                self.resolve(_safe_name(m.linkname, self.archive).split("/"), m.name)
            except DataError:
                raise DataError(
                    f"{self.archive}: link {m.name!r} points outside the destination ({m.linkname!r}); refused"
                ) from None
        # Files and folders are opened through a link at their own name too (open() follows it).
        real = self.resolve(where, m.name)
        self.links.pop("/".join(real), None)


def _check_tar(tf: tarfile.TarFile, archive: Path) -> None:
    tree = _Tree(archive)
    for m in tf.getmembers():
        name = _safe_name(m.name, archive)
        if not (m.issym() or m.islnk() or m.isfile() or m.isdir()):
            raise DataError(f"{archive}: member {m.name!r} is a device or fifo; refused")
        if not name and not m.isdir():
            raise DataError(f"{archive}: member {m.name!r} names the destination itself; refused")
        tree.add(m, name)


def _check_extracted(root: Path, archive: Path) -> None:
    """After extraction: every link on disk must resolve inside `root` (a second, independent check)."""
    real_root = os.path.realpath(root)
    for folder, dirs, files in os.walk(root):
        for entry in dirs + files:
            p = os.path.join(folder, entry)
            if os.path.islink(p):
                real = os.path.realpath(p)
                if os.path.commonpath([real_root, real]) != real_root:
                    rel = os.path.relpath(p, root)
                    raise DataError(f"{archive}: link {rel!r} resolves outside the destination; refused")


def _check_zip(zf: zipfile.ZipFile, archive: Path) -> None:
    for info in zf.infolist():
        name = _safe_name(info.filename, archive)
        if stat.S_ISLNK(info.external_attr >> 16):
            _check_link(name, zf.read(info).decode("utf-8", "replace"), archive, relative_to_member=True)


def extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into folder `dest`.

    Every member is checked first: absolute paths, `..` traversal, links that resolve outside `dest`
    and device files raise DataError naming the member, and nothing is written. Extraction goes to a
    temporary folder beside `dest`; each top-level entry is then renamed into `dest` (an entry of the
    same name already there is replaced), so an interrupted run leaves no half-extracted tree.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(f"{archive}: no such archive")
    if zipfile.is_zipfile(archive):
        kind = "zip"
    elif tarfile.is_tarfile(archive):
        kind = "tar"
    else:
        raise DataError(f"{archive}: not a zip or tar archive")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".extract"))
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                _check_zip(zf, archive)
                zf.extractall(tmp)
        else:
            try:
                with tarfile.open(archive) as tf:
                    _check_tar(tf, archive)
                    if hasattr(tarfile, "data_filter"):  # defence in depth on Pythons that have it
                        tf.extractall(tmp, filter="data")
                    else:
                        tf.extractall(tmp)
                _check_extracted(tmp, archive)
            except tarfile.TarError as e:
                raise DataError(f"{archive}: corrupt or refused tar archive ({e})") from None
        dest.mkdir(parents=True, exist_ok=True)
        for entry in sorted(tmp.iterdir()):
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)
    except zipfile.BadZipFile as e:
        raise DataError(f"{archive}: corrupt zip archive ({e})") from None
    except OSError as e:  # a full disk, a read-only destination, a member that clashes with another
        raise DataError(f"{archive}: cannot extract into {dest} ({e.strerror or e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
