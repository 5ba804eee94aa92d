"""The built book in a real browser: served on localhost, opened in headless
Chromium (Debian's ``chromium``). Checks that math is rendered by the vendored
MathJax (not left as raw TeX), figures and glued numbers are on the pages, and
no page asks a remote host for anything. A screenshot of the landing page is
kept in ``test-artifacts/``."""

from __future__ import annotations

import contextlib
import functools
import html
import http.server
import re
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import book_pages

from semalign.core.paths import PROJECT_ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
]

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
# Chromium's own service requests (clock sync, sign-in), made whatever the page is.
BROWSER_SERVICE_HOSTS = re.compile(r"(^|\.)google\.com$")


@contextlib.contextmanager
def serve(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def chromium(url: str, tmp_path: Path, *extra: str) -> tuple[str, list[str]]:
    """The rendered DOM of a page and every URL the browser requested."""
    netlog = tmp_path / "netlog.json"
    command = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", f"--log-net-log={netlog}", "--virtual-time-budget=8000",
        "--window-size=1280,1000", *extra, url,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    requested = re.findall(r'"url":"([^"]+)"', netlog.read_text()) if netlog.exists() else []
    return proc.stdout, requested


def remote(urls: list[str]) -> list[str]:
    hosts = [(u, urlparse(u).hostname or "") for u in urls if u.startswith("http")]
    return sorted({u for u, h in hosts if h not in ("127.0.0.1", "localhost") and not BROWSER_SERVICE_HOSTS.search(h)})


@pytest.fixture(scope="module")
def site(smoke_book):
    with serve(smoke_book) as url:
        yield url


@pytest.mark.parametrize("page", ["index.html", "method.html", "experiments/data_overview.html", "data_models.html"])
def test_page_renders_with_no_remote_request(site, page, tmp_path):
    dom, requested = chromium(f"{site}/{page}", tmp_path, "--dump-dom")
    assert "<main" in dom or 'class="bd-main"' in dom, "page did not render"
    assert not remote(requested), f"{page} requested remote hosts: {remote(requested)}"
    assert any("127.0.0.1" in u and "_static" in u for u in requested), "local assets were not requested"


def test_math_is_typeset_by_mathjax(site, tmp_path):
    dom, _ = chromium(f"{site}/method.html", tmp_path, "--dump-dom")
    assert dom.count("<mjx-container") >= 10, "MathJax did not typeset the equations"
    text = re.sub(r"<(script|style)[^>]*>.*?</\1>", "", dom, flags=re.S)
    text = re.sub(r"<mjx-container.*?</mjx-container>", "", text, flags=re.S)
    assert "\\mathbb" not in text and "\\tilde" not in text, "raw TeX left on the page"


def test_figures_and_glued_numbers_are_on_the_pages(site, tmp_path):
    dom, _ = chromium(f"{site}/experiments/data_overview.html", tmp_path, "--dump-dom")
    assert len(re.findall(r"<img[^>]+src=\"[^\"]+\.png\"", dom)) >= 2, "figures missing"
    assert re.search(r"Fig\.\s*\d", re.sub(r"<[^>]+>", "", dom)), "numbered figure captions missing"
    landing, _ = chromium(f"{site}/index.html", tmp_path, "--dump-dom")
    assert re.search(r"use\s+\d[\d,]*\s+reports", re.sub(r"<[^>]+>", " ", landing)), "glued count missing"


def test_landing_page_screenshot(site, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "landing.png"
    shot.unlink(missing_ok=True)
    chromium(f"{site}/index.html", tmp_path, f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 20_000


# Loads each page in a 1280-px frame and lists what runs past the article's right edge without
# a scrolling box around it: content a reader at a laptop width would find cut off.
PROBE = """<!doctype html><html><body><pre id="result">pending</pre>
<iframe id="frame" style="width:1280px;height:900px"></iframe>
<script>
const pages = %s, found = {};
function cut(doc) {
  const article = doc.querySelector("article") || doc.querySelector("main");
  if (!article) return ["no article"];
  const edge = article.getBoundingClientRect().right + 1, out = [];
  for (const el of article.querySelectorAll("*")) {
    const box_ = el.getBoundingClientRect();
    if (Math.max(box_.right, box_.left + el.scrollWidth) <= edge) continue;  // scrollWidth: content past its box
    let box = el, scrolls = false;
    for (; box && box !== article; box = box.parentElement) {
      const style = doc.defaultView.getComputedStyle(box);
      if (["auto", "scroll"].includes(style.overflowX) && box.getBoundingClientRect().right <= edge) { scrolls = true; break; }
    }
    if (!scrolls) out.push(el.tagName + ": " + (el.textContent || "").trim().slice(0, 60));
    else if (box === el) out.push("scrolls " + el.tagName + ": " + (el.textContent || "").trim().slice(0, 60));
  }
  return out.slice(0, 5);
}
let i = 0;
const frame = document.getElementById("frame");
frame.onload = () => {
  found[pages[i]] = cut(frame.contentDocument);
  i += 1;
  if (i < pages.length) frame.src = pages[i]; else document.getElementById("result").textContent = JSON.stringify(found);
};
frame.src = pages[0];
</script></body></html>"""


def test_nothing_is_cut_off_at_a_laptop_width(smoke_book, tmp_path):
    import json

    pages = [p.relative_to(smoke_book).as_posix() for p in book_pages(smoke_book)]
    probe, broken = smoke_book / "_probe_overflow.html", smoke_book / "_probe_broken.html"
    # a page with a line that cannot wrap, outside any scrolling box: the probe must report it
    broken.write_text('<html><body><article style="width:600px"><p>fits</p>'
                      '<div style="white-space:nowrap">' + "unbreakable_" * 100 + "</div></article></body></html>")
    probe.write_text(PROBE % json.dumps(["/_probe_broken.html"] + ["/" + p for p in pages]))
    try:
        with serve(smoke_book) as url:
            dom, _ = chromium(f"{url}/_probe_overflow.html", tmp_path, "--dump-dom", "--window-size=1400,1000",
                              "--virtual-time-budget=120000")
    finally:
        probe.unlink()
        broken.unlink()
    result = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S).group(1)
    assert result != "pending", "the probe did not finish loading every page"
    found = json.loads(html.unescape(result))
    assert any(item.startswith("DIV: unbreakable_unbreakable_") for item in found.pop("/_probe_broken.html"))
    assert set(found) == {"/" + p for p in pages}
    cut = {page: [i for i in items if not i.startswith("scrolls ")] for page, items in found.items()}
    assert not {page: items for page, items in cut.items() if items}, f"content runs past the page edge at 1280 px: {cut}"
    # the generated reference tables fit the page without a scroll bar
    for page in ("/data_models.html", "/runs.html"):
        assert not found[page], f"{page} needs horizontal scrolling at 1280 px: {found[page]}"
