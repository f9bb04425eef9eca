"""report.html rendered by headless Chromium: no console error, no request off the page, not blank.

Skipped when no Chromium is on PATH, unless HSFM_REQUIRE_BROWSER is set (CI sets it after
installing the Debian package ``chromium``): then a missing browser fails the test.
"""

import os

import pytest

from hsfm_jax.reporting import browser_check
from hsfm_jax.sweep import report as sweep_report

pytestmark = pytest.mark.slow  # a run, then Chromium


@pytest.fixture(scope="module")
def browser():
    path = browser_check.find_browser()
    if path is None:
        if os.environ.get("HSFM_REQUIRE_BROWSER"):
            pytest.fail("HSFM_REQUIRE_BROWSER is set but no Chromium is on PATH")
        pytest.skip("no Chromium on PATH (apt-get install chromium); HSFM_REQUIRE_BROWSER unset")
    return path


def test_report_renders_cleanly(browser, small_run, tmp_path):
    workdir, _ = small_run
    outcome = browser_check.render(workdir / "report.html", browser=browser)
    assert browser_check.problems(outcome) == []
    assert outcome.requests[0] == (workdir / "report.html").resolve().as_uri()
    assert all(url.startswith("data:") for url in outcome.requests[1:])  # inline images only
    assert outcome.height > 1500  # the figure, the tables and the curves, not an empty page
    assert browser_check.blank_fraction(outcome.screenshot) < 0.9


def test_sweep_report_renders_cleanly(browser, sweep_record, tmp_path):
    records = [
        sweep_record(i, lr, [0.8 - i / 10] * 2, [0.7] * 2) for i, lr in enumerate((0.1, 1.0))
    ]
    sweep_report.write_outputs(
        sweep_report.build_report(records, ["meta_lr"], num_groups=4), tmp_path
    )
    outcome = browser_check.render(tmp_path / "report.html", browser=browser)
    assert browser_check.problems(outcome) == []
    assert [url[:22] for url in outcome.requests[1:]] == ["data:image/png;base64,"]  # sweep.png
    # A line plot and a table on white: about 96% of the screen is background here, 98% with
    # the figure left out.
    assert browser_check.blank_fraction(outcome.screenshot) < 0.97


def test_check_finds_a_broken_page(browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>x</p><img src='missing.png'>"
        "<img src='https://example.invalid/a.png'>"
        "<script>console.error('boom'); undefinedName();</script></body></html>"
    )
    found = browser_check.problems(browser_check.render(page, browser=browser))
    assert "console.error: boom" in found
    assert any(line.startswith("exception: ReferenceError: undefinedName") for line in found)
    assert any("missing.png" in line and line.startswith("log.error") for line in found)
    assert "request leaves the page: https://example.invalid/a.png" in found
    assert any(line.startswith("screenshot is blank") for line in found)
