"""``report.png``: the report photographed in headless Chromium, network off.

The photograph doubles as a check: the page's console errors and every request it made are
returned, so a caller (``batchbench report --screenshot``, the tests) can tell that the report
really is self-contained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.report.browser import HeadlessChromium

WIDTH = 1280


@dataclass
class PageCheck:
    """What loading the page showed: the PNG's size, console errors, requests beyond the file."""

    png: Path
    width: int
    height: int
    console_errors: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.console_errors and not self.outside_requests


def capture(
    html: Path, png: Path, *, max_height: int | None = None, binary: str | None = None
) -> PageCheck:
    """Open ``html`` in headless Chromium and save the page as ``png`` (whole page by default)."""
    html = Path(html).resolve()
    with HeadlessChromium(binary, width=WIDTH) as browser:
        browser.open(html)
        width, height = browser.screenshot(png, max_height=max_height)
        outside = [url for url in browser.requests if not is_own_request(url, html)]
        return PageCheck(Path(png), width, height, list(browser.console_errors), outside)


def is_own_request(url: str, html: Path) -> bool:
    """The page's own file and inline ``data:`` URLs; anything else left the file."""
    return url == html.as_uri() or url.startswith("data:") or url == "about:blank"
