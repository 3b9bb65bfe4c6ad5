"""Drive Debian's headless Chromium over the DevTools protocol on a pipe (no websocket, no extra package).

Used by the browser tests (render a page, read the DOM, list every network request) and to take the
screenshots in docs/views.md::

    python -m grit_pipeline.views.chromium PAGE.html OUT.png [--width 1280 --height 900]

Chromium runs with a fresh profile and its background networking off; every host name resolves to
nothing, so even a page that asked for a remote resource could not reach one.
"""
from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--hide-scrollbars",
)


class ChromiumError(RuntimeError):
    pass


def find_chromium() -> str | None:
    """Path of a Chromium binary (``$CHROMIUM`` first), or None."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"]) or os.environ["CHROMIUM"]
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """A headless Chromium with one page attached; ``call`` sends a DevTools command to that page."""

    def __init__(self, binary: str | None = None, width: int = 1280, height: int = 900, timeout: float = 60.0,
                 allow_hosts: tuple[str, ...] = ()):
        """``allow_hosts``: host names or addresses still resolved (e.g. ``127.0.0.1`` for a page a test serves);
        every other host resolves to nothing."""
        self.binary = binary or find_chromium()
        if not self.binary:
            raise ChromiumError("no chromium binary found (apt-get install chromium)")
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._replies: dict[int, dict[str, Any]] = {}
        self._incoming: "queue.Queue[dict[str, Any] | None]" = queue.Queue()
        self._next_id = 0
        self._profile = tempfile.mkdtemp(prefix="grit-chromium-")
        # Chromium reads commands on fd 3 and writes replies on fd 4.
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # Move the child's ends above 10 so dup2 onto 3/4 in the child cannot clobber one another; they are
        # close-on-exec, dup2 gives inheritable copies, and Python's own fds are not inherited (PEP 446).
        child_in = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)

        def wire_fds():
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        flags = list(CHROMIUM_FLAGS)
        if allow_hosts:
            flags = [f"--host-resolver-rules=MAP * ~NOTFOUND, {', '.join(f'EXCLUDE {h}' for h in allow_hosts)}"
                     if flag.startswith("--host-resolver-rules=") else flag for flag in flags]
        args = [self.binary, *flags, f"--user-data-dir={self._profile}", "--remote-debugging-pipe",
                f"--window-size={width},{height}", "about:blank"]
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=self._stderr, preexec_fn=wire_fds, close_fds=False)
        os.close(child_in)
        os.close(child_out)
        self._write = os.fdopen(to_browser_w, "wb", buffering=0)
        self._read_fd = from_browser_r
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        self.session: str | None = None
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                     browser=True)["sessionId"]
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        except Exception:
            self.close()
            raise

    # ---- protocol ----------------------------------------------------------------------------
    def _read_loop(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._read_fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            buffer += chunk
            while b"\0" in buffer:
                message, buffer = buffer.split(b"\0", 1)
                try:
                    self._incoming.put(json.loads(message))
                except ValueError:
                    pass
        self._incoming.put(None)

    def _pump(self, deadline: float) -> None:
        try:
            message = self._incoming.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            return
        if message is None:
            raise ChromiumError(f"chromium exited: {self.stderr_tail()}")
        if "id" in message:
            self._replies[message["id"]] = message
        else:
            self.events.append(message)

    def call(self, method: str, params: dict[str, Any] | None = None, browser: bool = False) -> dict[str, Any]:
        """Send one DevTools command (to the page unless ``browser``) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if not browser and self.session:
            message["sessionId"] = self.session
        self._write.write(json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while self._next_id not in self._replies:
            if time.monotonic() > deadline:
                raise ChromiumError(f"no reply to {method} within {self.timeout}s")
            self._pump(deadline)
        reply = self._replies.pop(self._next_id)
        if "error" in reply:
            raise ChromiumError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_for_event(self, method: str, after: int = 0, timeout: float | None = None) -> dict[str, Any]:
        """The first event named ``method`` at index >= ``after`` in ``self.events``."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for event in self.events[after:]:
                if event.get("method") == method:
                    return event
            if time.monotonic() > deadline:
                raise ChromiumError(f"no {method} event within {timeout or self.timeout}s")
            self._pump(deadline)

    # ---- page helpers ------------------------------------------------------------------------
    def open(self, path_or_url: str | os.PathLike) -> None:
        """Navigate (network events recorded from here on) and wait for the load event."""
        url = str(path_or_url)
        if "://" not in url and not url.startswith(("data:", "about:")):
            url = Path(url).resolve().as_uri()
        self.call("Network.enable")
        self.call("Page.enable")
        mark = len(self.events)
        self.call("Page.navigate", {"url": url})
        self.wait_for_event("Page.loadEventFired", after=mark)

    def evaluate(self, expression: str) -> Any:
        """Value of a JavaScript expression in the page (promises awaited, result as JSON)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise ChromiumError(f"javascript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def requested_urls(self) -> list[str]:
        """Every URL the page asked for since navigation began (DevTools Network domain)."""
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: str | os.PathLike | None = None, full_page: bool = False) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = base64.b64decode(self.call("Page.captureScreenshot", params)["data"])
        if path is not None:
            Path(path).write_bytes(data)
        return data

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace")[-limit:]
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        try:
            self._write.close()
        except OSError:
            pass
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        try:
            os.close(self._read_fd)
        except OSError:
            pass
        self._stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot a local page with headless Chromium.")
    parser.add_argument("page")
    parser.add_argument("png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--full-page", action="store_true")
    args = parser.parse_args(argv)
    with Chromium(width=args.width, height=args.height) as browser:
        browser.open(args.page)
        browser.evaluate("document.fonts ? document.fonts.ready.then(() => true) : true")
        browser.screenshot(args.png, full_page=args.full_page)
        outside = [u for u in browser.requested_urls() if not u.startswith(("file:", "data:"))]
    print(args.png)
    if outside:
        print(f"warning: the page asked for {outside}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
