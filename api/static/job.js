// One job: live status and progress, the video, its parameters, timings and reproducibility record.
import {TERMINAL, api, el, fill, mediaSrc, percent, showError, start, statusText, watchJob} from "./common.js";
import {memoryPlanTable} from "./memory.js";
import {endPreview, showPreview} from "./preview.js";

const jobId = document.body.dataset.jobId;
let shownVideo = null;

function seconds(from, to) {
  if (!from || !to) return null;
  return ((new Date(to) - new Date(from)) / 1000).toFixed(2) + " s";
}

function link(href, text) { return el("a", {href, textContent: text}); }

function renderStatus(job) {
  document.getElementById("job-status").textContent = statusText(job);
  const bar = document.getElementById("job-progress");
  bar.value = job.status === "succeeded" ? 100 : percent(job);
  bar.hidden = job.status === "failed" || job.status === "canceled";
  const error = document.getElementById("job-error");
  error.hidden = !job.error && !job.result_expired_at;
  error.textContent = job.error ? `${job.error.code}: ${job.error.message}`
    : job.result_expired_at ? `result_expired: the video was deleted on ${job.result_expired_at}, when its ` +
      "retention ran out; rerun the job to render it again." : "";
  const done = TERMINAL.includes(job.status);
  const cancel = document.getElementById("cancel");
  cancel.disabled = done || job.cancel_requested;
  cancel.textContent = job.cancel_requested && !done ? "Cancel requested" : "Cancel job";
  document.getElementById("rerun").disabled = false;
}

function renderDetails(job) {
  fill(document.getElementById("params"), [
    ["model", job.model], ...Object.entries(job.params),
    ["output", job.output.format], ["priority", job.priority],
    ["postprocess", job.postprocess ? JSON.stringify(job.postprocess) : null],
  ]);
  const rt = job.runtime || {}, t = rt.timings || {};
  fill(document.getElementById("timings"), [
    ["created", job.created_at], ["started", job.started_at], ["finished", job.finished_at],
    ["waited in queue", seconds(job.created_at, job.started_at)],
    ["ran for", seconds(job.started_at, job.finished_at)],
    ["denoising", t.render_s === undefined ? undefined : t.render_s + " s"],
    ["encoding", t.encode_s === undefined ? undefined : t.encode_s + " s"],
    ["upload", t.upload_s === undefined ? undefined : t.upload_s + " s"],
    ["measuring", t.measure_s === undefined ? undefined : t.measure_s + " s" +
      (t.measure_wait_s === undefined ? "" : ` (beside the encoding; ${t.measure_wait_s} s waited)`)],
    ["attempts", job.attempts],
  ]);
  fill(document.getElementById("record"), [
    ["seed", job.params.seed], ["image", job.image_id],
    ["model source", rt.source], ["model revision", rt.revision], ["dtype", rt.dtype], ["device", rt.device],
    ["torch", rt.torch], ["diffusers", rt.diffusers], ["worker", job.worker], ["memory plan", memoryPlanTable(rt)],
    ["video sha256", job.result ? job.result.sha256 : undefined],
    ["rerun of", job.rerun_of ? link(`/ui/jobs/${job.rerun_of}`, job.rerun_of) : undefined],
    ["reused from", job.reused_from ? link(`/ui/jobs/${job.reused_from}`, job.reused_from) : undefined],
    ["sweep", job.sweep_id ? link(`/ui/sweeps/${job.sweep_id}`, job.sweep_id) : undefined],
  ]);
  document.getElementById("raw").textContent = JSON.stringify(job, null, 2);
}

async function renderVideo(job) {
  if (job.status !== "succeeded" || !job.result || shownVideo === job.id) return;
  shownVideo = job.id;
  const r = job.result;
  const src = await mediaSrc(r.video_url);
  const video = document.getElementById("video"), animation = document.getElementById("animation");
  video.hidden = !r.content_type.startsWith("video/");
  animation.hidden = r.content_type !== "image/gif";
  if (!video.hidden) { video.poster = await mediaSrc(r.poster_url); video.src = src; }
  if (!animation.hidden) animation.src = src;
  const ext = {"video/mp4": "mp4", "video/webm": "webm", "image/gif": "gif"}[r.content_type] || "zip";
  document.getElementById("video-meta").replaceChildren(
    `${r.width}×${r.height}, ${r.frames} frames at ${r.fps} fps, ${r.content_type}, ` +
    `${(r.bytes / 1024).toFixed(1)} KiB · `, el("a", {href: src, download: `${job.id}.${ext}`, textContent: "download"}));
  document.getElementById("player").hidden = false;
}

// the job result's metrics (models/schemas.py VideoMetrics), in the order a reader asks about them
const MEASUREMENTS = [
  ["motion", "motion", "mean optical flow between consecutive frames"],
  ["frame_difference", "frame difference", "mean absolute change from one frame to the next (0-255)"],
  ["flicker", "flicker", "frame-to-frame brightness jitter; 0 = steady (0-255)"],
  ["first_frame_similarity", "first frame vs image", "SSIM of the source image and frame 1; 1 = identical"],
];

function renderMetrics(job) {
  const m = job.status === "succeeded" && job.result ? job.result.metrics : null;
  document.getElementById("measurements").hidden = !m;
  if (!m) return;
  document.querySelector("#metrics tbody").replaceChildren(...MEASUREMENTS.filter(([key]) => m[key]).map(
    ([key, name, what]) => el("tr", {},
      el("th", {scope: "row"}, el("span", {className: "name", textContent: name}),
        el("span", {className: "hint", textContent: what})),
      el("td", {textContent: `${Number(m[key].value).toFixed(key === "first_frame_similarity" ? 3 : 2)} ` +
                             m[key].unit}))));
  const on = m.measured_on;
  document.getElementById("metrics-basis").textContent = on
    ? `Measured on the ${on.frames} decoded ${on.width}×${on.height} frames, before any post-processing.` : "";
}

async function show(job) {
  renderStatus(job);
  renderDetails(job);
  renderMetrics(job);
  await renderVideo(job);
}

async function load() {
  const job = await api(`/v1/jobs/${jobId}`);
  await show(job);
  if (!TERMINAL.includes(job.status)) {
    // progress events carry the live fraction; the terminal one carries the result and runtime record
    const last = await watchJob(jobId, renderStatus, job.preview === false ? undefined : showPreview);
    endPreview();
    await show(last);
  }
}

document.getElementById("cancel").addEventListener("click", async () => {
  try { renderStatus(await api(`/v1/jobs/${jobId}/cancel`, {method: "POST"})); } catch (e) { showError(e); }
});
document.getElementById("rerun").addEventListener("click", async () => {
  try { location.assign(`/ui/jobs/${(await api(`/v1/jobs/${jobId}/rerun`, {method: "POST"})).id}`); }
  catch (e) { showError(e); }
});
start(() => load().catch(showError));
