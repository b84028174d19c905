"""The demo's report.html in a real browser: headless Chromium (Debian package) loads it from
file://, no console errors, every image decoded, a screenshot taken.

Chromium is not a Python dependency. When it is missing the test skips and says how to get
it; with ``MEDKIT_INSTALL_BROWSER=1`` it first tries ``apt-get install -y chromium``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest


def _test_demo():
    """tests/test_demo.py's reduced study and runner (loaded by path: tests/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("medkit_test_demo", Path(__file__).with_name("test_demo.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
HOW = "install it with `apt-get install -y chromium` (or run with MEDKIT_INSTALL_BROWSER=1)"

# Loads the report in an iframe (same file:// folder) and writes, once the frame and all its
# images have loaded, how many images there are and which failed to decode.
PROBE = """<!DOCTYPE html><html><body><iframe id="f" src="report.html" style="width:1200px;height:800px"></iframe>
<script>
document.getElementById('f').addEventListener('load', function () {
  var out = {ok: false, n: 0, bad: [], title: ''};
  try {
    var d = document.getElementById('f').contentDocument;
    var imgs = Array.prototype.slice.call(d.images);
    out = {ok: true, n: imgs.length, title: d.title,
           bad: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                    .map(function (i) { return i.getAttribute('src'); })};
  } catch (e) { out.error = String(e); }
  var pre = document.createElement('pre'); pre.id = 'result'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script></body></html>"""


def find_browser() -> str | None:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    if os.environ.get("MEDKIT_INSTALL_BROWSER") == "1":
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=900,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        return shutil.which("chromium")
    return None


def headless(browser: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--disable-extensions", "--allow-file-access-from-files", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def console_errors(stderr: str) -> list[str]:
    """Console messages Chromium logged to stderr (``...:CONSOLE:...``). report.html has no script,
    so any console message at all (an error, an uncaught exception, a warning) is a failure."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln]


def test_console_filter_keeps_console_lines_and_drops_browser_noise():
    stderr = ('[1:1:1130/145619.713470:ERROR:dbus/object_proxy.cc:572] Failed to call method: NameHasOwner\n'
              '[1:1:1130/145759.160338:INFO:CONSOLE:1] "boom", source: file:///tmp/x.html (1)\n'
              '[1:1:1130/145759.160584:INFO:CONSOLE:1] "Uncaught ReferenceError: f is not defined", source: x (1)')
    assert [ln.split("] ")[1][:7] for ln in console_errors(stderr)] == ['"boom",', '"Uncaug']


def test_report_html_in_headless_chromium(tmp_path, monkeypatch):
    browser = find_browser()
    if browser is None:
        pytest.skip(f"no headless Chromium on this machine; {HOW}")
    monkeypatch.setenv("MEDKIT_NO_PROGRESS", "1")
    out = tmp_path / "demo"
    td = _test_demo()
    td.run_demo_cli(out, td.FAST)
    # The page alone, away from the run folder (as when it is e-mailed): every image is inside it.
    alone = tmp_path / "mailed"
    alone.mkdir()
    report = alone / "report.html"
    shutil.copyfile(out / "report.html", report)
    n_img = len(re.findall(r"<img ", report.read_text()))

    probe = alone / "_probe.html"
    probe.write_text(PROBE)
    res = headless(browser, "--virtual-time-budget=15000", "--dump-dom", probe.as_uri())
    m = re.search(r'<pre id="result">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the probe page did not report (rc {res.returncode}): {res.stderr[-2000:]}"
    result = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert result["ok"], result
    assert result["title"] == "medkit demo"
    assert result["n"] == n_img >= 6
    assert result["bad"] == [], f"images that did not load: {result['bad']}"

    shot = tmp_path / "report.png"
    res = headless(browser, "--window-size=1280,4000", "--hide-scrollbars", f"--screenshot={shot}", report.as_uri())
    assert console_errors(res.stderr) == [], console_errors(res.stderr)
    assert shot.exists() and shot.stat().st_size > 20_000, res.stderr[-2000:]
    if keep := os.environ.get("MEDKIT_SCREENSHOT_DIR"):  # to look at it: MEDKIT_SCREENSHOT_DIR=/some/dir
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(keep) / "report.png")
