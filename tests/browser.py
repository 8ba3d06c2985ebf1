"""Shared Playwright helpers for the page tests: Debian's Chromium (never a downloaded browser), console-error
capture, an axe-core accessibility check and screenshots under out/ (kept by CI as artifacts)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ops.harness import ROOT
from ops.harness.services import unavailable
from ops.harness.stack import API_KEY

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

CHROMIUM = "/usr/bin/chromium"
OUT = ROOT / "out"
SCREENSHOTS = OUT / "screenshots"  # what a person looks at to judge a page (out/ is not versioned)
DESKTOP = {"width": 1100, "height": 800}
PHONE = {"width": 390, "height": 844}  # an iPhone 12-15's CSS viewport
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
# axe's default set (every WCAG 2.0/2.1/2.2 A and AA rule plus best practices; experimental rules stay off)
AXE_OPTIONS: dict[str, Any] = {"resultTypes": ["violations"]}


@contextmanager
def chromium() -> Iterator[Browser]:
    """One headless Chromium for a test module; tests open their own contexts in it."""
    if shutil.which(CHROMIUM) is None:
        unavailable("Debian's chromium is not installed (make browser installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    """A page in a fresh browser context (its own session storage) and every error it logged."""

    page: Page
    errors: list[str] = field(default_factory=list)

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"{msg.text} at {msg.location.get('url')}")

    def sign_in(self, key: str = API_KEY) -> None:
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.locator("#content:not([hidden])").wait_for()

    def check(self, name: str) -> None:
        """Save a screenshot, then fail on any axe violation or console error the page produced."""
        OUT.mkdir(exist_ok=True)
        self.page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
        violations = axe_violations(self.page)
        assert violations == [], "\n".join(violations)
        assert self.errors == [], self.errors


def screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


@contextmanager
def open_tab(browser: Browser, url: str, *, viewport: dict[str, int] | None = None) -> Iterator[Tab]:
    # the page's own CSP stays in force: a blocked script or style shows up as a console error
    context = browser.new_context(viewport=viewport or DESKTOP)
    page = context.new_page()
    tab = Tab(page)
    page.on("console", tab._console)
    page.on("pageerror", lambda e: tab.errors.append(f"uncaught: {e}"))
    try:
        page.goto(url)
        yield tab
    finally:
        context.close()


def axe_violations(page: Page) -> list[str]:
    """axe-core (bundled by axe-playwright-python, no network) on the page as it is now: one line per node."""
    from axe_playwright_python.sync_playwright import Axe

    result: dict[str, Any] = Axe().run(page, options=AXE_OPTIONS).response
    return [f"{v['id']} ({v['impact']}): {v['help']} at {node['target']}"
            for v in result["violations"] for node in v["nodes"]]
