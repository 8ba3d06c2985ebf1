"""The job page's Measurements table, in Debian's Chromium: a finished job shows its four metrics with their units
and what they were measured on; a job whose result has no metrics shows no table. Checked with axe-core and for
console errors; screenshots under out/."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.orm import Session

from models.db import create_db_engine
from models.tables import Job
from ops.harness.stack import Stack
from tests.browser import chromium, open_tab

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def test_the_job_page_shows_the_metrics_with_units_and_hides_them_when_there_are_none(
        browser: Browser, sqlite_stack: Stack) -> None:
    s = sqlite_stack
    base = s.serve()
    image = s.upload()["id"]
    # Given two finished tiny jobs, the second's metrics gone as when measuring failed
    jobs = [s.wait(s.submit(image, params={"num_inference_steps": 2, "num_frames": 6, "seed": seed})["id"])
            for seed in (31, 32)]
    assert all(j["status"] == "succeeded" for j in jobs), jobs
    engine = create_db_engine(s.settings.database_url)
    with Session(engine) as session:
        row = session.get(Job, jobs[1]["id"])
        assert row is not None and row.result is not None
        row.result = {**row.result, "metrics": None}
        session.commit()
    engine.dispose()
    metrics = jobs[0]["result"]["metrics"]
    # When the first one's page opens
    with open_tab(browser, f"{base}/ui/jobs/{jobs[0]['id']}") as tab:
        tab.sign_in()
        page = tab.page
        page.locator("#measurements:not([hidden])").wait_for()
        # Then each measurement is a row with its value and unit, as the API gave them, and what it says
        rows = page.locator("#metrics tbody tr")
        assert rows.count() == 4
        shown = {rows.nth(i).locator("th .name").inner_text(): rows.nth(i).locator("td").inner_text()
                 for i in range(4)}
        assert shown == {
            "motion": f"{metrics['motion']['value']:.2f} px/frame",
            "frame difference": f"{metrics['frame_difference']['value']:.2f} levels/frame",
            "flicker": f"{metrics['flicker']['value']:.2f} levels",
            "first frame vs image": f"{metrics['first_frame_similarity']['value']:.3f} SSIM",
        }
        assert "optical flow" in rows.nth(0).locator("th .hint").inner_text()
        width, height = jobs[0]["result"]["width"], jobs[0]["result"]["height"]
        assert page.locator("#metrics-basis").inner_text() == (
            f"Measured on the 6 decoded {width}\u00d7{height} frames, before any post-processing.")
        assert "measuring" in page.locator("#timings").inner_text()
        tab.check("job-metrics")
        # And on a 390 px wide phone the table fits its panel
        page.set_viewport_size({"width": 390, "height": 800})
        assert page.evaluate("(() => { const p = document.getElementById('measurements');"
                             " return p.scrollWidth <= p.clientWidth; })()")
        tab.check("job-metrics-390")
    # And the second one's page has its video but no measurements
    with open_tab(browser, f"{base}/ui/jobs/{jobs[1]['id']}") as tab:
        tab.sign_in()
        page = tab.page
        page.locator("#player:not([hidden])").wait_for()
        assert not page.locator("#measurements").is_visible()
        tab.check("job-no-metrics")
