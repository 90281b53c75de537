"""The HTML report in a real browser: headless Chromium loads it offline, plotly draws every plot, and a
screenshot of the page is not blank. Chromium comes from Debian's `chromium` package (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lkswarm.report.html_figures import FIGURES
from lkswarm.report.html_page import render_html
from report_samples import synthetic_report

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Virtual time lets the page finish its scripts without a fixed sleep.
VIRTUAL_TIME_BUDGET_MS = 10_000
CHROMIUM_TIMEOUT_S = 120


def find_chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and Path("/usr/bin/chromium").exists():
        path = "/usr/bin/chromium"
    if path is None:
        reason = "chromium is not installed (Debian: apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_chromium()


@pytest.fixture
def page(tmp_path: Path) -> Path:
    path = tmp_path / "report.html"
    path.write_text(render_html(synthetic_report(1)), encoding="utf-8")
    return path


def run_chromium(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    out = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT_S,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_chromium_loads_the_report_and_plotly_draws_every_plot(chromium: str, page: Path, tmp_path: Path) -> None:
    budget = f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"
    dom = run_chromium(chromium, tmp_path, "--dump-dom", budget, page.as_uri()).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None, dom[:500]
    assert "data-plot-error" not in body.group(0), body.group(0)
    assert f'data-plots-drawn="{len(FIGURES)}"' in body.group(0), body.group(0)
    for plot_id, _ in FIGURES:
        assert re.search(rf'<div class="plot js-plotly-plot" id="{plot_id}"', dom), plot_id
    # plotly draws each figure into SVG layers of class main-svg.
    assert dom.count('class="main-svg"') >= len(FIGURES)


def test_chromium_screenshot_of_the_report_is_not_blank(chromium: str, page: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "shot.png"
    run_chromium(
        chromium,
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
        page.as_uri(),
    )
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1280, 2000)
        colors = rgb.getcolors(maxcolors=1 << 20) or []
    # Text, tables and anti-aliased plot lines give thousands of colours; a blank page gives one.
    assert len(colors) > 200, len(colors)
    background = max(colors)[0]
    assert background < 0.97 * 1280 * 2000, "the page is (almost) a single colour"
