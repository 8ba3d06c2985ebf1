// The sweep gallery: axis values as headers, every cell playing in step (one play/pause, one scrubber).
import {api, el, mediaSrc, showError, start} from "./common.js";

const sweepId = document.body.dataset.sweepId;
const short = {motion_bucket_id: "motion", noise_aug_strength: "noise", num_inference_steps: "steps"};

function label(cell) {
  return Object.entries(cell).map(([k, v]) => `${short[k] || k}=${v}`).join(" ");
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

const videos = [];

async function cellElement(job) {
  const td = document.createElement("td");
  if (job.status === "succeeded") {
    const v = document.createElement("video");
    v.muted = true; v.loop = true; v.playsInline = true; v.preload = "auto";
    v.src = await mediaSrc(job.result.video_url);
    v.setAttribute("aria-label", "cell " + job.id);
    videos.push(v);
    td.appendChild(v);
  } else {
    const s = document.createElement("span");
    s.className = "cell-status " + job.status;
    s.textContent = job.status + (job.error ? ": " + job.error.code : "") +
      (job.status === "running" ? ` ${Math.round(100 * job.progress.fraction)}%` : "");
    td.appendChild(s);
  }
  td.appendChild(el("a", {href: `/ui/jobs/${job.id}`, textContent: job.id}));
  return td;
}

async function render(sweep, jobs) {
  const axes = Object.entries(sweep.axes);
  const [lastName, lastValues] = axes[axes.length - 1];
  const rowAxes = axes.slice(0, -1);
  const gallery = document.getElementById("gallery");
  gallery.replaceChildren();
  videos.length = 0;
  for (const imageId of sweep.images) {
    const h = document.createElement("h2");
    h.textContent = "image " + imageId;
    gallery.appendChild(h);
    const table = document.createElement("table");
    const head = table.insertRow();
    const corner = document.createElement("th");
    // with one axis there are no row values; the headers still need text for screen readers
    corner.textContent = rowAxes.map(([n]) => short[n] || n).join(" / ") || "cells";
    head.appendChild(corner);
    for (const v of lastValues) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = `${short[lastName] || lastName}=${v}`;
      head.appendChild(th);
    }
    const cells = jobs.filter((j) => j.image_id === imageId).sort((a, b) => a.sweep_index - b.sweep_index);
    for (let r = 0; r < cells.length / lastValues.length; r++) {
      const row = table.insertRow();
      const th = document.createElement("th");
      th.scope = "row";
      const first = cells[r * lastValues.length];
      th.textContent = !rowAxes.length ? "all" : first ? label(Object.fromEntries(rowAxes.map(([n]) => [n, first.params[n]]))) : "—";
      row.appendChild(th);
      for (let c = 0; c < lastValues.length; c++) {
        const job = cells[r * lastValues.length + c];
        row.appendChild(job ? await cellElement(job) : document.createElement("td"));
      }
    }
    gallery.appendChild(table);
    const grid = sweep.grids.find((g) => g.image_id === imageId);
    if (grid && grid.status === "done") {
      const p = document.createElement("p");
      p.textContent = "Comparison grid: ";
      const v = document.createElement("video");
      v.controls = true; v.muted = true; v.loop = true; v.className = "grid";
      v.src = await mediaSrc(grid.video_url);
      v.setAttribute("aria-label", "comparison grid for " + imageId);
      p.appendChild(v);
      gallery.appendChild(p);
    }
  }
  document.getElementById("controls").hidden = videos.length === 0;
}

function wireControls() {
  const play = document.getElementById("play"), scrub = document.getElementById("scrub");
  const clock = document.getElementById("clock");
  play.onclick = () => {
    const paused = videos.length && videos[0].paused;
    videos.forEach((v) => (paused ? v.play() : v.pause()));
    play.textContent = paused ? "Pause" : "Play";
    play.setAttribute("aria-label", paused ? "Pause all" : "Play all");
  };
  scrub.oninput = () => {
    const lead = videos[0];
    if (!lead || !lead.duration) return;
    const t = (scrub.value / 1000) * lead.duration;
    videos.forEach((v) => { v.currentTime = Math.min(t, v.duration || t); });
  };
  setInterval(() => {  // keep every cell on the first one's clock
    const lead = videos[0];
    if (!lead || !lead.duration) return;
    clock.textContent = lead.currentTime.toFixed(2) + " s";
    if (document.activeElement !== scrub) scrub.value = Math.round(1000 * lead.currentTime / lead.duration);
    videos.slice(1).forEach((v) => { if (Math.abs(v.currentTime - lead.currentTime) > 0.08) v.currentTime = lead.currentTime; });
  }, 100);
}

async function load() {
  const status = document.getElementById("sweep-status");
  const sweep = await api(`/v1/sweeps/${sweepId}`);
  document.getElementById("page-title").textContent = "sweep " + sweep.name;
  status.textContent = `${sweep.status} · ` + Object.entries(sweep.counts).filter(([, n]) => n)
    .map(([s, n]) => `${n} ${s}`).join(", ") + ` of ${sweep.total}`;
  await render(sweep, await allJobs());
  if (!["succeeded", "failed", "canceled"].includes(sweep.status)) setTimeout(() => load().catch(showError), 3000);
}

wireControls();
start(() => load().catch(showError));
