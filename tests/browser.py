"""A real headless Chromium, driven over the DevTools protocol: load a page, report every
<img> and every console error, take a full-page screenshot.

Chromium is Debian's `chromium` package (`make test` installs it where missing); without it
the browser tests skip with that reason. The browser listens on a loopback port it picks
itself (--remote-debugging-port=0) and is killed when the check ends.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from typing import Any, Dict, List, Optional

import pytest
import websocket  # websocket-client (in the lock)

REPO = pathlib.Path(__file__).resolve().parents[1]
# Screenshots also land here (git-ignored runs/) so a person can look after the test run.
ARTIFACTS = REPO / "runs" / "test-artifacts"
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")
# Runs in the page after load: every image with its decoded size.
_IMAGES_JS = """JSON.stringify(Array.from(document.images).map(i => ({
  alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth,
  naturalHeight: i.naturalHeight})))"""


@dataclasses.dataclass
class PageCheck:
    images: List[Dict[str, Any]]  # alt, complete, naturalWidth, naturalHeight
    errors: List[str]  # console errors, uncaught exceptions, failed loads
    title: str
    screenshot: pathlib.Path


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium not installed (Debian: apt-get install chromium; "
                "`make test` does it)")
    return ""


class _Session:
    """One DevTools websocket: numbered commands, events kept while waiting for replies."""

    def __init__(self, url: str):
        self.socket = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: List[Dict[str, Any]] = []

    def send(self, method: str, **params) -> Dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 60.0) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout}s")
            self.events.append(json.loads(self.socket.recv()))

    def close(self) -> None:
        self.socket.close()


def _errors(events: List[Dict[str, Any]]) -> List[str]:
    found = []
    for event in events:
        params = event.get("params", {})
        if event.get("method") == "Runtime.consoleAPICalled" and params.get("type") == "error":
            found.append("console.error: " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif event.get("method") == "Runtime.exceptionThrown":
            found.append("exception: " + params["exceptionDetails"].get("text", ""))
        elif (event.get("method") == "Log.entryAdded"
              and params["entry"].get("level") == "error"):
            found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
    return found


def check_page(html_path: str, screenshot: pathlib.Path, width: int = 1600) -> PageCheck:
    """Loads `html_path` (file://) in headless Chromium; writes the full-page screenshot to
    `screenshot` and a copy under runs/test-artifacts/."""
    binary = chromium_binary()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    process = subprocess.Popen(
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--disable-background-networking", "--remote-debugging-port=0",
         "--remote-debugging-address=127.0.0.1", f"--user-data-dir={profile}",
         f"--window-size={width},900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    session: Optional[_Session] = None
    try:
        browser_url = None
        deadline = time.monotonic() + 60
        while browser_url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                raise RuntimeError(f"chromium exited with {process.returncode}")
            match = _LISTENING.search(line)
            browser_url = match.group(1) if match else None
        assert browser_url, "chromium did not print its DevTools address within 60 s"
        port = int(browser_url.split(":")[2].split("/")[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        session = _Session(pages[0]["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            session.send(f"{domain}.enable")
        session.send("Page.navigate", url=pathlib.Path(html_path).resolve().as_uri())
        session.wait_for("Page.loadEventFired")
        images = json.loads(session.send("Runtime.evaluate", expression=_IMAGES_JS,
                                         returnByValue=True)["result"]["value"])
        title = session.send("Runtime.evaluate", expression="document.title",
                             returnByValue=True)["result"]["value"]
        metrics = session.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = session.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                            clip={"x": 0, "y": 0, "width": metrics["width"],
                                  "height": metrics["height"], "scale": 1})
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, ARTIFACTS / screenshot.name)
        return PageCheck(images, _errors(session.events), title, screenshot)
    finally:
        if session is not None:
            session.close()
        process.kill()
        process.wait(timeout=30)
        process.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)
