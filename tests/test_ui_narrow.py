"""Every page on a phone (a 390 px wide viewport) in Debian's Chromium: nothing wider than the screen (a wide table
scrolls in its own box, never the page), axe-clean; and the job page's memory plan as a table, not JSON."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from ops.harness.images import sample_png
from ops.harness.stack import Stack
from tests.browser import DESKTOP, PHONE, Tab, chromium, open_tab, screenshot
from tests.test_sweeps import wait_sweep

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

# what sticks out past the viewport's right edge, for the failure message
OVERFLOW = """() => ({width: document.documentElement.scrollWidth,
    culprits: [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > innerWidth + 0.5
        && !e.closest('.scroll')).slice(0, 8).map(e => `${e.tagName.toLowerCase()}#${e.id}.${e.className}`)})"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def finished(sqlite_stack: Stack) -> dict[str, Any]:
    """A succeeded job and a finished two-cell sweep, both with long ids and measurements to lay out."""
    s = sqlite_stack
    image = s.upload(sample_png(color=(90, 30, 160)))["id"]
    job = s.wait(s.submit(image, params={"num_inference_steps": 2, "num_frames": 14, "seed": 11})["id"])
    assert job["status"] == "succeeded"
    sweep = s.client.post("/v1/sweeps", headers=s.headers, json={
        "name": "narrow", "model": "tiny", "images": [{"image_id": image}],
        "params": {"num_inference_steps": 2, "num_frames": 6, "seed": 4},
        "axes": {"motion_bucket_id": [40, 200]}}).json()
    wait_sweep(s, sweep["id"])
    return {"job": job, "sweep": sweep}


def assert_fits(page: Page) -> None:
    fit: dict[str, Any] = page.evaluate(OVERFLOW)
    assert fit["width"] <= PHONE["width"], fit


@contextmanager
def on_phone(browser: Browser, url: str) -> Iterator[Tab]:
    with open_tab(browser, url, viewport=PHONE) as tab:
        tab.sign_in()
        yield tab


def test_the_start_page_with_its_recent_jobs_fits_a_phone(browser: Browser, sqlite_stack: Stack,
                                                          finished: dict[str, Any]) -> None:
    with on_phone(browser, f"{sqlite_stack.serve()}/ui") as tab:
        page = tab.page
        # Given the form built and the recent jobs listed, a finished one among them
        page.locator("#p-num_inference_steps").wait_for()
        page.locator(f"#jobs a:text-is('{finished['job']['id']}')").wait_for()
        # Then nothing is wider than the screen; the jobs table scrolls in its own box
        assert_fits(page)
        box = page.locator("#jobs").evaluate("t => t.parentElement.getBoundingClientRect().right")
        assert box <= PHONE["width"]
        screenshot(page, "index-390")
        tab.check("index-390")


def test_the_job_page_fits_a_phone_and_shows_its_memory_plan_as_a_table(browser: Browser, sqlite_stack: Stack,
                                                                        finished: dict[str, Any]) -> None:
    job = finished["job"]
    with on_phone(browser, f"{sqlite_stack.serve()}/ui/jobs/{job['id']}") as tab:
        page = tab.page
        page.wait_for_function("() => document.getElementById('video').readyState >= 2")
        # the memory plan: what the worker planned and used, in rows, with no JSON left in the record
        plan = page.locator("#record dt:text-is('memory plan') + dd table.memory-plan")
        rows = dict(zip(plan.locator("th").all_inner_texts(), plan.locator("td").all_inner_texts(), strict=True))
        used, planned = job["runtime"]["memory"], job["runtime"]["pipeline"]["memory_plan"]
        assert rows["mode"] == used["mode"] == "cpu"
        assert rows["decode chunk"] == f"{used['decode_chunk_size']} frames"
        assert rows["forward chunking"] == "no" and rows["model offload"] == "none"
        assert rows["estimated peak"] == "not planned on the CPU"
        reasons = page.locator("#record .memory-reasons li").all_inner_texts()
        assert reasons == planned["reasons"] and reasons
        assert "{" not in page.locator("#record").inner_text()
        assert_fits(page)
        screenshot(page, "job-390")
        tab.check("job-390")
        page.set_viewport_size(DESKTOP)
        screenshot(page, "job-desktop")


def test_the_sweep_page_fits_a_phone(browser: Browser, sqlite_stack: Stack, finished: dict[str, Any]) -> None:
    sweep = finished["sweep"]
    with on_phone(browser, f"{sqlite_stack.serve()}/ui/sweeps/{sweep['id']}") as tab:
        page = tab.page
        page.wait_for_function("() => document.querySelectorAll('video[aria-label^=\"cell\"]').length === 2")
        page.wait_for_function("() => document.querySelector('video.grid') && "
                               "document.querySelector('video.grid').readyState >= 2")
        page.locator("#chart-list figure").first.wait_for()
        # the grid and every chart are drawn within the screen; the cells table scrolls in its own box
        widths: list[float] = page.evaluate("[...document.querySelectorAll('video.grid, svg.chart')]"
                                            ".map(e => e.getBoundingClientRect().right)")
        assert widths and max(widths) <= PHONE["width"], widths
        assert_fits(page)
        screenshot(page, "sweep-390")
        # a cell opened at full size fits too
        page.locator(".cell-open").first.click()
        page.locator("#lightbox").wait_for(state="visible")
        assert_fits(page)
        right = page.locator("#lightbox").evaluate("d => d.getBoundingClientRect().right")
        assert right <= PHONE["width"]
        screenshot(page, "sweep-390-lightbox", full_page=False)
        page.get_by_role("button", name="Close").click()
        tab.check("sweep-390")
