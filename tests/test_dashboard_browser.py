"""The live dashboard in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium, against a NAB replay served with ``--serve``.

The page must show the stream in its key list, draw the chosen key's points, and put an
alert marker at each event where the alert operator opened an alert. A screenshot is
saved under the test's temporary folder (``dashboard.png``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pyarrow.csv as pacsv
import pytest
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
NAB = ROOT / "examples/data/nab/data/artificialWithAnomaly/art_load_balancer_spikes.csv"
INSTALL = ("install it with `apt-get install chromium chromium-driver` (Debian; `.ci/install-browser` does it) "
           "and `pip install -e '.[dev]'` (Selenium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser():
    """Headless Chromium, or the test fails saying how to install it (CI must not skip it)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.fail(f"the browser test needs Selenium ({exc}); {INSTALL}")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail(f"the browser test needs Chromium and chromedriver on PATH; {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,860"):
        options.add_argument(arg)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium try to download a browser
    try:
        return webdriver.Chrome(service=Service(driver), options=options)
    except Exception as exc:  # noqa: BLE001 - any start failure is the same advice
        pytest.fail(f"headless Chromium did not start ({type(exc).__name__}: {str(exc).strip()[:300]}); {INSTALL}")


def _wait(what: str, check):
    return wait_until(check, what)


def test_dashboard_shows_the_stream_its_points_and_alert_markers(tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    out = tmp_path / "scores.csv"
    job = subprocess.Popen([sys.executable, str(ROOT / "tests/live_job.py"), str(NAB), str(out),
                            "--serve", f"127.0.0.1:{port}", "--speed", "500000"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    browser = None
    try:
        browser = _browser()  # starts while the job starts: both take seconds
        def up():
            try:
                return urllib.request.urlopen(url + "/healthz", timeout=1).status == 200
            except OSError:
                assert job.poll() is None, f"the served run ended early:\n{job.stdout.read()}"
                return False

        _wait("the server answers", up)
        browser.get(url + "/")
        js = browser.execute_script
        # live: the key list names the stream, the chart draws its points
        _wait("the key list shows the stream", lambda: any(
            "art_load_balancer_spikes" in li.text for li in browser.find_elements("css selector", "#keys li")))
        _wait("the chart shows points", lambda: int(js(
            "return document.getElementById('score-chart').dataset.points") or 0) > 0)
        assert int(js("return document.getElementById('value-chart').dataset.points")) > 0
        assert js("return document.querySelector('#score-chart polyline.series').getAttribute('points')")

        assert job.stdout.readline().startswith("hebbstream: serving")
        assert job.stdout.readline().strip() == "finished"  # the whole stream was scored and written
        scores = pacsv.read_csv(out).to_pandas()
        raised = sorted(str(t)[:16] for t in scores.loc[scores["alert"], "timestamp"])
        assert raised, "the replay raised no alert to look for"

        def markers():
            titles = js("return [...document.querySelectorAll('#score-chart .alert-marker title')]"
                        ".map(t => t.textContent)")
            return titles if len(titles) == len(raised) else None

        titles = _wait(f"{len(raised)} alert markers are drawn", markers)
        assert sorted(t.removeprefix("alert at ") for t in titles) == raised  # each where an alert opened
        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        _wait("the alert count at the top", lambda: browser.find_element("id", "alerts").text == str(len(raised)))
        # the page polls once a second: its last poll may come after the markers were drawn
        _wait("the event count reaches the stream's length",
              lambda: browser.find_element("id", "events").text == f"{len(scores):,}")
    finally:
        if browser is not None:
            browser.quit()
        job.kill()
        job.wait()
