"""Headless Chromium driven over the DevTools protocol, with the network shut.

Used to photograph a report (``report.png``) and, in the tests, to check that it loads with no
console error and no request beyond its own file, and that its table sorts and filters.

The protocol is spoken over Chromium's DevTools WebSocket with ``websocket-client``: a small,
pure-Python, long-maintained client (the one Selenium uses for the same protocol). Playwright
could drive the system Chromium too, but it ships a Node.js driver (tens of MB) and pins the
browser versions it supports; Debian's ``chromium`` follows its own release train. The handful
of protocol calls needed here (navigate, evaluate, screenshot, and three event streams) do not
justify that.

Network: every host name resolves to nothing (``--host-resolver-rules``), and background
services (updates, sync, metrics) are off, so a page that tried to fetch anything would fail,
and every attempt is still recorded from ``Network.requestWillBeSent``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import websocket

from harness.errors import UserError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--disable-gpu",
    "--no-sandbox",  # root in containers and CI has no user namespace for the sandbox
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--disable-breakpad",
    "--hide-scrollbars",
    "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--remote-debugging-port=0",  # Chromium picks a free port and writes it to the profile
    "--remote-debugging-address=127.0.0.1",
)


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) binary on PATH; None when there is none."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class HeadlessChromium:
    """One headless browser with one page. Use as a context manager.

    ``console_errors`` collects console errors, uncaught exceptions and error log entries;
    ``requests`` every URL the page asked for, in order.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        width: int = 1280,
        height: int = 900,
        timeout_s: float = 60,
    ) -> None:
        found = binary or find_chromium()
        if found is None:
            raise UserError(
                "no Chromium found on PATH (looked for "
                f"{', '.join(CHROMIUM_NAMES)}); install Debian's `chromium` package"
            )
        self.binary = found
        self.width, self.height, self.timeout_s = width, height, timeout_s
        self.console_errors: list[str] = []
        self.requests: list[str] = []
        self._events: list[dict[str, Any]] = []
        self._next_id = 0
        self._profile: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: websocket.WebSocket | None = None
        self._log: Any = None

    # --- lifetime -------------------------------------------------------------------------------

    def __enter__(self) -> HeadlessChromium:
        self._profile = profile = Path(tempfile.mkdtemp(prefix="batchbench-chromium-"))
        self._log = open(profile / "chromium.log", "wb")  # closed in close()
        argv = [
            self.binary,
            *FLAGS,
            f"--user-data-dir={profile / 'profile'}",
            f"--window-size={self.width},{self.height}",
            "about:blank",
        ]
        try:
            # Its own process group: Chromium's helper processes go with it in close().
            self._process = subprocess.Popen(
                argv, stdout=self._log, stderr=self._log, start_new_session=True
            )
            self._connect(profile / "profile")
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the browser and remove its profile (safe to call twice)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
            _kill_group(self._process.pid)
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._profile is not None:
            _remove_profile(self._profile)
            self._profile = None

    def _connect(self, profile: Path) -> None:
        port = self._devtools_port(profile / "DevToolsActivePort")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
            targets = json.load(reply)
        page = next(t for t in targets if t.get("type") == "page")
        # No Origin header: Chromium refuses DevTools connections from origins it was not told
        # to allow, and a local client has none.
        self._socket = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=self.timeout_s, suppress_origin=True
        )

    def _devtools_port(self, path: Path) -> int:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise UserError(f"{self.binary} exited at start: {self._log_tail()}")
            if path.is_file() and path.read_text().strip():
                return int(path.read_text().split()[0])
            time.sleep(0.05)
        raise UserError(f"{self.binary} did not open DevTools in {self.timeout_s:g}s")

    def _log_tail(self) -> str:
        if self._profile is None:
            return ""
        self._log.flush()
        text = (Path(self._profile.name) / "chromium.log").read_text(errors="replace")
        return text[-2000:].strip()

    # --- the protocol ---------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        if self._socket is None:
            raise RuntimeError("the browser is not running")
        self._next_id += 1
        message_id = self._next_id
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        while True:
            message = self._receive()
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})

    def _receive(self) -> dict[str, Any]:
        assert self._socket is not None, "the browser's DevTools socket is not open"
        message = json.loads(self._socket.recv())
        if "method" in message:
            self._on_event(message["method"], message.get("params", {}))
        return message

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        self._events.append({"method": method})
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            texts = [str(arg.get("value", arg.get("description", ""))) for arg in params["args"]]
            self.console_errors.append("console: " + " ".join(texts))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.console_errors.append(f"exception: {text}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            self.console_errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())

    def wait_for(self, event: str) -> None:
        """Read messages until ``event`` has arrived (at once if it already has)."""
        deadline = time.monotonic() + self.timeout_s
        while not any(e["method"] == event for e in self._events):
            if time.monotonic() > deadline:
                raise UserError(f"the browser sent no {event} in {self.timeout_s:g}s")
            self._receive()

    # --- what callers do ------------------------------------------------------------------------

    def open(self, path: Path) -> None:
        """Load a local file and wait until its load event."""
        self._events.clear()
        self.call("Page.navigate", {"url": Path(path).resolve().as_uri()})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serializable values only)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, path: Path, max_height: int | None = None) -> tuple[int, int]:
        """Save the whole page (up to ``max_height`` CSS pixels) as PNG; returns its size."""
        height = self._content_height()
        if max_height is not None:
            height = min(height, max_height)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        # A taller viewport can reflow the page (e.g. blocks sized by the viewport): measure again.
        height = min(self._content_height(), max_height or 1_000_000)
        clip = {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1}
        shot = self.call(
            "Page.captureScreenshot",
            {"format": "png", "clip": clip, "captureBeyondViewport": True},
        )
        Path(path).write_bytes(base64.b64decode(shot["data"]))
        return self.width, height

    def _content_height(self) -> int:
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        return max(1, int(size["height"] + 0.5))


def _kill_group(pgid: int) -> None:
    """Kill what is left of a browser's process group (renderers, crash handler)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _remove_profile(path: Path, attempts: int = 10) -> None:
    """Remove the profile folder; a helper process may still be writing for a moment."""
    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.1)
