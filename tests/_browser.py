"""Load a page from disk in headless Chromium (Debian's ``chromium``) and report what happened:
its screenshot, the network requests the page made (from Chromium's own net log) and its console messages.

Requests are read from ``--log-net-log``: every URL request the network service starts is logged with
its isolation key; the page's own requests carry ``file://`` (the page's origin), the browser's
background requests do not. Console messages come from ``--enable-logging=stderr`` (``CONSOLE`` lines).
tests/test_report_browser.py proves both on pages that do fetch and do log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageLoad:
    screenshot: Path
    requests: list[str]
    console: list[str]
    stderr: str


def load_page(page: Path, work: Path, *, width: int = 1280, height: int = 2400, timeout: int = 120) -> PageLoad:
    """Open ``page`` (a file) headless, take a screenshot, and collect requests and console messages."""
    browser = find_browser()
    assert browser, "no chromium on PATH"
    work.mkdir(parents=True, exist_ok=True)
    shot, netlog = work / "screenshot.png", work / "netlog.json"
    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
        "--disable-extensions", f"--user-data-dir={work / 'profile'}", "--enable-logging=stderr", "--v=0",
        f"--log-net-log={netlog}", "--net-log-capture-mode=Everything", f"--window-size={width},{height}",
        "--virtual-time-budget=3000", f"--screenshot={shot}", page.resolve().as_uri(),
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(work)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return PageLoad(shot, page_requests(netlog), console_messages(proc.stderr, page), proc.stderr)


def page_requests(netlog: Path) -> list[str]:
    """URLs of the requests started on behalf of a page loaded from a file (not the browser's own)."""
    if not netlog.is_file():
        return []
    text = netlog.read_text(errors="replace").rstrip()
    if not text.endswith("}"):  # a log cut short by the browser's exit: close it
        text = text.rstrip(",\n") + "]}"
    doc = json.loads(text)
    types = doc["constants"]["logEventTypes"]
    wanted = {types[k] for k in ("URL_REQUEST_START_JOB", "CORS_REQUEST") if k in types}
    urls = []
    for ev in doc.get("events", []):
        p = ev.get("params") or {}
        if ev.get("type") not in wanted or "url" not in p:
            continue
        from_page = "file://" in str(p.get("network_isolation_key", "")) or p.get("initiator") == "null"
        if from_page and not p["url"].startswith(("file:", "data:")):
            urls.append(p["url"])
    return sorted(set(urls))


def console_messages(stderr: str, page: Path) -> list[str]:
    """Console lines (``CONSOLE``) logged by the page."""
    name = page.resolve().as_uri()
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln and (name in ln or "source: " not in ln)]
