"""The start page and the job page, driven in Debian's Chromium: sign in, submit through the form, live
progress, playback, cancel, rerun, failed jobs. Every page is checked with axe-core and for console errors."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.orm import Session

from models.db import create_db_engine
from models.states import fail_job
from ops.harness.images import sample_png
from ops.harness.stack import API_KEY, Stack
from tests.browser import Tab, chromium, open_tab

if TYPE_CHECKING:
    from playwright.sync_api import Browser, FilePayload

# media events do not bubble, but a capturing listener on the document sees them all; each event fires as
# readyState passes a stage (metadata, current data, future data), so their order is its progression
RECORD_MEDIA = """window.__media = [];
document.addEventListener('DOMContentLoaded', () => {
  window.__media.push(['start', document.getElementById('video').readyState]);
});
for (const type of ['loadedmetadata', 'loadeddata', 'canplay', 'playing']) {
  document.addEventListener(type, (e) => window.__media.push([type, e.target.readyState]), true);
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def base(sqlite_stack: Stack) -> str:
    return sqlite_stack.serve()


def queued_svd_job(s: Stack) -> dict[str, Any]:
    """A job for `svd`, which no test worker serves: it stays queued until the test moves it."""
    return s.submit(s.upload(sample_png(color=(30, 90, 200)))["id"], model="svd")


def png_file(name: str) -> FilePayload:
    return {"name": name, "mimeType": "image/png", "buffer": sample_png()}


def drop_image(tab: Tab, data: bytes) -> None:
    """Drop a PNG on the drop zone the way a file dragged from the desktop arrives."""
    tab.page.evaluate("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'still.png', {type: 'image/png'}));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
    }""", base64.b64encode(data).decode())


def test_the_pages_share_one_layout_with_a_strict_csp_and_no_inline_script(sqlite_stack: Stack) -> None:
    c = sqlite_stack.client
    for path, script in (("/ui", "index"), ("/ui/jobs/job_abc", "job"), ("/ui/sweeps/swp_abc", "sweep")):
        r = c.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        # the shared header and sign-in form, and only external module scripts
        assert 'id="signin"' in r.text and 'href="/ui/static/svdq.css"' in r.text
        assert re.findall(r"<script[^>]*>", r.text) == [f'<script type="module" src="/ui/static/{script}.js">']
    assert 'data-job-id="job_abc"' in c.get("/ui/jobs/job_abc").text
    bad = c.get("/ui/jobs/job_<b>")
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "not_found"
    for name, ctype in (("common.js", "text/javascript"), ("index.js", "text/javascript"),
                        ("job.js", "text/javascript"), ("svdq.css", "text/css")):
        assert c.get(f"/ui/static/{name}").headers["content-type"].startswith(ctype)
    assert c.get("/ui/static/layout.html").status_code == 404


def test_signing_in_keeps_the_key_in_this_tab_only(browser: Browser, base: str) -> None:
    with open_tab(browser, f"{base}/ui") as tab:
        # Given a fresh tab: the page asks for a key and shows nothing else
        assert tab.page.locator("#signin").is_visible() and not tab.page.locator("#content").is_visible()
        tab.check("signin")
        # A wrong key is refused with a sentence, and not kept (the browser logs the 401 answer itself)
        tab.page.get_by_label("API key").fill("svdq_not_a_key")
        tab.page.get_by_role("button", name="Sign in").click()
        tab.page.locator("#signin-error:text-matches('did not accept this key')").wait_for()
        assert tab.page.evaluate("sessionStorage.length") == 0 and not tab.page.locator("#content").is_visible()
        assert len(tab.errors) == 1 and "status of 401" in tab.errors[0], tab.errors
        tab.errors.clear()
        # When the right key is given
        tab.sign_in()
        # Then it lives in session storage only, and the page loads
        assert tab.page.evaluate("sessionStorage.getItem('svdq-api-key')") == API_KEY
        assert tab.page.evaluate("localStorage.length + document.cookie.length") == 0
        assert "signed in as" in tab.page.locator("#who").inner_text()
        tab.page.get_by_role("button", name="Sign out").click()
        tab.page.locator("#signin:not([hidden])").wait_for()
        assert tab.page.evaluate("sessionStorage.length") == 0


def test_an_image_dropped_on_the_form_renders_with_live_progress_plays_and_reruns(browser: Browser, base: str) -> None:
    with open_tab(browser, f"{base}/ui") as tab:
        page = tab.page
        tab.sign_in()
        # Given the form built from GET /v1/models: every parameter with the model's default and range
        page.locator("#p-num_inference_steps").wait_for()
        assert page.locator("#model").input_value() == "tiny"
        assert page.locator("#p-width").input_value() == "128"
        assert page.locator("#p-num_inference_steps-hint").inner_text().startswith("default 25 · 1\u201350")
        assert page.get_by_label("Seed").input_value() == ""
        # When an image is dropped, it is previewed
        drop_image(tab, sample_png(color=(250, 120, 0)))
        page.wait_for_function("() => document.getElementById('preview').naturalWidth === 160")
        page.get_by_label("Denoising steps").fill("8")
        page.get_by_label("Seed").fill("7")
        page.get_by_role("button", name="Submit job").click()
        link = page.locator("#submit-result a")
        job_id = link.inner_text()
        assert job_id.startswith("job_")
        # Then its row's progress bar follows the event stream (the page never re-lists) up to 100%
        page.evaluate("""(id) => {
            const bar = document.querySelector(`progress[aria-label="progress of ${id}"]`);
            window.__seen = [bar.value];
            new MutationObserver(() => window.__seen.push(bar.value)).observe(bar, {attributes: true});
            new MutationObserver(() => window.__seen.push(bar.value)).observe(bar.parentElement, {subtree: true,
                characterData: true, childList: true});
        }""", job_id)
        page.wait_for_function("(id) => document.querySelector(`progress[aria-label=\"progress of ${id}\"]`)"
                               ".value === 100", arg=job_id, timeout=120_000)
        seen: list[float] = page.evaluate("window.__seen")
        assert seen == sorted(seen) and seen[-1] == 100, seen
        row = page.locator("#jobs tbody tr", has=page.locator(f"a:text-is('{job_id}')"))
        # denoising ends at 100%; the row then says so while it decodes, encodes and uploads
        row.locator("td.status:text-is('succeeded')").wait_for(timeout=60_000)
        tab.check("index-submitted")

        # When its page opens, the video loads and plays
        page.add_init_script(RECORD_MEDIA)
        link.click()
        page.wait_for_url(f"**/ui/jobs/{job_id}")
        page.wait_for_function("() => document.getElementById('video').readyState >= 2")
        page.evaluate("document.getElementById('video').play()")
        page.wait_for_function("() => document.getElementById('video').currentTime > 0")
        media: list[list[Any]] = page.evaluate("window.__media")
        assert media[0] == ["start", 0], media  # nothing loaded before the page fetched the video
        firsts = list(dict.fromkeys(t for t, _ in media[1:]))
        assert firsts == ["loadedmetadata", "loadeddata", "canplay", "playing"], media
        assert page.evaluate("document.getElementById('video').readyState") >= 3
        # and shows what was used, how long it took and what reproduces it
        assert page.locator("#job-status").inner_text() == "succeeded"
        params = page.locator("#params").inner_text()
        assert "num_inference_steps\n8" in params and "seed\n7" in params
        assert "denoising" in page.locator("#timings").inner_text()
        record = page.locator("#record").inner_text()
        assert "torch\n" in record and "diffusers\n" in record and "seed\n7" in record
        sha = page.locator("#record dt:text-is('video sha256') + dd").inner_text()
        assert page.get_by_role("button", name="Cancel job").is_disabled()
        tab.check("job-succeeded")

        # When it is rerun: a new job, same seed, and the same bytes on the same hardware
        page.get_by_role("button", name="Rerun with the same seed").click()
        page.wait_for_url(re.compile(r".*/ui/jobs/(?!" + job_id + r")job_\w+$"))
        page.locator("#job-status:text-is('succeeded')").wait_for(timeout=120_000)
        assert page.locator("#record dt:text-is('rerun of') + dd").inner_text() == job_id
        assert page.locator("#record dt:text-is('video sha256') + dd").inner_text() == sha
        tab.check("job-rerun")


def test_bad_parameters_are_explained_next_to_their_fields(browser: Browser, base: str) -> None:
    with open_tab(browser, f"{base}/ui") as tab:
        page = tab.page
        tab.sign_in()
        page.locator("#p-width").wait_for()
        page.set_input_files("#image", files=png_file("a.png"))
        page.get_by_label("Width (px)").fill("100")
        page.get_by_role("button", name="Submit job").click()
        page.locator("#submit-result li").first.wait_for()
        assert "params.width: must be a multiple of 64" in page.locator("#submit-result").inner_text()
        assert page.locator("#p-width").get_attribute("aria-invalid") == "true"
        # post-processing errors land on their own fields too
        page.get_by_label("Width (px)").fill("128")
        page.get_by_label("Interpolate to fps").fill("5")
        page.get_by_role("button", name="Submit job").click()
        page.locator("#submit-result li:has-text('postprocess.interpolate.fps')").wait_for()
        assert page.locator("#p-width").get_attribute("aria-invalid") is None
        assert page.locator("#pp-interpolate-fps").get_attribute("aria-invalid") == "true"
        # the browser logs each 422 answer itself; nothing else may be logged
        assert all("status of 422" in e for e in tab.errors), tab.errors
        tab.errors.clear()
        tab.check("index-invalid")


def test_a_second_job_submitted_through_the_form_is_canceled_from_its_page(browser: Browser, base: str) -> None:
    with open_tab(browser, f"{base}/ui") as tab:
        page = tab.page
        tab.sign_in()
        # Given a job for a model no worker serves, so it is still waiting when canceled
        page.locator("#p-width").wait_for()
        page.get_by_label("Model").select_option("svd")
        assert page.locator("#p-width").input_value() == "1024"  # the form switched to svd's defaults
        page.set_input_files("#image", files=png_file("b.png"))
        page.get_by_role("button", name="Submit job").click()
        page.locator("#submit-result a").click()
        page.locator("#job-status:text-matches('^queued')").wait_for()
        # When Cancel is pressed
        page.get_by_role("button", name="Cancel job").click()
        # Then the page says so, offers no second cancel, and shows no player
        page.locator("#job-status:text-is('canceled')").wait_for()
        assert page.locator("#job-error").is_visible() and page.get_by_role("button", name="Cancel job").is_disabled()
        assert not page.locator("#player").is_visible() and not page.locator("#job-progress").is_visible()
        assert page.get_by_role("button", name="Rerun with the same seed").is_enabled()
        tab.check("job-canceled")


def test_a_running_job_is_canceled_from_its_page_at_its_next_step(browser: Browser, base: str,
                                                                  sqlite_stack: Stack) -> None:
    # Given a slow render that the worker has started
    s = sqlite_stack
    image = s.upload(sample_png(color=(10, 160, 90)))
    job = s.submit(image["id"], params={"num_inference_steps": 50, "num_frames": 14})
    with open_tab(browser, f"{base}/ui/jobs/{job['id']}") as tab:
        tab.sign_in()
        page = tab.page
        page.locator("#job-status:text-matches('^running')").wait_for(timeout=120_000)
        # When Cancel is pressed mid-render
        page.get_by_role("button", name="Cancel job").click()
        # Then the button says the cancel is on its way, and the job ends canceled at its next step
        page.locator("#job-status:text-is('canceled')").wait_for(timeout=60_000)
        assert page.get_by_role("button", name="Cancel job").is_disabled()
        assert not page.locator("#player").is_visible()
        tab.check("job-canceled-running")
    done = s.client.get(f"/v1/jobs/{job['id']}", headers=s.headers).json()
    assert done["status"] == "canceled" and done["progress"]["step"] < 50 and done["result"] is None


def test_a_failed_job_shows_its_error_code_and_message(browser: Browser, base: str, sqlite_stack: Stack) -> None:
    # Given a job that failed (moved the way a worker fails a queued job)
    job = queued_svd_job(sqlite_stack)
    engine = create_db_engine(sqlite_stack.settings.database_url)
    with Session(engine) as s:
        assert fail_job(s, job_id=job["id"], worker=None, code="render_failed",
                        message="CUDA ran out of memory twice; lower width, height or num_frames.")
    engine.dispose()
    sqlite_stack.client.app.state.svdq.signals.dequeued("svd", job["id"])  # type: ignore[attr-defined]
    # When its page opens
    with open_tab(browser, f"{base}/ui/jobs/{job['id']}") as tab:
        tab.sign_in()
        page = tab.page
        page.locator("#job-status:text-is('failed: render_failed')").wait_for()
        # Then the code and message are shown, and nothing that only a finished render has
        assert page.locator("#job-error").inner_text() == (
            "render_failed: CUDA ran out of memory twice; lower width, height or num_frames.")
        assert page.get_by_role("button", name="Cancel job").is_disabled() and not page.locator("#player").is_visible()
        assert "model\nsvd" in page.locator("#params").inner_text()
        tab.check("job-failed")


def test_a_video_in_s3_plays_from_its_presigned_url_under_the_pages_csp(browser: Browser, pg_s3_stack: Stack) -> None:
    # Given a job whose result lives in S3 (moto over HTTP): its video_url is presigned, on another origin
    s = pg_s3_stack
    job = s.wait(s.submit(s.upload()["id"], params={"num_inference_steps": 2, "seed": 3})["id"])
    assert job["status"] == "succeeded" and job["result"]["video_url"].startswith(s.env["SVDQ_S3_ENDPOINT_URL"])
    # When its page opens
    with open_tab(browser, f"{s.serve()}/ui/jobs/{job['id']}") as tab:
        tab.sign_in()
        page = tab.page
        page.wait_for_function("() => document.getElementById('video').readyState >= 2")
        # Then the element plays the presigned URL itself (no blob copy), and the CSP let it load
        src = page.evaluate("document.getElementById('video').currentSrc")
        assert src.startswith(s.env["SVDQ_S3_ENDPOINT_URL"]) and job["id"] in src and "Signature" in src, src
        tab.check("job-s3")
