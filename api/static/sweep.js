// A sweep as a study: what was varied, each image's comparison grid, every cell beside its source image, and
// charts of each measurement against each swept parameter. Every video plays in step (one play/pause, one scrubber).
import {TERMINAL, api, el, fill, mediaSrc, showError, start} from "./common.js";
import {axisWords, measurements, metricName, renderMeasurements} from "./measurements.js";
import {formatNumber} from "./charts.js";

const sweepId = document.body.dataset.sweepId;
const blobs = new Map();  // media fetched once per page, however often the page re-renders
const videos = [];  // every cell and grid on the page, in step
let shown = null, latest = null;

function media(key, url) {
  if (!blobs.has(key)) blobs.set(key, mediaSrc(url).catch((e) => { blobs.delete(key); throw e; }));
  return blobs.get(key);
}

async function allJobs() {
  let items = [], cursor = null;
  do {
    const page = await api(`/v1/sweeps/${sweepId}/jobs?limit=200` + (cursor ? `&cursor=${cursor}` : ""));
    items = items.concat(page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

function imageLabels(sweep) {
  return new Map(sweep.images.map((id, i) => [id, {id, index: i, label: `image ${i + 1}`}]));
}

function syncedVideo({src, poster, label, className, width, height}) {
  const v = el("video", {muted: true, loop: true, playsInline: true, preload: "auto", className});
  if (poster) v.poster = poster;
  if (width && height) { v.width = width; v.height = height; }
  v.setAttribute("aria-label", label);
  v.src = src;
  videos.push(v);
  return v;
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : null; }

function renderStudy(sweep) {
  const axes = Object.entries(sweep.axes);
  fill(document.getElementById("study-facts"), [
    ["model", sweep.model],
    ["varied", axes.map(([n, vs]) => `${n} = ${vs.join(", ")}`).join("; ")],
    ["held fixed", Object.entries(sweep.params).filter(([k, v]) => !(k in sweep.axes) && v !== null)
      .map(([k, v]) => `${k} = ${v}`).join(", ") || "the model's defaults"],
    ["images", sweep.images.length],
    ["cells", `${sweep.total} (${sweep.images.length} image${sweep.images.length === 1 ? "" : "s"} × ` +
              `${sweep.total / Math.max(1, sweep.images.length)} combinations)`],
    ["output", sweep.output && sweep.output.format],
    ["created", when(sweep.created_at)], ["finished", sweep.finished_at ? when(sweep.finished_at) : undefined],
  ]);
  document.getElementById("study").hidden = false;
}

async function renderGrids(sweep, images) {
  const box = document.getElementById("grids");
  box.replaceChildren();
  for (const g of sweep.grids) {
    const img = images.get(g.image_id);
    const fig = el("figure", {className: "grid-figure"});
    const caption = el("figcaption", {}, `${img.label} (${g.image_id}): every cell of this image, labelled with ` +
      "its values.");
    if (g.status === "done" && g.video_url) {
      const src = await media(`grid:${g.image_id}`, g.video_url);
      const poster = g.poster_url ? await media(`grid-poster:${g.image_id}`, g.poster_url) : null;
      const v = syncedVideo({src, poster, label: "comparison grid for " + img.label, className: "grid"});
      // its natural size, scaled down to the page (and up to twice, for small renders), keeping its aspect
      v.addEventListener("loadedmetadata", () => { fig.style.width = 2 * v.videoWidth + "px"; }, {once: true});
      caption.append(" ", el("a", {href: src, target: "_blank", textContent: "Open at full size"}));
      fig.append(v, caption);
    } else {
      const why = g.status === "failed" ? `The grid could not be composed: ${g.error || "unknown error"}`
        : g.status === "expired" ? "The grid was deleted when its retention ran out."
          : "The grid is composed once every cell of this image has ended.";
      fig.append(el("p", {className: "cell-status " + g.status, textContent: why}), caption);
    }
    box.append(fig);
  }
  document.getElementById("comparison").hidden = sweep.grids.length === 0;
}

function cellStatus(job) {
  return job.status + (job.error ? ": " + job.error.code : "") +
    (job.status === "running" ? ` ${Math.round(100 * job.progress.fraction)}%` : "");
}

async function cellElement(job, words) {
  const td = el("td", {className: "cell"});
  if (job.status === "succeeded" && job.result) {
    const r = job.result;
    const src = await media(`video:${job.id}`, r.video_url);
    const poster = r.poster_url ? await media(`poster:${job.id}`, r.poster_url) : null;
    const v = syncedVideo({src, poster, label: "cell " + words, width: r.width, height: r.height});
    const open = el("button", {type: "button", className: "cell-open"}, v);
    open.setAttribute("aria-label", `Open ${words} at full size`);
    open.addEventListener("click", () => openCell(job, words, src, poster));
    td.append(open);
  } else {
    td.append(el("span", {className: "cell-status " + job.status, textContent: cellStatus(job)}));
  }
  td.append(el("a", {href: `/ui/jobs/${job.id}`, className: "job-link", textContent: job.id}));
  return td;
}

async function renderCells(sweep, jobs, images) {
  const axes = Object.entries(sweep.axes);
  const [lastName, lastValues] = axes.length ? axes[axes.length - 1] : ["", [""]];
  const rowAxes = axes.slice(0, -1);
  const table = el("table", {className: "cells"});
  const corner = el("th", {scope: "col", textContent: ["source image", ...rowAxes.map(([n]) => n)].join(" · ")});
  table.append(el("thead", {}, el("tr", {}, corner,
    ...lastValues.map((v) => el("th", {scope: "col", textContent: lastName ? axisWords(lastName, v) : "cell"})))));
  const body = el("tbody");
  for (const [imageId, img] of images) {
    const source = await media(`image:${imageId}`, `/v1/images/${imageId}/content`).catch(() => null);
    const cells = jobs.filter((j) => j.image_id === imageId).sort((a, b) => a.sweep_index - b.sweep_index);
    for (let r = 0; r < Math.ceil(cells.length / lastValues.length); r++) {
      const first = cells[r * lastValues.length];
      const rowWords = rowAxes.map(([n]) => axisWords(n, first ? first.sweep_cell[n] : "—"));
      const th = el("th", {scope: "row", className: "source"});
      if (source) th.append(el("img", {src: source, alt: `${img.label}, the source image`, className: "thumb"}));
      th.append(el("span", {className: "source-label", textContent: img.label}),
        ...rowWords.map((w) => el("span", {className: "row-axis", textContent: w})));
      const row = el("tr", {}, th);
      for (let c = 0; c < lastValues.length; c++) {
        const job = cells[r * lastValues.length + c];
        const words = [img.label, ...rowWords, lastName ? axisWords(lastName, lastValues[c]) : ""].filter(Boolean)
          .join(", ");
        row.append(job ? await cellElement(job, words) : el("td"));
      }
      body.append(row);
    }
  }
  table.append(body);
  document.getElementById("cells").replaceChildren(table);
  document.getElementById("gallery").hidden = false;
}

function openCell(job, words, src, poster) {
  const dialog = document.getElementById("lightbox"), video = document.getElementById("lightbox-video");
  document.getElementById("lightbox-title").textContent = words;
  video.poster = poster || "";
  video.src = src;
  const r = job.result;
  fill(document.getElementById("lightbox-facts"), [
    ["size", `${r.width}×${r.height}, ${r.frames} frames at ${r.fps} fps`],
    ...measurements(r.metrics).map(([k, v, unit]) => [metricName(k), `${formatNumber(v)} ${unit}`.trim()]),
    ["seed", job.params.seed],
    ["job", el("a", {href: `/ui/jobs/${job.id}`, textContent: job.id})],
  ]);
  dialog.showModal();
  video.play().catch(() => {});
}

function chartWidth() {
  const list = document.getElementById("chart-list");
  const room = list.clientWidth || document.getElementById("content").clientWidth || 480;
  // two charts a row where there is room for two of at least 320 px (less the gap and each figure's border)
  return Math.floor(room >= 680 ? (room - 16) / 2 - 2 : room - 2);
}

function drawCharts() {
  if (!latest) return;
  const {sweep, jobs, images} = latest;
  renderMeasurements({axes: sweep.axes, width: chartWidth(),
    cells: jobs.map((job) => ({job, image: images.get(job.image_id)}))});
}

async function render(sweep, jobs) {
  const images = imageLabels(sweep);
  videos.length = 0;
  renderStudy(sweep);
  await renderGrids(sweep, images);
  await renderCells(sweep, jobs, images);
  latest = {sweep, jobs, images};
  drawCharts();
  document.getElementById("controls").hidden = videos.length === 0;
  const play = document.getElementById("play");  // the videos are new, and paused
  play.textContent = "Play";
  play.setAttribute("aria-label", "Play all");
}

function wireControls() {
  const play = document.getElementById("play"), scrub = document.getElementById("scrub");
  const clock = document.getElementById("clock");
  const lead = () => videos.find((v) => v.duration);
  const setPlaying = (playing) => {
    play.textContent = playing ? "Pause" : "Play";
    play.setAttribute("aria-label", playing ? "Pause all" : "Play all");
  };
  play.onclick = () => {
    const playing = videos.some((v) => !v.paused);
    videos.forEach((v) => (playing ? v.pause() : v.play().catch(() => {})));
    setPlaying(!playing);
  };
  scrub.oninput = () => {
    const f = scrub.value / 1000;
    videos.forEach((v) => { if (v.duration) v.currentTime = f * v.duration; });
  };
  setInterval(() => {  // every video at the lead's moment, as a fraction of its own length
    const l = lead();
    if (!l) return;
    const f = l.currentTime / l.duration;
    clock.textContent = `${l.currentTime.toFixed(2)} s of ${l.duration.toFixed(2)} s`;
    if (document.activeElement !== scrub) scrub.value = Math.round(1000 * f);
    videos.forEach((v) => {
      if (v !== l && v.duration && Math.abs(v.currentTime - f * v.duration) > 0.08) v.currentTime = f * v.duration;
    });
  }, 100);
  const dialog = document.getElementById("lightbox");
  document.getElementById("lightbox-close").onclick = () => dialog.close();
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
  dialog.addEventListener("close", () => document.getElementById("lightbox-video").pause());
  let pending = null;
  new ResizeObserver(() => { clearTimeout(pending); pending = setTimeout(drawCharts, 150); })
    .observe(document.getElementById("content"));
}

// what, when it changes, needs the page built again (a running cell's progress only needs its text)
function signature(sweep, jobs) {
  return JSON.stringify([sweep.status, sweep.grids.map((g) => g.status), jobs.map((j) => [j.id, j.status])]);
}

async function load() {
  const status = document.getElementById("sweep-status");
  const sweep = await api(`/v1/sweeps/${sweepId}`);
  document.getElementById("page-title").textContent = "sweep " + (sweep.name || sweep.id);
  status.textContent = `${sweep.status} · ` + Object.entries(sweep.counts).filter(([, n]) => n)
    .map(([s, n]) => `${n} ${s}`).join(", ") + ` of ${sweep.total}`;
  const jobs = await allJobs();
  const now = signature(sweep, jobs);
  if (now !== shown) {
    await render(sweep, jobs);
    shown = now;
  } else {
    for (const job of jobs.filter((j) => j.status === "running")) {
      const span = document.querySelector(`a[href="/ui/jobs/${job.id}"]`)?.parentElement.querySelector(".cell-status");
      if (span) span.textContent = cellStatus(job);
    }
  }
  // a grid is composed after its image's last cell ends, so keep looking until every grid is settled too
  const settled = TERMINAL.includes(sweep.status) && sweep.grids.every((g) => !["pending", "composing"].includes(g.status));
  if (!settled) setTimeout(() => load().catch(showError), 3000);
}

wireControls();
start(() => load().catch(showError));
