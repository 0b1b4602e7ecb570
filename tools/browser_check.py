"""Open pages of the built book in headless Chromium, as a reader would, and report what went wrong.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages
separated by NUL bytes on file descriptors 3 and 4), so nothing beyond the standard library is needed:
no websockets package, no Selenium, no Playwright. The book is served by a local HTTP server on
127.0.0.1, and every request a page makes is recorded from the protocol's ``Network`` events; any
request whose address is not that server (other than ``data:``/``blob:``/``about:``) counts as an
attempted network request. ``--host-resolver-rules`` additionally maps every other host name to
"not found", so an offline check stays offline even when a request does slip out.

For each page the report says: how many math elements Sphinx emitted and how many MathJax rendered
(``mjx-container``), MathJax error boxes (``mjx-merror``), raw TeX left in the visible text (``$$``,
``\\begin{``, ``\\(``), raw Markdown tables left in the text (a ``| --- |`` separator row outside code),
content wider than the main column (an element that scrolls or clips sideways, or sticks out of the
column: long code lines, wide equations, wide tables), images that did not decode (``naturalWidth == 0``),
images drawn so small that their labels cannot be read (see :data:`MIN_LABEL_PT`), failed local requests
and attempted external ones; optionally a PNG screenshot.

    python tools/browser_check.py _build/html book/intro.html book/02_elbo_mi.html --screenshots build/screenshots

exits 1 when a page has a problem. Written by hand: no maintained package drives Chromium over a pipe
with the standard library only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import functools
import http.server
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Headless, sandbox-free (CI containers), no background traffic, and every host but the local one unresolvable.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    # every host except the local server resolves to "not found": nothing can leave the machine
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--remote-debugging-pipe",
)

#: Legibility of figures: the smallest label a figure is assumed to carry (matplotlib's legends at
#: ``fontsize=8``), and the smallest height in CSS pixels at which it still reads on the page.
MIN_LABEL_PT = 8
MIN_LABEL_PX = 7.0
#: Resolution assumed for an image whose file records none (one pixel per point).
DEFAULT_DPI = 72.0

LOCAL_SCHEMES = ("data:", "blob:", "about:", "chrome:", "devtools:")

# Runs in the page once it has loaded: waits for MathJax's typesetting and for every image to decode,
# then measures what a reader sees. Code blocks, scripts and MathJax's own output are removed from a copy
# of the body before looking for raw TeX, so TeX shown on purpose inside code is not flagged.
_MEASURE_JS = r"""
(async () => {
  const mj = window.MathJax;
  let mathjax = "absent";
  if (mj && mj.startup && mj.startup.promise) {
    await mj.startup.promise;
    mathjax = (mj.version || "3");
  }
  const imgs = Array.from(document.images);
  for (const img of imgs) { if (img.loading === "lazy") img.loading = "eager"; }
  await Promise.all(imgs.map(img => img.decode().catch(() => null)));
  const body = document.body.cloneNode(true);
  body.querySelectorAll("pre, code, script, style, mjx-container, .highlight, textarea")
      .forEach(el => el.remove());
  const text = body.textContent || "";
  const raw = [];
  for (const token of ["$$", "\\begin{", "\\[", "\\("]) {
    const i = text.indexOf(token);
    if (i >= 0) raw.push(text.slice(Math.max(0, i - 40), i + 40).replace(/\s+/g, " "));
  }
  // a Markdown table that was not rendered leaves its separator row (| --- | --- |) in the text; Sphinx's
  // smart quotes turn "---" into an em dash (and "--" into an en dash), so those count as well
  const rawTables = [];
  const dash = "(?:-{3,}|[\u2013\u2014]-*)";
  const sep = new RegExp(`\\|[ \\t]*:?${dash}:?[ \\t]*(\\|[ \\t]*:?${dash}:?[ \\t]*)*\\|?`, "g");
  for (const m of text.matchAll(sep)) {
    rawTables.push(text.slice(Math.max(0, m.index - 60), m.index + 40).replace(/\s+/g, " "));
  }
  // the main column: what is wider than it is either clipped or needs sideways scrolling
  const col = document.querySelector("article.bd-article") || document.querySelector("main")
      || document.body;
  const colRect = col.getBoundingClientRect();
  const describe = el => {
    const cls = (typeof el.className === "string" && el.className) ? "." + el.className.trim().split(/\s+/)[0] : "";
    const what = (el.textContent || el.getAttribute("src") || "").replace(/\s+/g, " ").trim().slice(0, 60);
    return `${el.tagName.toLowerCase()}${cls}`
        + ` (${Math.round(el.scrollWidth)} px content in ${Math.round(el.clientWidth)} px): ${what}`;
  };
  // MathJax keeps an invisible MathML copy of each formula for screen readers; it would count in the
  // scroll width of the formula's box, so it is taken out of the layout while measuring
  const hideMml = document.createElement("style");
  hideMml.textContent = "mjx-assistive-mml { display: none !important; }";
  document.head.appendChild(hideMml);
  const wide = [];
  const flagged = [];  // report the outermost offender only, not each of its descendants
  const slack = 4;  // px: italic overhang and sub-pixel rounding are not overflow
  if (col.scrollWidth > col.clientWidth + slack) wide.push("main column " + describe(col));
  for (const el of col.querySelectorAll("*")) {
    // inside a formula only the formula's own box counts (MathJax's stretchy glyphs clip on purpose)
    if (el.parentElement && el.parentElement.closest("mjx-container")) continue;
    if (flagged.some(f => f.contains(el))) continue;
    const rect = el.getBoundingClientRect();
    if (rect.width === 0 && rect.height === 0) continue;  // not displayed (e.g. a collapsed block)
    const style = getComputedStyle(el);
    const clips = style.overflowX !== "visible" && style.display !== "inline";
    if (clips && el.scrollWidth > el.clientWidth + slack) {
      wide.push(describe(el));
      flagged.push(el);
    } else if (rect.right > colRect.right + slack) {
      wide.push(`${describe(el)} (sticks out ${Math.round(rect.right - colRect.right)} px)`);
      flagged.push(el);
    }
  }
  hideMml.remove();
  const mathSources = Array.from(document.querySelectorAll(".math"));
  return {
    title: document.title,
    mathjax: mathjax,
    math_elements: mathSources.length,
    math_unrendered: mathSources.filter(el => !el.querySelector("mjx-container")).length,
    mjx_containers: document.querySelectorAll("mjx-container").length,
    mjx_errors: Array.from(document.querySelectorAll("mjx-merror"))
        .map(el => (el.getAttribute("data-mjx-error") || el.textContent || "").slice(0, 120)),
    raw_tex: raw,
    raw_tables: rawTables,
    too_wide: wide,
    column_width: Math.round(col.clientWidth),
    images: imgs.map(img => ({src: img.currentSrc || img.src, complete: img.complete,
                              width: img.naturalWidth, height: img.naturalHeight,
                              shown_width: img.getBoundingClientRect().width})),
  };
})()
"""


@dataclass
class PageReport:
    """What one page looked like in the browser; ``problems`` is empty when the page is fine."""

    url: str
    title: str = ""
    mathjax: str = "absent"
    math_elements: int = 0
    math_unrendered: int = 0
    mjx_containers: int = 0
    mjx_errors: list[str] = field(default_factory=list)
    raw_tex: list[str] = field(default_factory=list)
    raw_tables: list[str] = field(default_factory=list)
    too_wide: list[str] = field(default_factory=list)
    column_width: int = 0
    images: list[dict] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    screenshot: str | None = None

    @property
    def broken_images(self) -> list[str]:
        return [i["src"] for i in self.images if not i["complete"] or i["width"] == 0]

    @property
    def small_images(self) -> list[str]:
        """Images drawn so small that a label of :data:`MIN_LABEL_PT` would be under :data:`MIN_LABEL_PX`.

        ``px_per_pt`` (filled in by :func:`check_pages` from the file's resolution) is how many CSS pixels
        one typographic point of the figure takes on the page: shown width / natural width x dpi / 72.
        """
        return [
            f"{i['src']} ({i['shown_width']:.0f} of {i['width']} px shown at {i['dpi']:.0f} dpi: a {MIN_LABEL_PT} pt "
            f"label is {MIN_LABEL_PT * i['px_per_pt']:.1f} px high)"
            for i in self.images
            if i.get("px_per_pt") is not None and MIN_LABEL_PT * i["px_per_pt"] < MIN_LABEL_PX
        ]

    @property
    def problems(self) -> list[str]:
        out: list[str] = []
        if self.math_elements and self.mathjax == "absent":
            out.append(f"{self.math_elements} math elements but MathJax did not load")
        if self.math_unrendered:
            out.append(f"{self.math_unrendered} of {self.math_elements} math elements not rendered by MathJax")
        out += [f"MathJax error: {e}" for e in self.mjx_errors]
        out += [f"raw TeX in the text: ...{t}..." for t in self.raw_tex]
        out += [f"raw Markdown table in the text: ...{t}..." for t in self.raw_tables]
        out += [f"wider than the column ({self.column_width} px): {w}" for w in self.too_wide]
        out += [f"image did not load: {s}" for s in self.broken_images]
        out += [f"image too small to read its labels: {s}" for s in self.small_images]
        out += [f"external request attempted: {u}" for u in self.external_requests]
        out += [f"local request failed: {u}" for u in self.failed_requests]
        return out


class CDPError(RuntimeError):
    """Chromium answered a DevTools command with an error, or did not answer in time."""


class Chromium:
    """A headless Chromium process driven over ``--remote-debugging-pipe`` (DevTools protocol)."""

    def __init__(self, executable: str | None = None, width: int = 1280, height: int = 1400, timeout: float = 60.0):
        exe = executable or os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
        if not exe:
            raise FileNotFoundError(
                "chromium not found: install it (Debian: apt-get install -y chromium) or set CHROMIUM"
            )
        self.timeout = timeout
        self.width, self.height = width, height
        self._profile = tempfile.TemporaryDirectory(prefix="savl-chromium-")
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}"]
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # the protocol pipe must sit on descriptors 3 (commands in) and 4 (answers out) of the browser;
        # the ends are first moved above 4 so that placing one cannot overwrite the other
        to_chrome_r, from_chrome_w = (_move_above_4(fd) for fd in (to_chrome_r, from_chrome_w))

        def place_pipe() -> None:  # runs in the child between fork and exec
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [exe, *flags, "about:blank"],
            preexec_fn=place_pipe,
            close_fds=False,  # Python's own descriptors are non-inheritable; 3 and 4 are made inheritable
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id = 0
        self._answers: dict[int, queue.Queue] = {}
        self._events: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # -- protocol plumbing -------------------------------------------------------------------------
    def _read_loop(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                self._events.put(None)
                for q in list(self._answers.values()):
                    q.put({"error": {"message": "chromium closed the DevTools pipe"}})
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    q = self._answers.get(msg["id"])
                    if q is not None:
                        q.put(msg)
                else:
                    self._events.put(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one DevTools command and wait for its answer; raise :class:`CDPError` on an error answer."""
        with self._lock:
            self._next_id += 1
            mid = self._next_id
            self._answers[mid] = q = queue.Queue()
        msg: dict = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        except OSError as err:
            raise CDPError(f"{method}: chromium is not listening ({err}): {self.log_tail(500)}") from None
        try:
            answer = q.get(timeout=self.timeout)
        except queue.Empty:
            raise CDPError(f"{method}: no answer from chromium in {self.timeout:.0f} s") from None
        finally:
            self._answers.pop(mid, None)
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error'].get('message')}")
        return answer.get("result", {})

    def _drain(self, until: str | None, session: str, sink: list[dict], deadline: float) -> None:
        """Move events into ``sink`` until the event ``until`` of ``session`` arrives (or just drain)."""
        while True:
            left = deadline - time.monotonic()
            try:
                ev = self._events.get(timeout=max(0.0, left)) if until else self._events.get_nowait()
            except queue.Empty:
                if until:
                    raise CDPError(f"timed out waiting for {until}") from None
                return
            if ev is None:
                raise CDPError("chromium exited: " + self.log_tail())
            if ev.get("sessionId") == session:
                sink.append(ev)
                if until and ev.get("method") == until:
                    return

    def log_tail(self, n: int = 2000) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-n:]

    # -- what a reader does --------------------------------------------------------------------------
    def visit(self, url: str, local_origin: str, screenshot: Path | None = None) -> PageReport:
        """Load ``url`` in a fresh tab, let MathJax and images finish, and report (DevTools protocol)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        events: list[dict] = []
        try:
            for domain in ("Network", "Page", "Runtime"):
                self.send(f"{domain}.enable", session=session)
            self.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
            self.send("Page.navigate", {"url": url}, session=session)
            self._drain("Page.loadEventFired", session, events, time.monotonic() + self.timeout)
            res = self.send(
                "Runtime.evaluate",
                {"expression": _MEASURE_JS, "awaitPromise": True, "returnByValue": True},
                session=session,
            )
            if "exceptionDetails" in res:
                raise CDPError(f"measuring {url} raised: {res['exceptionDetails'].get('text')}")
            # requests started by MathJax after load (fonts) have been issued by now; let them settle
            time.sleep(0.3)
            self._drain(None, session, events, 0.0)
            report = PageReport(url=url, **res["result"]["value"])
            report.external_requests, report.failed_requests = _classify_requests(events, local_origin)
            if screenshot is not None:
                # the top of the page, up to three screens tall, so the first equations are in the picture
                height = self.send(
                    "Runtime.evaluate",
                    {"expression": "document.documentElement.scrollHeight", "returnByValue": True},
                    session=session,
                )["result"]["value"]
                clip = {"x": 0, "y": 0, "width": self.width, "height": min(int(height), 3 * self.height), "scale": 1}
                shot = self.send(
                    "Page.captureScreenshot",
                    {"format": "png", "clip": clip, "captureBeyondViewport": True},
                    session=session,
                )
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                tmp = screenshot.with_name(screenshot.name + ".tmp")
                tmp.write_bytes(base64.b64decode(shot["data"]))
                os.replace(tmp, screenshot)
                report.screenshot = str(screenshot)
            return report
        finally:
            with contextlib.suppress(CDPError):
                self.send("Target.closeTarget", {"targetId": target})

    def close(self) -> None:
        with contextlib.suppress(CDPError, OSError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self._to_chrome)
        self._reader.join(timeout=5)
        with contextlib.suppress(OSError):
            os.close(self._from_chrome)
        self._log.close()
        self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _classify_requests(events: list[dict], local_origin: str) -> tuple[list[str], list[str]]:
    """Split a page's Network events into attempted external requests and failed local ones."""
    urls: dict[str, str] = {}
    external: list[str] = []
    failed: list[str] = []
    for ev in events:
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Network.requestWillBeSent":
            u = p["request"]["url"]
            urls[p["requestId"]] = u
            if not (u.startswith(local_origin) or u.startswith(LOCAL_SCHEMES)) and u not in external:
                external.append(u)
        elif method == "Network.webSocketCreated" and p["url"] not in external:
            external.append(p["url"])
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            u = urls.get(p["requestId"], "?")
            if u.startswith(local_origin):
                failed.append(f"{u} ({p.get('errorText')})")
        elif method == "Network.responseReceived" and p["response"]["status"] >= 400:
            u = p["response"]["url"]
            # the browser asks for /favicon.ico on its own; Sphinx books need not have one
            if u.startswith(local_origin) and u != local_origin + "favicon.ico":
                failed.append(f"{u} (HTTP {p['response']['status']})")
    return external, failed


