"""The report pages of a real run, opened in a real browser: headless Chromium driven by playwright.

The browser is the system's Chromium (Debian's ``chromium`` package; .ci/run installs it where it
runs as root), started by playwright through ``executable_path``: playwright's own browser builds
are never downloaded. Without playwright or without a Chromium the test is skipped, with the reason.

One real two-cell run (1.5 s a cell), its output folder's report.html and one run's report.html,
each opened from disk at 1280x800: every image loads, the console stays free of errors, every link
resolves (its file exists and its anchor is on the target page), each figure's caption shows, the
verdict is on screen without scrolling, and a click follows the links between the two pages both
ways. Screenshots (the first screen, and the whole page) are saved next to each page, in the run's
output folder: ``report-screenshot.png`` and ``report-screenshot-full.png``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from walstress import run as run_scenario
from walstress.report import build_report

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright; "
                                                             "its own browser builds are not needed)")

from test_report import SCENARIO  # noqa: E402  (the same matrix as the report tests, shorter)

VIEWPORT = {"width": 1280, "height": 800}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")


def find_chromium() -> str | None:
    """WALSTRESS_CHROMIUM when set, else the first Chromium on PATH."""
    given = os.environ.get("WALSTRESS_CHROMIUM")
    if given:
        return shutil.which(given)
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install chromium; "
                                                         "or set WALSTRESS_CHROMIUM)")


@pytest.fixture(scope="module")
def output_folder(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("browser") / "out"
    result = run_scenario(dict(SCENARIO, duration=1.5), out, cache_dir=cache_dir)   # the session's templates
    build_report(out, result.data)
    return out


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


def _open(browser, page_path: Path):
    """A new tab on ``page_path`` at 1280x800, and the console errors it logs."""
    tab = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    tab.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
    tab.goto(page_path.as_uri(), wait_until="load")
    return tab, errors


def _has_anchor(browser, path: Path, anchor: str, cache: dict[Path, set[str]]) -> bool:
    if path not in cache:
        tab = browser.new_page()
        tab.goto(path.as_uri(), wait_until="domcontentloaded")
        cache[path] = set(tab.evaluate("Array.from(document.querySelectorAll('[id]'), e => e.id)"))
        tab.close()
    return anchor in cache[path]


def check_page(browser, page_path: Path) -> list[str]:
    """What is wrong with ``page_path`` in the browser; saves its screenshots beside it."""
    problems: list[str] = []
    tab, errors = _open(browser, page_path)
    images = tab.evaluate("Array.from(document.images, i => [i.alt, i.complete, i.naturalWidth])")
    if len(images) < 4:
        problems.append(f"{len(images)} image(s), expected at least 4")
    problems += [f"image not loaded: {alt}" for alt, complete, width in images if not (complete and width > 0)]
    figures = tab.locator("figure")
    for index in range(figures.count()):
        caption = figures.nth(index).locator("figcaption")
        if caption.count() != 1 or not caption.is_visible() or not caption.inner_text().strip():
            problems.append(f"figure {index}: no visible caption")
    anchors: dict[Path, set[str]] = {}
    for raw, resolved in tab.evaluate("Array.from(document.querySelectorAll('a[href]'), "
                                      "a => [a.getAttribute('href'), a.href])"):
        url = urlsplit(resolved)
        target = Path(unquote(url.path))
        if url.scheme != "file" or raw.startswith(("/", "file:")):
            problems.append(f"link not relative to the page: {raw}")
        elif not target.is_file():
            problems.append(f"link to a missing file: {raw}")
        elif url.fragment and not _has_anchor(browser, target, url.fragment, anchors):
            problems.append(f"link to a missing anchor: {raw}")
    verdict = tab.locator(".verdict").first
    box = verdict.bounding_box()
    if not verdict.is_visible() or box is None:
        problems.append("the verdict is not visible")
    elif not (0 <= box["x"] and box["x"] + box["width"] <= VIEWPORT["width"]
              and 0 <= box["y"] and box["y"] + box["height"] <= VIEWPORT["height"]):
        problems.append(f"the verdict is outside the first screen: {box}")
    tab.screenshot(path=str(page_path.parent / "report-screenshot.png"))
    tab.screenshot(path=str(page_path.parent / "report-screenshot-full.png"), full_page=True)
    problems += [f"console: {e}" for e in errors]
    tab.close()
    return problems


def test_report_pages_in_chromium(output_folder, browser):
    folder_page = output_folder / "report.html"
    run_page = output_folder / "cell-000" / "run-000" / "report.html"
    problems = {str(page.relative_to(output_folder)): check_page(browser, page) for page in (folder_page, run_page)}
    assert problems == {"report.html": [], "cell-000/run-000/report.html": []}
    for page in (folder_page, run_page):
        for name in ("report-screenshot.png", "report-screenshot-full.png"):
            assert (page.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a click follows the links both ways: folder page -> run page -> back to the cell's section
    tab, errors = _open(browser, folder_page)
    tab.get_by_role("link", name="cell-000/run-000").click()
    tab.wait_for_load_state("load")
    assert Path(unquote(urlsplit(tab.url).path)) == run_page
    assert tab.title().startswith("walstress run cell-000 run-000")
    tab.get_by_role("link", name="cell-000, all its runs").click()
    tab.wait_for_load_state("load")
    url = urlsplit(tab.url)
    assert Path(unquote(url.path)) == folder_page and url.fragment == "cell-000-modepassive"
    assert tab.locator(f"#{url.fragment}").is_visible()
    assert errors == []
    tab.close()
