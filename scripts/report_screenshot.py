#!/usr/bin/env python
"""Screenshot a dedup report.html in headless Chromium (for the README), after every image has loaded.

    python scripts/report_screenshot.py OUT/report.html report.png [--width 1280 --height 900] [--full-page]

Needs playwright (the ``browser`` extra) and a Chromium on PATH (chromium, chromium-browser or google-chrome;
``make browser`` installs Debian's as root).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(report: Path, png: Path, width: int, height: int, full_page: bool, fragment: str = "") -> None:
    from playwright.sync_api import sync_playwright

    exe = find_browser()
    if exe is None:
        raise SystemExit(f"Error: no browser on PATH ({', '.join(BROWSERS)}); install Debian's chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(report.resolve().as_uri() + (f"#{fragment}" if fragment else ""))
            page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
            page.wait_for_function("[...document.images].every(i => i.complete)", timeout=30_000)
            jpeg = png.suffix.lower() in (".jpg", ".jpeg")  # smaller for docs; PNG otherwise
            page.screenshot(path=str(png), full_page=full_page, type="jpeg" if jpeg else "png",
                            **({"quality": 85} if jpeg else {}))
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="the report.html of a dedup scan")
    ap.add_argument("png", type=Path, help="the screenshot to write (.png, or .jpg for a smaller file)")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--full-page", action="store_true", help="the whole page, not only the viewport")
    ap.add_argument("--fragment", default="", help="page state, e.g. 'sort=weakest&page=2'")
    a = ap.parse_args(argv)
    if not a.report.is_file():
        print(f"Error: report not found: {a.report}", file=sys.stderr)
        return 2
    if not (200 <= a.width <= 4000 and 200 <= a.height <= 20000):
        print("Error: --width must be in [200, 4000] and --height in [200, 20000]", file=sys.stderr)
        return 2
    screenshot(a.report, a.png, a.width, a.height, a.full_page, a.fragment)
    print(a.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
