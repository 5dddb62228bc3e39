"""The report in a real browser: headless Chromium, network off, driven over DevTools.

A report of each golden run folder must load with no console error and no request beyond its
own file (data: URLs aside), show every chart, sort and filter its table, and photograph to a
real PNG. Chromium is Debian's ``chromium`` package: installed here with apt-get when missing
(CI runs as root); the tests skip, saying why, only when that is impossible.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from harness.report import write_report
from harness.report.browser import HeadlessChromium
from harness.report.screenshot import capture

RUNS = Path(__file__).resolve().parents[1] / "golden" / "runs"


@pytest.fixture(scope="module")
def grid_report(tmp_path_factory, chromium) -> Path:
    run = shutil.copytree(RUNS / "report-grid", tmp_path_factory.mktemp("report") / "run")
    return write_report(run)


@pytest.fixture
def page(chromium, grid_report):
    with HeadlessChromium(chromium) as browser:
        browser.open(grid_report)
        yield browser


@pytest.mark.parametrize("run", ["report-grid", "report-maxrate", "report-single"])
def test_report_loads_clean_and_photographs(run, chromium, tmp_path):
    html = write_report(shutil.copytree(RUNS / run, tmp_path / "run"))
    check = capture(html, html.with_name("report.png"), binary=chromium)
    assert check.console_errors == []
    assert check.outside_requests == []
    with Image.open(check.png) as image:
        assert image.format == "PNG"
        assert image.size == (1280, check.height)
        # The whole page: a real report is several screens tall, and not a blank one.
        assert check.height > 1500
        assert len(image.getcolors(maxcolors=1_000_000) or []) > 50
    assert check.png.stat().st_size > 50_000


def test_every_chart_is_in_its_section(page):
    counts = page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('section[data-section]'))"
        ".map(s => [s.dataset.section, s.querySelectorAll('svg').length]))"
    )
    expected = {"tradeoff": 1, "heatmaps": 2, "latency": 1, "batching": 2}
    assert counts == {"summary": 0, "points": 0, "environment": 0, **expected}
    sizes = page.evaluate(
        "Array.from(document.querySelectorAll('svg')).map(s => s.getBoundingClientRect().width)"
    )
    assert all(width > 200 for width in sizes)  # drawn, not collapsed


def test_the_table_sorts_by_a_clicked_header(page):
    page.evaluate(SORT_HELPERS)
    page.evaluate("headerNamed('Throughput (req/s)').click()")
    ascending = page.evaluate("columnValues('Throughput (req/s)')")
    numbers = [v for v in ascending if v is not None]
    assert numbers == sorted(numbers) and len(numbers) == 21
    assert ascending[-1] is None  # the failed point has no figure: last either way
    page.evaluate("headerNamed('Throughput (req/s)').click()")
    descending = page.evaluate("columnValues('Throughput (req/s)')")
    assert [v for v in descending if v is not None] == sorted(numbers, reverse=True)
    assert page.evaluate("headerNamed('Throughput (req/s)').getAttribute('aria-sort')") == (
        "descending"
    )


def test_the_table_filters_on_typed_words(page):
    page.evaluate(SORT_HELPERS)
    assert page.evaluate("typeFilter('failed')") == ["mbs32-bt2000-nbt2-meb16-r2-grpc-c64-rep0"]
    assert page.evaluate("document.getElementById('point-count').textContent") == "1 of 22 points"
    assert page.evaluate("typeFilter('no batching c64')") == [
        "nobatch-r1-grpc-c64-rep0",
        "nobatch-r2-grpc-c64-rep0",
    ]
    assert len(page.evaluate("typeFilter('')")) == 22


SORT_HELPERS = """
window.headerNamed = function (text) {
  return Array.from(document.querySelectorAll('#points-table thead th'))
    .find(th => th.textContent.trim() === text);
};
window.columnValues = function (text) {
  const index = headerNamed(text).cellIndex;
  return Array.from(document.querySelectorAll('#points-table tbody tr')).map(row => {
    const raw = row.cells[index].getAttribute('data-value');
    return raw === '' ? null : Number(raw);
  });
};
window.typeFilter = function (words) {
  const input = document.getElementById('point-filter');
  input.value = words;
  input.dispatchEvent(new Event('input'));
  return Array.from(document.querySelectorAll('#points-table tbody tr'))
    .filter(row => !row.hidden).map(row => row.dataset.key);
};
"""
