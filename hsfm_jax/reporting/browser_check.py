r"""Renders an HTML page in headless Chromium and reports what went wrong: a page check.

  python -m hsfm_jax.reporting.browser_check runs/digit_dominoes/report.html --screenshot=report.png

Chromium (the Debian package ``chromium``) runs headless, driven over the DevTools protocol on
a pipe (``--remote-debugging-pipe``: no port, no websocket library). The page is loaded, every
console message, uncaught exception, log entry and network request is recorded, and a
screenshot of the whole page is taken. `check` returns them; the command line prints each
problem on one line and exits 1 when there is one: a console error or warning, an exception,
a log error (e.g. a resource that failed to load), a request that leaves the page (anything but
``file:`` and ``data:``), or a blank screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",  # as root (CI containers)
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)


class Outcome(NamedTuple):
    """What rendering a page gave: the screenshot (PNG bytes), console messages and exceptions
    ([(kind, text)]), the URLs it requested and the page's height in CSS pixels."""

    screenshot: bytes
    messages: list[tuple[str, str]]
    requests: list[str]
    height: int


def find_browser() -> str | None:
    """The path of a Chromium executable on PATH, or None."""
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    return None


class _Pipe:
    """DevTools protocol messages over Chromium's fds 3 (in) and 4 (out), NUL-separated."""

    def __init__(self, to_browser: int, from_browser: int):
        self.to_browser, self.from_browser = to_browser, from_browser
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from the browser")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser closed its DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float = 60.0,
    ) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events[i]
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event


def _messages(events: list[dict]) -> tuple[list[tuple[str, str]], list[str]]:
    messages, requests = [], []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            messages.append((f"console.{params['type']}", text))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            messages.append(("exception", " | ".join(text.splitlines())))
        elif method == "Log.entryAdded":
            entry = params["entry"]
            messages.append((f"log.{entry['level']}", f"{entry.get('url', '')} {entry['text']}"))
        elif method == "Network.requestWillBeSent":
            requests.append(params["request"]["url"])
    return messages, requests


def render(
    page: str | Path, *, browser: str | None = None, width: int = 1280, timeout: float = 60.0
) -> Outcome:
    """Loads `page` in headless Chromium and returns its `Outcome` (screenshot of the full page)."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError(f"no Chromium on PATH (looked for {', '.join(BROWSERS)})")
    url = Path(page).resolve().as_uri()
    to_read, to_browser = os.pipe()
    from_browser, to_write = os.pipe()
    # The child's ends moved above fd 9, so that placing them on fds 3 and 4 clobbers neither.
    child_ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_read, to_write)]
    for fd in (to_read, to_write):
        os.close(fd)
    to_read, to_write = child_ends

    with (
        tempfile.TemporaryDirectory(prefix="hsfm-browser-") as profile,
        open(Path(profile) / "browser.log", "w+b") as log,
    ):
        # Chromium reads the protocol from fd 3 and writes to fd 4: bash puts the pipes there.
        process = subprocess.Popen(
            [
                shutil.which("bash") or "/bin/bash",  # dash takes no fd above 9
                "-c",
                f'exec "$0" "$@" 3<&{to_read} 4>&{to_write} {to_read}<&- {to_write}>&-',
                browser,
                *FLAGS,
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            pass_fds=(to_read, to_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        os.close(to_read)
        os.close(to_write)
        pipe = _Pipe(to_browser, from_browser)
        try:
            try:
                targets = pipe.call("Target.getTargets", timeout=timeout)["targetInfos"]
            except (RuntimeError, OSError) as error:
                log.seek(0)
                tail = log.read().decode(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(
                    f"{browser} did not start: {error}: {' | '.join(tail)}"
                ) from None
            target = next(t["targetId"] for t in targets if t["type"] == "page")
            session = pipe.call(
                "Target.attachToTarget", {"targetId": target, "flatten": True}, timeout=timeout
            )["sessionId"]
            for domain in ("Runtime", "Log", "Page", "Network"):
                pipe.call(f"{domain}.enable", session=session, timeout=timeout)
            metrics = {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": False}
            pipe.call("Emulation.setDeviceMetricsOverride", metrics, session, timeout)
            pipe.events.clear()
            pipe.call("Page.navigate", {"url": url}, session, timeout)
            pipe.wait_for("Page.loadEventFired", timeout)
            evaluate = lambda expression: pipe.call(
                "Runtime.evaluate",
                {"expression": expression, "returnByValue": True},
                session,
                timeout,
            )["result"]["value"]
            if evaluate("document.URL") != url:
                raise RuntimeError(f"the browser did not load {url}")
            height = evaluate("document.documentElement.scrollHeight")
            shot = pipe.call(
                "Page.captureScreenshot",
                {"format": "png", "captureBeyondViewport": True},
                session,
                timeout,
            )
            messages, requests = _messages(pipe.events)
            pipe.call("Browser.close", timeout=timeout)
        finally:
            os.close(to_browser)
            os.close(from_browser)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return Outcome(base64.b64decode(shot["data"]), messages, requests, int(height))


def blank_fraction(png: bytes) -> float:
    """The fraction of the screenshot's pixels equal to its most common colour."""
    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    flat = np.round(pixels.reshape(-1, 3) * 255).astype(np.uint8)
    _, counts = np.unique(flat, axis=0, return_counts=True)
    return float(counts.max() / len(flat))


def problems(outcome: Outcome, *, max_blank: float = 0.99) -> list[str]:
    """Every problem of a rendered page, one line each (none: the page is fine)."""
    found = [
        f"{kind}: {text}"
        for kind, text in outcome.messages
        if kind in ("exception", "console.error", "console.warning", "console.assert")
        or kind in ("log.error", "log.warning")
    ]
    found += [
        f"request leaves the page: {url}"
        for url in outcome.requests
        if not url.startswith(("file:", "data:"))
    ]
    blank = blank_fraction(outcome.screenshot)
    if blank > max_blank:
        found.append(f"screenshot is blank: {blank:.1%} of its pixels have one colour")
    return found


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page")
    parser.add_argument("--screenshot", default="", help="Write the screenshot here (PNG).")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args(argv)
    if not Path(args.page).is_file():
        print(f"error: {args.page}: no such file", file=sys.stderr)
        return 2
    try:
        outcome = render(args.page, width=args.width)
    except (FileNotFoundError, RuntimeError, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.screenshot:
        Path(args.screenshot).write_bytes(outcome.screenshot)
    found = problems(outcome)
    for line in found:
        print(line)
    print(f"{args.page}: {len(found)} problem(s), page height {outcome.height} px")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
