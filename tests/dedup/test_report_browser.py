"""The dedup report in a real headless Chromium: rendering, images, search, paging, sorting, no script errors.

Skips (with the reason) when playwright is not installed or no Chromium is on PATH.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from neardup.dedup.report import write_report
from tests.dedup.scan_files import image_groups, missing_groups, report_data, write_scan

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
EVIL = "<img src=x onerror=alert(1)>"
PAGE = 50


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install '.[browser]')")
    exe = next((p for p in map(shutil.which, BROWSERS) if p), None)
    if exe is None:
        pytest.skip("no chromium on PATH: install Debian's chromium (make test does as root)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        except Exception as exc:  # a browser that cannot start here is an environment problem, not a report bug
            pytest.skip(f"chromium at {exe} did not start: {str(exc).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 groups of real images (3 pages); group 7's keeper has a hostile name."""
    root = tmp_path_factory.mktemp("report_browser")
    rows = image_groups(root / "photos", 120, names={7: EVIL})
    write_scan(root / "scan", rows)
    return write_report(root / "scan")


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report_browser_10k")
    write_scan(root / "scan", missing_groups(root / "photos", 10_000), calibrated=False)
    return write_report(root / "scan")


class Page:
    """A report opened in a new tab, collecting console errors, page errors and dialogs (an alert = XSS)."""

    def __init__(self, browser: Any, report: Path):
        self.problems: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        self.page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.goto(report.resolve().as_uri())

    def ids(self) -> list[int]:
        return [int(x) for x in self.page.eval_on_selector_all("article.group", "els => els.map(e => e.dataset.group)")]

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector)

    def close(self) -> None:
        self.page.close()
        assert self.problems == []


def _human(n: int) -> str:
    units, i, x = ["B", "kB", "MB", "GB", "TB"], 0, float(n)
    while x >= 1000 and i < len(units) - 1:
        x, i = x / 1000, i + 1
    return f"{n} B" if i == 0 else f"{x:.{2 if x < 10 else 1 if x < 100 else 0}f} {units[i]}"


def test_first_page_and_every_image(browser: Any, small: Path) -> None:
    data = report_data(small)
    order = data["orders"]["size"]
    p = Page(browser, small)
    assert p.ids() == [data["groups"][i]["id"] for i in order[:PAGE]]
    assert p.text("#pageinfo") == "Page 1 of 3" and p.text("#count") == "120 groups"
    tiles = p.page.locator("figure.tile").count()
    assert tiles == sum(len(data["groups"][i]["m"]) for i in order[:PAGE])
    assert p.page.locator("figure.tile.keeper").count() == PAGE
    p.page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; })")
    p.page.wait_for_function("[...document.images].every(i => i.complete)", timeout=10_000)
    widths = p.page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth])")
    assert len(widths) == tiles + 1  # every thumbnail + the calibration plot
    assert all(w > 0 for _, w in widths), [s for s, w in widths if w == 0]
    assert any(s == "report_files/calibration.png" for s, _ in widths)
    # the first keeper's caption: name (full path on hover), resolution, size; its link opens the file
    g0 = data["groups"][order[0]]["m"][0]
    first = p.page.locator("figure.tile").first
    assert first.locator(".name").inner_text() == Path(g0["p"]).name
    assert first.locator(".name").get_attribute("title") == g0["p"]
    assert first.locator(".res").inner_text() == f"{g0['w']}×{g0['h']}"
    assert first.locator(".size").inner_text() == _human(g0["b"])
    assert first.locator("a").evaluate("a => a.href") == Path(g0["p"]).as_uri()
    p.close()


def test_search_paging_sort_and_keys(browser: Any, small: Path) -> None:
    data = report_data(small)
    gid = [g["id"] for g in data["groups"]]
    p = Page(browser, small)
    p.page.fill("#search", "PHOTO_00077")  # case-insensitive substring of the file names of one group
    assert p.ids() == [77] and p.text("#pageinfo") == "Page 1 of 1" and p.page.is_hidden("#nomatch")
    p.page.fill("#search", "no-such-file-zzz")
    assert p.ids() == [] and p.page.is_visible("#nomatch") and "No match" in p.text("#nomatch")
    p.page.fill("#search", "")
    size = data["orders"]["size"]
    p.page.click("#next")
    assert p.ids() == [gid[i] for i in size[PAGE:2 * PAGE]] and p.text("#pageinfo") == "Page 2 of 3"
    p.page.click("#prev")
    assert p.ids() == [gid[i] for i in size[:PAGE]]
    p.page.keyboard.press("n")
    p.page.keyboard.press("n")
    assert p.ids() == [gid[i] for i in size[2 * PAGE:]] and p.page.is_disabled("#next")
    p.page.keyboard.press("p")
    assert p.text("#pageinfo") == "Page 2 of 3"
    p.page.select_option("#sort", "weakest")
    weakest = [gid[i] for i in data["orders"]["weakest"]]
    assert p.ids() == weakest[:PAGE] != [gid[i] for i in size[:PAGE]] and p.text("#pageinfo") == "Page 1 of 3"
    scores = p.page.eval_on_selector_all(".ghead .sc", "els => els.map(e => parseFloat(e.textContent))")
    assert scores == sorted(scores)  # weakest first, as shown
    p.page.click("#next")
    p.page.reload()  # the view (sort, page) survives a reload through the URL fragment
    assert p.ids() == weakest[PAGE:2 * PAGE] and p.page.input_value("#sort") == "weakest"
    p.close()


def test_hostile_file_name_is_text(browser: Any, small: Path) -> None:
    p = Page(browser, small)
    p.page.fill("#search", "onerror")
    assert p.ids() == [7]
    name = p.page.locator("figure.tile.keeper .name")
    assert name.inner_text() == f"{EVIL}.png"
    assert p.page.locator("img[src=x]").count() == 0 and p.page.locator("main img").count() >= 2
    p.close()  # also asserts no alert dialog ran


def test_ten_thousand_groups_stay_one_page(browser: Any, large: Path) -> None:
    data = report_data(large)
    order = data["orders"]["size"]
    p = Page(browser, large)
    assert p.page.locator("article.group").count() == PAGE
    assert p.text("#pageinfo") == "Page 1 of 200" and p.text("#count") == "10000 groups"
    p.page.click("#last")
    assert p.text("#pageinfo") == "Page 200 of 200"
    assert p.ids() == [data["groups"][i]["id"] for i in order[-PAGE:]]
    assert p.page.locator("article.group").count() == PAGE and p.page.locator("figure.tile").count() < 4 * PAGE
    assert p.page.locator(".note").first.inner_text() == "missing"
    p.close()
