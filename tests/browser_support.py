"""One way to start the browser for every browser test: Debian's Chromium at /usr/bin/chromium,
headless, driven by Playwright. A missing browser fails the test and names the package; it is
never a skip."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Kept as a CI artifact folder: each browser test leaves its last screen here.
SCREENSHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"


def launch_chromium(playwright):
    if not CHROMIUM.exists():
        pytest.fail(f"missing {CHROMIUM}: install Debian's 'chromium' package (make test does it when run as root)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
