"""The job page in Debian's Chromium: during a render its live preview changes as the job denoises, and
once the job has ended the preview is gone, the video plays and the measurements are shown."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from ops.harness.images import sample_png
from ops.harness.stack import Stack
from tests.browser import OUT, chromium, open_tab

if False:  # typing only (playwright is imported by tests.browser when a browser exists)
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def test_the_job_page_shows_the_preview_changing_and_the_metrics_after(browser: Browser,
                                                                       sqlite_stack: Stack) -> None:
    s = sqlite_stack
    job = s.submit(s.upload(sample_png(color=(200, 60, 40)))["id"], reuse=False,
                   params={"num_inference_steps": 40, "num_frames": 8})
    with open_tab(browser, f"{s.serve()}/ui/jobs/{job['id']}") as tab:
        tab.sign_in()
        page = tab.page
        seen: list[tuple[str, str]] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = page.evaluate("""() => {
                const img = document.getElementById('live-preview');
                return [document.getElementById('live').hidden, img.dataset.step || '', img.src.slice(-64),
                        document.getElementById('job-status').textContent];
            }""")
            hidden, step, src, status = state
            if not hidden and step and (not seen or seen[-1] != (step, src)):
                seen.append((step, src))
                if len(seen) == 2:  # what a person watching the render sees
                    OUT.mkdir(exist_ok=True)
                    page.screenshot(path=str(OUT / "job-page-live-preview.png"))
            if status.startswith("succeeded"):
                break
            page.wait_for_timeout(100)
        assert len(seen) >= 2, seen  # the preview changed during the render
        assert [int(st) for st, _ in seen] == sorted(int(st) for st, _ in seen)
        assert len({src for _, src in seen}) >= 2
        tab.page.locator("#player:not([hidden])").wait_for()
        assert page.locator("#live").is_hidden()  # the video replaced the preview
        page.locator("#measurements:not([hidden])").wait_for()
        rows = page.locator("#metrics tbody tr")
        assert rows.count() >= 4 and "px/frame" in page.locator("#metrics").inner_text()
        tab.check("job-page-after-preview")
