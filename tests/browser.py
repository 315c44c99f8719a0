"""A real browser for tests: Debian's chromium driven by Playwright, whose own browser download
cannot run here (never `playwright install`)."""

from playwright.sync_api import Browser, Playwright

from tests.tools import require

FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright: Playwright) -> Browser:
    """Debian's chromium, headless; fails in CI if it is not installed."""
    return playwright.chromium.launch(executable_path=require("chromium", "chromium"), args=FLAGS)
