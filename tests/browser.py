"""The built book as a reader's browser shows it, offline: headless Chromium over its DevTools protocol.

:func:`check_pages` opens each HTML page (``file://``, no network), waits for MathJax to typeset, and
reports per page: the math elements left untypeset (raw LaTeX), the images that did not load, and
whether anything is wider than the page (the document scrolls sideways, or an element of the article
reaches past the viewport outside a container that scrolls: clipped by one that hides its overflow, it
is cut off). Used by ``tests/test_book.py``; by hand::

    python tests/browser.py _build/html
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

#: Chromium's names in Debian and elsewhere.
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WIDTH, HEIGHT = 1280, 900

#: Runs in the page: waits for MathJax, then measures (a JSON string).
_PROBE = """
(async () => {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) { await mj.startup.promise; }
  await new Promise(r => setTimeout(r, 300));
  const maths = [...document.querySelectorAll('.math')];
  const raw = maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 60));
  const images = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))
    .map(i => i.getAttribute('src'));
  const width = document.documentElement.clientWidth;
  const scrolls = e => { for (let a = e.parentElement; a; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX;
      if (o === 'auto' || o === 'scroll') return true; }
    return false; };
  const article = document.querySelector('main') || document.body;
  const wide = [...article.querySelectorAll('*')].filter(e => {
      const r = e.getBoundingClientRect(); return r.width > 0 && r.right > width + 1 && !scrolls(e); })
    .slice(0, 5)
    .map(e => e.tagName.toLowerCase() + (e.className ? '.' + String(e.className).split(' ')[0] : ''));
  return JSON.stringify({maths: maths.length, raw, images, page_width: document.documentElement.scrollWidth,
                         width, wide});
})()
"""


def find_browser() -> str | None:
    """The path of a Chromium on this machine, or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


async def _evaluate(ws_url: str, url: str, timeout: float) -> dict[str, Any]:
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(ws_url, max_message_size=64 * 2**20)
    counter = 0

    async def call(method: str, **params: Any) -> dict[str, Any]:
        nonlocal counter
        counter += 1
        conn.write_message(json.dumps({"id": counter, "method": method, "params": params}))
        while True:
            message = await asyncio.wait_for(conn.read_message(), timeout)
            if message is None:
                raise RuntimeError("the browser closed the connection")
            reply = json.loads(message)
            if reply.get("id") == counter:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    await call("Page.enable")
    await call("Page.navigate", url=url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # until the document has loaded
        state = await call("Runtime.evaluate", expression="document.readyState", returnByValue=True)
        if state["result"].get("value") == "complete":
            break
        await asyncio.sleep(0.1)
    result = await call("Runtime.evaluate", expression=_PROBE, awaitPromise=True, returnByValue=True)
    conn.close()
    return json.loads(result["result"]["value"])


def _page_target(port: int) -> str:
    """The websocket URL of the browser's first page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as reply:  # noqa: S310
        targets = json.loads(reply.read())
    return next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")


def check_pages(pages: list[Path], browser: str | None = None, timeout: float = 30.0) -> dict[str, dict]:
    """Open every page in one headless Chromium (no network: ``file://`` URLs, proxy switched off) and
    return page name -> the probe's findings (``raw`` math, failed ``images``, ``wide`` elements,
    ``page_width`` against ``width``)."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError(f"no Chromium found (tried {', '.join(BROWSERS)})")
    port = 9300 + (hash(str(pages[0])) % 500)
    # Chromium's helper processes can still write the throwaway profile while it is removed
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [
                browser,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-proxy-server",
                "--allow-file-access-from-files",
                f"--window-size={WIDTH},{HEIGHT}",
                f"--remote-debugging-port={port}",
                "--remote-allow-origins=*",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            ws_url = None
            deadline = time.monotonic() + 90  # a loaded 2-core machine can take long to start it
            while ws_url is None and time.monotonic() < deadline and proc.poll() is None:
                try:
                    ws_url = _page_target(port)
                except (OSError, StopIteration, ValueError):
                    time.sleep(0.2)
            if ws_url is None:
                state = "it exited" if proc.poll() is not None else "after 90 s"
                raise RuntimeError(f"{browser} did not open its DevTools port {port} ({state})")
            return {
                page.stem: asyncio.run(_evaluate(ws_url, page.resolve().as_uri(), timeout)) for page in pages
            }
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def problems(findings: dict[str, dict]) -> list[str]:
    """One line per problem found by :func:`check_pages` (empty: every page passes)."""
    out = []
    for page, f in findings.items():
        if f["raw"]:
            out.append(f"{page}: {len(f['raw'])} of {f['maths']} formulas not rendered, e.g. {f['raw'][0]!r}")
        if f["images"]:
            out.append(f"{page}: images not loaded: {f['images'][:3]}")
        if f["page_width"] > f["width"] or f["wide"]:
            out.append(f"{page}: wider than the page ({f['page_width']} > {f['width']} px; {f['wide']})")
    return out


if __name__ == "__main__":
    html = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html")
    found = check_pages(
        sorted(p for p in html.glob("*.html") if p.name not in ("genindex.html", "search.html"))
    )
    for line in problems(found) or [
        f"{len(found)} pages: math rendered, images loaded, nothing wider than the page"
    ]:
        print(line)