def _move_above_4(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5)
    os.close(fd)
    return high


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output readable
        pass


@contextlib.contextmanager
def serve(directory: str | os.PathLike[str]):
    """Serve ``directory`` on 127.0.0.1 at a free port for the duration; yields the origin URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def check_pages(
    html_root: str | os.PathLike[str],
    pages: list[str],
    screenshots: dict[str, Path] | None = None,
    chromium: str | None = None,
) -> dict[str, PageReport]:
    """Serve ``html_root`` locally and visit each page (paths relative to it) in one headless Chromium.

    ``screenshots`` maps a page to the PNG to write for it. Returns one :class:`PageReport` per page.
    """
    screenshots = screenshots or {}
    reports: dict[str, PageReport] = {}
    with serve(html_root) as origin, Chromium(chromium) as browser:
        for page in pages:
            reports[page] = rep = browser.visit(origin + page, origin, screenshots.get(page))
            for img in rep.images:
                _add_scale(img, Path(html_root), origin)
    return reports


def _add_scale(img: dict, html_root: Path, origin: str) -> None:
    """Add ``dpi`` and ``px_per_pt`` to an image record that was drawn on the page (a local raster file)."""
    src = img["src"]
    if not src.startswith(origin) or not img.get("width") or not img.get("shown_width"):
        return  # not shown (collapsed, broken) or not ours: nothing to measure
    path = html_root / src[len(origin) :].split("?")[0].split("#")[0]
    dpi = DEFAULT_DPI
    try:
        from PIL import Image  # optional: without Pillow every image counts as 72 dpi

        with Image.open(path) as im:
            dpi = float((im.info.get("dpi") or (DEFAULT_DPI,))[0]) or DEFAULT_DPI
    except (ImportError, OSError, ValueError):
        pass
    img["dpi"] = dpi
    img["px_per_pt"] = img["shown_width"] / img["width"] * dpi / 72.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html_root", help="the built book, e.g. _build/html")
    ap.add_argument("pages", nargs="+", help="pages relative to html_root, e.g. book/intro.html")
    ap.add_argument("--screenshots", type=Path, help="folder for one PNG per page")
    ap.add_argument("--json", action="store_true", help="print the full reports as JSON")
    args = ap.parse_args(argv)
    shots = {p: args.screenshots / (Path(p).stem + ".png") for p in args.pages} if args.screenshots else {}
    reports = check_pages(args.html_root, args.pages, shots)
    bad = 0
    for page, rep in reports.items():
        if args.json:
            print(json.dumps({**asdict(rep), "problems": rep.problems}, indent=1))
        status = "ok" if not rep.problems else f"{len(rep.problems)} problem(s)"
        print(f"{page}: {status}; math {rep.mjx_containers}/{rep.math_elements}, images {len(rep.images)}")
        for p in rep.problems:
            print(f"  - {p}")
        bad += bool(rep.problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
