"""The HTML audit report opened in headless Chromium (Debian's package) through the DevTools
protocol: pages load with no console error or exception, every image decodes, every <audio>
element loads its file and reports the sample's duration, the barge-in buttons move the player,
and a screenshot is taken."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import AuditedRun

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium missing: run scripts/setup.sh")


class DevTools:
    """A minimal DevTools-protocol client over websocket-client: commands by id, events kept."""

    def __init__(self, profile: Path) -> None:
        import websocket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                f"--remote-debugging-port={port}",
                "--remote-allow-origins=*",
                f"--user-data-dir={profile}",
                "--window-size=1300,1600",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 60
        while True:
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2))
                page = next(t for t in targets if t["type"] == "page")
                break
            except Exception:
                if time.time() > deadline:
                    self.close()
                    raise
                time.sleep(0.3)
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id, self.events = 0, []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        deadline = time.time() + 30
        while self.evaluate("document.readyState") != "complete":
            assert time.time() < deadline, f"{url} did not finish loading"
            time.sleep(0.2)

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}")
        return out

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def report(audited_run: AuditedRun) -> dict:
    """The session's audit reports (conftest): lossless, and the small Opus files a shared report uses."""
    outs = audited_run.reports
    for fmt in ("flac", "ogg"):
        assert len(list((outs[fmt] / "audio").glob(f"*.{fmt}"))) == 6
    return {"outs": outs, "frame": audited_run.frame}


def test_report_in_headless_chromium(report: dict, tmp_path: Path) -> None:
    from PIL import Image, ImageStat

    out, frame = report["outs"]["flac"], report["frame"]
    pages = sorted((out / "samples").glob("*.html"))
    assert len(pages) == 2
    pages += sorted((report["outs"]["ogg"] / "samples").glob("*.html"))
    browser = DevTools(tmp_path / "profile")
    try:
        browser.open((out / "index.html").as_uri())
        images = browser.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert images and all(done and width > 0 for done, width in images), images
        links = browser.evaluate("Array.from(document.querySelectorAll('a[href^=\"samples/\"]')).length")
        assert links >= 2
        shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        (tmp_path / "index.png").write_bytes(shot)
        img = Image.open(io.BytesIO(shot)).convert("L")
        assert img.size[0] >= 800 and ImageStat.Stat(img).stddev[0] > 10  # not a blank page
        for page in pages:
            browser.open(page.as_uri())
            deadline = time.time() + 30
            while True:
                state = browser.evaluate(
                    "Array.from(document.querySelectorAll('audio'))"
                    ".map(a => [a.readyState, a.error ? a.error.code : 0, a.duration])"
                )
                if all(ready >= 1 for ready, _, _ in state) or time.time() > deadline:
                    break
                time.sleep(0.3)
            duration = frame.filter(pl.col("id") == page.stem)["duration_s"].item()
            assert len(state) == 3, state
            for ready, error, seconds in state:
                assert error == 0 and ready >= 1, state  # loaded, metadata known
                assert seconds == pytest.approx(duration, abs=0.05)
            assert browser.evaluate("document.querySelector('#lanes img').naturalWidth") > 0
            if browser.evaluate("document.querySelectorAll('button[data-t]').length"):
                browser.evaluate("document.querySelector('button[data-t]').click()")
                t = browser.evaluate("+document.querySelector('button[data-t]').dataset.t")
                assert browser.evaluate("document.querySelector('audio[data-role=mix]').currentTime") >= t - 0.05
                assert browser.evaluate("document.getElementById('cursor').style.left") != ""
            (tmp_path / f"{page.parent.parent.name}-{page.stem}.png").write_bytes(
                base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
            )
        assert browser.errors() == []
    finally:
        browser.close()
