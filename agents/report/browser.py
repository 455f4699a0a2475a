"""Headless Chromium driven over the Chrome DevTools protocol, to check and time the report in a real browser.

Used by ``tests/test_report.py`` and ``benchmarks/report_open.py``; needs Debian's
``chromium`` package and the ``websocket-client`` package (the ``[dev]`` extra). Nothing
is downloaded: the browser is the system's, started with networking features off.

    with Browser() as browser:
        page = browser.open(Path("runs/x/report.html"))
        page.evaluate("document.title"), page.errors, page.screenshot()
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
         "--remote-allow-origins=*", "--remote-debugging-port=0")


class BrowserUnavailable(RuntimeError):
    """No Chromium binary or no ``websocket-client``; the message says what to install."""


def find_chromium() -> str | None:
    """Path of a Chromium binary (``$MEDVR_CHROMIUM`` first), or ``None``."""
    explicit = os.environ.get("MEDVR_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def unavailable_reason() -> str | None:
    """Why :class:`Browser` cannot start here, or ``None`` when it can."""
    try:
        import websocket  # noqa: F401
    except ImportError:
        return "the websocket-client package is missing (pip install -e '.[dev]')"
    if find_chromium() is None:
        return "no Chromium binary found (apt-get install -y chromium, or set MEDVR_CHROMIUM)"
    return None


class Page:
    """One tab: evaluate JavaScript, read console errors and exceptions, take screenshots."""

    def __init__(self, ws_url: str, timeout: float) -> None:
        import websocket

        self._ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self._id = 0
        self.timeout = timeout
        self.errors: list[str] = []
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are recorded)."""
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return message.get("result", {})
            self._record(message)
        raise TimeoutError(f"{method}: no answer within {self.timeout} s")

    def wait_for(self, event: str) -> dict[str, Any]:
        """Wait for the next ``event`` (e.g. ``Page.loadEventFired``) not yet seen."""
        for i, seen in enumerate(self.events):
            if seen.get("method") == event:
                return self.events.pop(i)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv())
            self._record(message)
            if message.get("method") == event:
                self.events.remove(message)
                return message
        raise TimeoutError(f"no {event} within {self.timeout} s")

    def _record(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append("console." + params["type"] + ": " +
                               " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append(f"log: {params['entry'].get('text')} ({params['entry'].get('url', '')})")
        if method:
            self.events.append(message)
            del self.events[:-200]

    def navigate(self, url: str) -> float:
        """Load ``url``; return the seconds until the load event."""
        start = time.perf_counter()
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        return time.perf_counter() - start

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises are awaited); raises on a JavaScript exception."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error in {expression[:80]!r}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def set_viewport(self, width: int, height: int) -> None:
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def screenshot(self, clip: dict[str, float] | None = None) -> bytes:
        """A PNG of the viewport, or of ``clip`` (``x, y, width, height`` in page pixels)."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": clip is not None}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])

    def close(self) -> None:
        self._ws.close()


class Browser:
    """A headless Chromium process with its own throw-away profile; a context manager."""

    def __init__(self, timeout: float = 60.0) -> None:
        reason = unavailable_reason()
        if reason:
            raise BrowserUnavailable(reason)
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="medvr-chromium-")
        self._process = subprocess.Popen([find_chromium(), *FLAGS, f"--user-data-dir={self._profile.name}",
                                          "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.port = self._read_port()

    def _read_port(self) -> int:
        marker = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrowserUnavailable(f"Chromium exited at start (code {self._process.returncode})")
            if marker.exists():
                text = marker.read_text().split()
                if text:
                    return int(text[0])
            time.sleep(0.05)
        raise BrowserUnavailable(f"Chromium did not open its DevTools port within {self.timeout} s")

    def new_page(self) -> Page:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            target = json.loads(response.read())
        return Page(target["webSocketDebuggerUrl"], self.timeout)

    def open(self, path: Path, width: int = 1280, height: int = 900) -> Page:
        """A new tab showing the local file ``path`` (its load event has fired)."""
        page = self.new_page()
        page.set_viewport(width, height)
        page.load_seconds = page.navigate(Path(path).resolve().as_uri())
        return page

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Browser", "BrowserUnavailable", "Page", "find_chromium", "unavailable_reason"]
