"""`relugeom report` in a real browser: headless Chromium loads the page from disk, renders it (a
screenshot of the full window with real content), makes no network request and logs no console message.

The detectors are proved first on pages that do what the report must not: one fetches from a local
HTTP server (which counts the hit itself, an independent witness) and from an outside host, one
logs a console error, and one tries to fetch under the report's Content-Security-Policy.
Skipped outside CI when no Chromium is installed (CI installs Debian's chromium in .ci/run).
"""

import http.server
import os
import threading

import pytest
import torch
from PIL import Image
from torch import nn

from _browser import find_browser, load_page
from _cli import run
from _tinynet import TinyNet, digits
from relugeom.experiments.callbacks import Recorder
from relugeom.report.page import CSP

if find_browser() is None:
    if os.environ.get("CI"):
        pytest.fail("CI must have chromium (.ci/run installs it with apt-get)", pytrace=False)
    pytest.skip("no chromium installed here (apt-get install chromium); the browser test runs in CI",
                allow_module_level=True)  # fmt: skip


@pytest.fixture()
def server():
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd.server_address[1], hits
    httpd.shutdown()
    httpd.server_close()


def test_detectors_catch_a_fetching_page_and_a_console_error(tmp_path, server):
    port, hits = server
    page = tmp_path / "bad.html"
    page.write_text(f'<!doctype html><html><body><h1>bad</h1><img src="http://127.0.0.1:{port}/pixel.png">'
                    '<script>console.error("boom"); fetch("https://cdn.example.invalid/lib.js")</script>'
                    "</body></html>")  # fmt: skip
    res = load_page(page, tmp_path / "bad")
    assert hits == ["/pixel.png"], "the local server did not see the page's request"
    assert f"http://127.0.0.1:{port}/pixel.png" in res.requests
    assert "https://cdn.example.invalid/lib.js" in res.requests
    assert any("boom" in line for line in res.console), res.stderr[-2000:]
    # under the report's policy a fetch is blocked, and the attempt is still a console message
    page = tmp_path / "csp.html"
    page.write_text(f'<!doctype html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}">'
                    f'</head><body><img src="http://127.0.0.1:{port}/blocked.png"></body></html>')  # fmt: skip
    res = load_page(page, tmp_path / "csp")
    assert "/blocked.png" not in hits
    assert any("Content Security Policy" in line for line in res.console), res.stderr[-2000:]
    # and a quiet page is quiet
    page = tmp_path / "quiet.html"
    page.write_text("<!doctype html><html><body><p>nothing to fetch</p></body></html>")
    res = load_page(page, tmp_path / "quiet")
    assert res.requests == [] and res.console == []


def test_report_renders_offline_without_console_messages(tmp_path, capsys, server):
    port, hits = server
    torch.manual_seed(0)
    x, y = digits(128)
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = TinyNet()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        with Recorder(tmp_path / f"seed{seed}", net, seed=seed, data="digits", input_shape=(1, 8, 8)) as rec:
            for _ in range(3):
                loss = nn.functional.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                rec.end_epoch(train_loss=float(loss.detach()))
    page = tmp_path / "report.html"
    code, _, err = run(["report", str(tmp_path / "seed0"), str(tmp_path / "seed1"), "--out", str(page)], capsys)
    assert code == 0, err
    text = page.read_text()
    assert f'content="{CSP}"' in text and "<script" not in text
    res = load_page(page, tmp_path / "browser", width=1280, height=2400)
    assert res.requests == [], res.requests
    assert res.console == [], res.console
    assert hits == []
    img = Image.open(res.screenshot).convert("RGB")
    assert img.size == (1280, 2400)
    small = img.resize((320, 600))
    colours = len(set(small.getdata()))
    assert colours > 200, f"the screenshot looks blank ({colours} colours)"
    # the figures are drawn: many rows of the page hold something other than the background
    dark_rows = sum(1 for r in range(small.height) if min(small.getpixel((c, r))[0] for c in range(0, 320, 4)) < 200)
    assert dark_rows > 150, dark_rows
