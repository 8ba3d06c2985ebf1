"""The sweep page as a study, served by the API and driven in Debian's Chromium by Playwright: the comparison grid
with its poster, playing with every cell under one play/pause and scrubber; each row beside its source image; cells
opening at full size; charts of every measurement against every swept parameter, one point per cell."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from PIL import Image, ImageStat

from ops.harness.images import sample_png
from ops.harness.stack import API_KEY, Stack
from tests.browser import SCREENSHOTS, chromium, open_tab, screenshot
from tests.test_sweeps import wait_sweep

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

CELLS = "video[aria-label^=\"cell\"]"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def finished_sweep(s: Stack, body: dict[str, Any]) -> dict[str, Any]:
    sweep = s.client.post("/v1/sweeps", headers=s.headers, json=body).json()
    view, _ = wait_sweep(s, sweep["id"])
    return view


@pytest.fixture(scope="module")
def one_axis(sqlite_stack: Stack) -> dict[str, Any]:
    """One image, motion_bucket_id at three values: a row of three cells and a 3-tile grid."""
    s = sqlite_stack
    image = s.upload(sample_png(color=(250, 200, 0)))["id"]
    return finished_sweep(s, {"name": "gallery", "model": "tiny", "images": [{"image_id": image}],
                              "params": {"num_inference_steps": 2, "num_frames": 14, "seed": 5},
                              "axes": {"motion_bucket_id": [100, 200, 300]}})


@pytest.fixture(scope="module")
def two_axes(sqlite_stack: Stack) -> dict[str, Any]:
    """Two images x motion_bucket_id (2 values) x noise_aug_strength (2 values): eight cells, each measured."""
    s = sqlite_stack
    images = [s.upload(sample_png(color=c))["id"] for c in ((30, 140, 220), (220, 60, 40))]
    return finished_sweep(s, {"name": "study", "model": "tiny", "images": [{"image_id": i} for i in images],
                              "params": {"num_inference_steps": 2, "num_frames": 6, "seed": 9},
                              "axes": {"motion_bucket_id": [60, 240], "noise_aug_strength": [0.02, 0.3]}})


def open_sweep(page: Page) -> None:
    page.wait_for_function(f"() => document.querySelectorAll('{CELLS}').length > 0")
    page.wait_for_function("() => [...document.querySelectorAll('video')].filter(v => v.src)"
                           ".every(v => v.readyState >= 2)")


def test_the_gallery_page_and_its_assets_are_served_safely(sqlite_stack: Stack) -> None:
    c = sqlite_stack.client
    r = c.get("/ui/sweeps/swp_abc123")
    assert r.status_code == 200 and 'data-sweep-id="swp_abc123"' in r.text
    assert r.headers["x-content-type-options"] == "nosniff" and "default-src 'self'" in r.headers[
        "content-security-policy"]
    assert c.get("/ui/sweeps/<script>").status_code == 404
    for name in ("sweep.js", "charts.js", "measurements.js"):
        assert c.get(f"/ui/static/{name}").headers["content-type"].startswith("text/javascript")
    assert c.get("/ui/static/../app.py").status_code == 404


def test_the_gallery_plays_every_cell_in_step_in_a_real_browser(browser: Browser, sqlite_stack: Stack,
                                                                one_axis: dict[str, Any]) -> None:
    base = sqlite_stack.serve()
    with open_tab(browser, f"{base}/ui/sweeps/{one_axis['id']}") as tab:
        page = tab.page
        # sign in: the key is asked for, then kept in this tab only
        tab.sign_in()
        page.wait_for_function(f"() => document.querySelectorAll('{CELLS}').length === 3")
        # the columns say the swept parameter in words (they were abbreviated, "motion=100", before #17)
        headers = page.locator("table.cells thead th").all_inner_texts()
        assert headers == ["source image", "motion_bucket_id = 100", "motion_bucket_id = 200",
                           "motion_bucket_id = 300"]
        assert page.locator("#page-title").inner_text() == "sweep gallery"
        open_sweep(page)
        assert page.locator("video.grid").count() == 1
        page.get_by_role("button", name="Play all").click()
        time.sleep(1.5)
        times: list[float] = page.evaluate(f"[...document.querySelectorAll('{CELLS}')].map(v => v.currentTime)")
        assert min(times) > 0 and max(times) - min(times) < 0.25, times
        page.get_by_role("button", name="Pause all").click()
        # one scrubber moves every cell, and the grid, to the same moment
        page.eval_on_selector("#scrub", "el => { el.value = 500; el.dispatchEvent(new Event('input')); }")
        time.sleep(0.3)
        state: dict[str, Any] = page.evaluate("""() => {
            const vs = [...document.querySelectorAll('video[aria-label^="cell"]')];
            const grid = document.querySelector('video.grid');
            return {times: vs.map(v => v.currentTime), duration: vs[0].duration, paused: vs.every(v => v.paused),
                    grid: grid.currentTime / grid.duration, gridPaused: grid.paused};
        }""")
        assert state["paused"] and state["gridPaused"]
        assert all(abs(t - state["duration"] / 2) < 0.1 for t in state["times"]), state
        assert abs(state["grid"] - 0.5) < 0.1, state
        assert page.evaluate("sessionStorage.getItem('svdq-api-key')") == API_KEY
        # a cell links to its job's page
        assert (page.locator("#gallery td a").first.get_attribute("href") or "").startswith("/ui/jobs/job_")
        screenshot(page, "sweep-one-axis")
        tab.check("gallery")


def test_the_comparison_grid_shows_its_poster_then_plays_with_play_all(browser: Browser, sqlite_stack: Stack,
                                                                       one_axis: dict[str, Any]) -> None:
    base = sqlite_stack.serve()
    with open_tab(browser, f"{base}/ui/sweeps/{one_axis['id']}") as tab:
        page = tab.page
        tab.sign_in()
        open_sweep(page)
        grid = page.locator("video.grid")
        # Given the page as it opens: the grid has its poster (the composed first frame), no native controls
        # over it, and is shown whole at its own aspect ratio, up to the page's width
        before: dict[str, Any] = page.evaluate("""async () => {
            const v = document.querySelector('video.grid'), r = v.getBoundingClientRect();
            const img = new Image(); img.src = v.poster; await img.decode();
            const bar = document.getElementById('controls').getBoundingClientRect();
            return {poster: v.poster, posterSize: [img.naturalWidth, img.naturalHeight], paused: v.paused,
                    t: v.currentTime, controls: v.controls, natural: [v.videoWidth, v.videoHeight],
                    shown: [r.width, r.height], bottom: r.bottom, barTop: bar.top,
                    room: document.getElementById('grids').clientWidth};
        }""")
        assert before["poster"].startswith("blob:") and before["posterSize"] == before["natural"], before
        assert before["paused"] and before["t"] == 0 and not before["controls"], before
        (nw, nh), (w, h) = before["natural"], before["shown"]
        assert abs(w / h - nw / nh) < 0.02, before
        assert abs(w - min(before["room"], 2 * nw)) <= 1, before
        assert before["barTop"] >= before["bottom"], before  # the one play/pause and scrubber sit beneath it
        # and what shows is the poster, not a black box: its picture has the cells' colours and light
        shot = Image.open(io.BytesIO(grid.screenshot())).convert("L")
        assert ImageStat.Stat(shot).mean[0] > 40 and ImageStat.Stat(shot).stddev[0] > 10
        # When Play all is pressed, the grid plays too
        page.get_by_role("button", name="Play all").click()
        page.wait_for_function("() => document.querySelector('video.grid').currentTime > 0.3")
        assert not page.evaluate("document.querySelector('video.grid').paused")
        page.get_by_role("button", name="Pause all").click()
        assert page.evaluate("[...document.querySelectorAll('video')].filter(v => v.src).every(v => v.paused)")
        screenshot(page, "sweep-grid", full_page=False)
        tab.check("sweep-grid")


def test_each_row_has_its_source_image_and_a_cell_opens_at_full_size(browser: Browser, sqlite_stack: Stack,
                                                                    one_axis: dict[str, Any]) -> None:
    base = sqlite_stack.serve()
    with open_tab(browser, f"{base}/ui/sweeps/{one_axis['id']}") as tab:
        page = tab.page
        tab.sign_in()
        open_sweep(page)
        # the row is the image: its picture (from GET /v1/images/{id}/content) and its name, never "all"
        row = page.locator("table.cells tbody th[scope=row]")
        assert row.count() == 1 and row.inner_text() == "image 1"
        page.wait_for_function("() => document.querySelector('th.source img').naturalWidth === 160")
        assert row.locator("img").get_attribute("alt") == "image 1, the source image"
        # cells are large enough to judge
        widths: list[float] = page.evaluate(f"[...document.querySelectorAll('{CELLS}')]"
                                            ".map(v => v.getBoundingClientRect().width)")
        assert min(widths) >= 240, widths
        # When a cell is opened, it plays at full size in a dialog that says what it is
        page.get_by_role("button", name="Open image 1, motion_bucket_id = 200 at full size").click()
        dialog = page.locator("#lightbox")
        dialog.wait_for(state="visible")
        assert page.locator("#lightbox-title").inner_text() == "image 1, motion_bucket_id = 200"
        page.wait_for_function("() => document.getElementById('lightbox-video').currentTime > 0")
        size: list[float] = page.evaluate("(() => { const v = document.getElementById('lightbox-video');"
                                          " return [v.getBoundingClientRect().width, v.videoWidth]; })()")
        assert size[0] >= max(widths) and size[0] >= size[1], size
        facts = page.locator("#lightbox-facts").inner_text()
        assert "seed\n5" in facts and "job\njob_" in facts
        screenshot(page, "sweep-lightbox", full_page=False)
        page.get_by_role("button", name="Close").click()
        dialog.wait_for(state="hidden")
        tab.check("sweep-cells")


def chart_counts(page: Page) -> list[dict[str, Any]]:
    return page.evaluate("""() => [...document.querySelectorAll('#chart-list figure')].map(f => ({
        metric: f.dataset.metric, axis: f.dataset.axis, points: f.querySelectorAll('.point').length,
        lines: f.querySelectorAll('polyline').length, texts: [...f.querySelectorAll('.axis-title')]
            .map(t => t.textContent)}))""")


def test_the_charts_draw_each_measurement_against_each_axis_with_one_point_per_cell(
        browser: Browser, sqlite_stack: Stack, two_axes: dict[str, Any]) -> None:
    s = sqlite_stack
    jobs = s.client.get(f"/v1/sweeps/{two_axes['id']}/jobs", headers=s.headers).json()["items"]
    assert len(jobs) == 8 and all(j["result"]["metrics"] for j in jobs), "every cell is measured"
    with open_tab(browser, f"{s.serve()}/ui/sweeps/{two_axes['id']}") as tab:
        page = tab.page
        tab.sign_in()
        open_sweep(page)
        page.locator("#chart-list figure").first.wait_for()
        charts = chart_counts(page)
        # Then: four measurements x two axes, every chart one point per cell
        assert sorted((c["metric"], c["axis"]) for c in charts) == sorted(
            (m, a) for m in ("motion", "frame_difference", "flicker", "first_frame_similarity")
            for a in ("motion_bucket_id", "noise_aug_strength"))
        assert all(c["points"] == 8 for c in charts), charts
        # a line per image and value of the other axis (2 x 2), joining that line's two cells
        assert all(c["lines"] == 4 for c in charts), charts
        motion = next(c for c in charts if (c["metric"], c["axis"]) == ("motion", "motion_bucket_id"))
        assert motion["texts"] == ["motion_bucket_id", "motion (px/frame)"]
        legend = page.locator(".chart-group").first.locator(".legend li").all_inner_texts()
        assert legend == ["image 1 · noise_aug_strength = 0.02", "image 1 · noise_aug_strength = 0.3",
                          "image 2 · noise_aug_strength = 0.02", "image 2 · noise_aug_strength = 0.3"]
        # each point says its value, as the API gave it
        job = next(j for j in jobs if j["image_id"] == two_axes["images"][0] and j["sweep_cell"] == {
            "motion_bucket_id": 240, "noise_aug_strength": 0.3})
        tip = page.locator(f"figure[data-metric=motion][data-axis=motion_bucket_id] .point[data-cell={job['id']}] "
                           "title").text_content() or ""
        value = job["result"]["metrics"]["motion"]["value"]
        assert tip.startswith("image 1 · noise_aug_strength = 0.3, motion_bucket_id = 240: ")
        assert abs(float(tip.split(": ")[1].split()[0]) - value) <= max(1e-3, abs(value) * 1e-3), (tip, value)
        # rows: the images, each beside its source, and the first axis in words
        rows = page.locator("table.cells tbody th[scope=row]").all_inner_texts()
        assert rows == ["image 1\nmotion_bucket_id = 60", "image 1\nmotion_bucket_id = 240",
                        "image 2\nmotion_bucket_id = 60", "image 2\nmotion_bucket_id = 240"]
        assert page.locator("#values-table tbody tr").count() == 8
        tab.check("sweep-study")
        screenshot(page, "sweep-study")
        page.locator("#charts").scroll_into_view_if_needed()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.locator("#charts").screenshot(path=str(SCREENSHOTS / "sweep-charts.png"))


def rewrite_metrics(route: Route, change: Any) -> None:
    """Answer the sweep's job list as the API did, each cell's metrics replaced by change(metrics)."""
    r = route.fetch()
    page = r.json()
    for job in page["items"]:
        if job.get("result"):
            job["result"]["metrics"] = change(job["result"]["metrics"])
    route.fulfill(response=r, body=json.dumps(page))


@pytest.mark.parametrize("shape", ["numbers", "absent"])
def test_the_charts_read_plain_numbers_too_and_say_when_there_are_no_metrics(
        browser: Browser, sqlite_stack: Stack, one_axis: dict[str, Any], shape: str) -> None:
    # Given a server whose cells carry metrics as name -> number, or none at all (results stored before #17)
    def change(metrics: dict[str, Any]) -> Any:
        if shape == "absent":
            return None
        return {"sharpness": 1.5, **{k: v["value"] for k, v in metrics.items() if k != "measured_on"}}

    with open_tab(browser, f"{sqlite_stack.serve()}/ui/sweeps/{one_axis['id']}") as tab:
        page = tab.page
        page.route("**/v1/sweeps/*/jobs*", lambda route: rewrite_metrics(route, change))
        tab.sign_in()
        open_sweep(page)
        if shape == "absent":
            page.locator("#charts-note:text-matches('^No metrics yet')").wait_for()
            assert page.locator("#chart-list figure").count() == 0 and not page.locator("#values").is_visible()
        else:
            page.locator("#chart-list figure").first.wait_for()
            charts = chart_counts(page)
            assert len(charts) == 5 and all(c["points"] == 3 and c["lines"] == 1 for c in charts), charts
            sharp = next(c for c in charts if c["metric"] == "sharpness")
            assert sharp["texts"] == ["motion_bucket_id", "sharpness"]  # no unit given, none shown
        tab.check(f"sweep-metrics-{shape}")
