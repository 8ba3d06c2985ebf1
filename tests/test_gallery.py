"""The sweep gallery page, served by the API and driven in Debian's Chromium by Playwright."""

from __future__ import annotations

import time
from typing import Any

from ops.harness.images import sample_png
from ops.harness.stack import API_KEY, Stack
from tests.browser import chromium, open_tab
from tests.test_sweeps import wait_sweep


def test_the_gallery_page_and_its_assets_are_served_safely(sqlite_stack: Stack) -> None:
    c = sqlite_stack.client
    r = c.get("/ui/sweeps/swp_abc123")
    assert r.status_code == 200 and 'data-sweep-id="swp_abc123"' in r.text
    assert r.headers["x-content-type-options"] == "nosniff" and "default-src 'self'" in r.headers[
        "content-security-policy"]
    assert c.get("/ui/sweeps/<script>").status_code == 404
    assert c.get("/ui/static/sweep.js").headers["content-type"].startswith("text/javascript")
    assert c.get("/ui/static/../app.py").status_code == 404


def test_the_gallery_plays_every_cell_in_step_in_a_real_browser(sqlite_stack: Stack) -> None:
    s = sqlite_stack
    base = s.serve()
    image = s.upload(sample_png(color=(250, 200, 0)))["id"]
    body = {"name": "gallery", "model": "tiny", "images": [{"image_id": image}],
            "params": {"num_inference_steps": 2, "num_frames": 14, "seed": 5},
            "axes": {"motion_bucket_id": [100, 200, 300]}}
    sweep = s.client.post("/v1/sweeps", headers=s.headers, json=body).json()
    wait_sweep(s, sweep["id"])
    with chromium() as browser, open_tab(browser, f"{base}/ui/sweeps/{sweep['id']}") as tab:
        page = tab.page
        # sign in: the key is asked for, then kept in this tab only
        tab.sign_in()
        page.wait_for_function("() => document.querySelectorAll('video[aria-label^=\"cell\"]').length === 3")
        headers = page.locator("th[scope=col]").all_inner_texts()
        assert headers == ["motion=100", "motion=200", "motion=300"]
        assert page.locator("#page-title").inner_text() == "sweep gallery"
        page.wait_for_function("() => [...document.querySelectorAll('video')].every(v => v.readyState >= 2)")
        assert page.locator("video.grid").count() == 1
        page.get_by_role("button", name="Play all").click()
        time.sleep(1.5)
        times: list[float] = page.evaluate(
            "[...document.querySelectorAll('video[aria-label^=\"cell\"]')].map(v => v.currentTime)")
        assert min(times) > 0 and max(times) - min(times) < 0.25, times
        page.get_by_role("button", name="Pause all").click()
        # one scrubber moves every cell to the same moment
        page.eval_on_selector("#scrub", "el => { el.value = 500; el.dispatchEvent(new Event('input')); }")
        time.sleep(0.3)
        state: dict[str, Any] = page.evaluate("""() => {
            const vs = [...document.querySelectorAll('video[aria-label^="cell"]')];
            return {times: vs.map(v => v.currentTime), duration: vs[0].duration, paused: vs.every(v => v.paused)};
        }""")
        assert state["paused"]
        assert all(abs(t - state["duration"] / 2) < 0.1 for t in state["times"]), state
        assert page.evaluate("sessionStorage.getItem('svdq-api-key')") == API_KEY
        # a cell links to its job's page
        assert (page.locator("#gallery td a").first.get_attribute("href") or "").startswith("/ui/jobs/job_")
        tab.check("gallery")
