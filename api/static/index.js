// The start page: a submit form built from GET /v1/models, and recent jobs with live progress bars.
import {TERMINAL, api, el, percent, showError, start, statusText, watchJob} from "./common.js";

// Every range comes from the model's `ranges` in GET /v1/models (the server's own validation bounds).
const FIELDS = [
  {name: "width", label: "Width (px)", step: 64,
    note: (l) => `multiple of 64, width × height ≤ ${l.max_pixels} pixels`},
  {name: "height", label: "Height (px)", step: 64, note: () => "multiple of 64"},
  {name: "resize", label: "Fit the image by", options: ["crop", "pad", "stretch"]},
  {name: "num_frames", label: "Frames", step: 1},
  {name: "num_inference_steps", label: "Denoising steps", step: 1},
  {name: "fps", label: "Frames per second", step: 1},
  {name: "motion_bucket_id", label: "Motion bucket", step: 1},
  {name: "noise_aug_strength", label: "Noise augmentation", step: 0.01, float: true},
  {name: "min_guidance_scale", label: "Min guidance scale", step: 0.1, float: true},
  {name: "max_guidance_scale", label: "Max guidance scale", step: 0.1, float: true},
  {name: "decode_chunk_size", label: "Decode chunk size", step: 1, note: () => "at most the frames",
    blank: "empty: the worker picks what fits its memory"},
  // 2**63 - 1 is past a JavaScript number's exact range, so it is written out rather than read from JSON
  {name: "seed", label: "Seed", step: 1, max: "9223372036854775807",
    blank: "empty: the server picks one and records it"},
];
const LIVE_STREAMS = 3;  // a browser allows ~6 connections per host; leave room for the page's own calls
let models = [];
const rows = new Map(), streaming = new Set();

function model() { return models.find((m) => m.name === document.getElementById("model").value); }
function bounds(f, m) {
  const r = m.ranges[f.name];
  return {min: r.min, max: f.max !== undefined ? f.max : r.max};
}

function buildFields() {
  buildPostprocess();
  const m = model(), box = document.getElementById("params");
  box.replaceChildren();
  document.getElementById("model-hint").textContent =
    `${m.description} · ${m.workers_ready} worker${m.workers_ready === 1 ? "" : "s"} ready`;
  for (const f of FIELDS) {
    const id = "p-" + f.name, def = m.defaults[f.name];
    let input;
    if (f.options) {
      input = el("select", {id, name: f.name}, ...f.options.map((o) => el("option", {value: o, textContent: o})));
      input.value = def;
    } else {
      const {min, max} = bounds(f, m);
      input = el("input", {id, name: f.name, type: "number", min, max, step: f.step,
        value: def === null ? "" : def, placeholder: def === null ? "auto" : ""});
    }
    const range = f.options ? f.options.join(" | ") : `${bounds(f, m).min}–${bounds(f, m).max}`;
    const note = [f.note && f.note(m.limits), f.blank].filter(Boolean).join("; ");
    const hint = el("span", {id: id + "-hint", className: "hint",
      textContent: `default ${def === null ? "auto" : def} · ${range}` + (note ? ` · ${note}` : "")});
    input.setAttribute("aria-describedby", hint.id);
    box.append(el("div", {className: "field"}, el("label", {htmlFor: id, textContent: f.label}), input, hint));
  }
}

function buildPostprocess() {
  const methods = model().postprocess || {interpolate: ["blend", "motion"], upscale: ["lanczos"]};
  for (const stage of ["interpolate", "upscale"]) {
    document.getElementById(`pp-${stage}-method`).replaceChildren(
      ...methods[stage].map((m) => el("option", {value: m, textContent: m})));
  }
  document.getElementById("pp-interpolate-fps").value = "";
  document.getElementById("pp-upscale-factor").value = "";
}

function postprocess() {
  const out = {}, fps = document.getElementById("pp-interpolate-fps").value.trim();
  const factor = document.getElementById("pp-upscale-factor").value;
  if (fps) out.interpolate = {fps: /^\d+$/.test(fps) ? Number(fps) : fps,
    method: document.getElementById("pp-interpolate-method").value};
  if (factor) out.upscale = {factor: Number(factor), method: document.getElementById("pp-upscale-method").value};
  return Object.keys(out).length ? out : undefined;
}

function specJson() {
  const params = {};
  let bigSeed = null;
  for (const f of FIELDS) {
    const raw = document.getElementById("p-" + f.name).value.trim();
    if (raw === "") continue;
    if (f.options) params[f.name] = raw;
    else if (f.name === "seed" && /^\d+$/.test(raw) && !Number.isSafeInteger(Number(raw))) bigSeed = raw;
    else params[f.name] = f.float ? Number(raw) : (/^-?\d+$/.test(raw) ? Number(raw) : raw);
  }
  const priority = document.getElementById("priority").value.trim();
  const spec = {model: model().name, params, output: {format: document.getElementById("format").value},
    priority: /^\d+$/.test(priority) ? Number(priority) : priority, postprocess: postprocess()};
  if (bigSeed === null) return JSON.stringify(spec);
  // seeds reach 2^63-1, past what a JavaScript number holds exactly: splice the digits in as they are
  params.seed = "__SEED__";
  return JSON.stringify(spec).replace('"__SEED__"', bigSeed);
}

function preview(file) {
  const img = document.getElementById("preview");
  if (img.src) URL.revokeObjectURL(img.src);
  img.hidden = !file;
  if (file) img.src = URL.createObjectURL(file);
}

function wireDrop() {
  const drop = document.getElementById("drop"), input = document.getElementById("image");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; preview(input.files[0]); }
  });
  input.addEventListener("change", () => preview(input.files[0]));
}

function showResult(...nodes) { document.getElementById("submit-result").replaceChildren(...nodes); }

async function submit(e) {
  e.preventDefault();
  document.querySelectorAll("#submit [aria-invalid]").forEach((n) => n.removeAttribute("aria-invalid"));
  const file = document.getElementById("image").files[0];
  if (!file) { showResult(el("p", {className: "error", textContent: "Choose or drop an image first."})); return; }
  const body = new FormData();
  body.append("image", file);
  body.append("spec", specJson());
  try {
    const job = await api("/v1/jobs", {method: "POST", body});
    showResult(el("p", {}, "Submitted ", el("a", {href: `/ui/jobs/${job.id}`, textContent: job.id}), "."));
    upsert(job, true);
  } catch (err) {
    if (err.status === 401) return;
    const list = el("ul", {}, ...err.details.map((d) => el("li", {textContent: `${d.field}: ${d.message}`})));
    for (const d of err.details) {
      const field = String(d.field);
      const input = document.getElementById(field.startsWith("params.") ? "p-" + field.slice(7)
        : field.startsWith("postprocess.") ? "pp-" + field.slice(12).replace(".", "-") : field);
      if (input) input.setAttribute("aria-invalid", "true");
    }
    showResult(el("p", {className: "error", textContent: err.message}), list);
  }
}

function upsert(job, first = false) {
  let row = rows.get(job.id);
  if (!row) {
    row = el("tr");
    row.append(el("td", {}, el("a", {href: `/ui/jobs/${job.id}`, textContent: job.id})), el("td"), el("td"),
      el("td", {}, el("progress", {max: 100, value: 0}), el("span")), el("td"));
    row.querySelector("progress").setAttribute("aria-label", `progress of ${job.id}`);
    rows.set(job.id, row);
    const body = document.querySelector("#jobs tbody");
    if (first) body.prepend(row); else body.append(row);
    document.getElementById("jobs-empty").hidden = true;
  }
  const [, modelCell, statusCell, progressCell, createdCell] = row.children;
  modelCell.textContent = job.model;
  statusCell.textContent = statusText(job);
  statusCell.className = "status " + job.status;
  const pct = job.status === "succeeded" ? 100 : percent(job);
  progressCell.querySelector("progress").value = pct;
  progressCell.querySelector("span").textContent = ` ${pct}%`;
  createdCell.textContent = new Date(job.created_at).toLocaleString();
  follow(job);
}

function follow(job) {
  if (TERMINAL.includes(job.status) || streaming.has(job.id) || streaming.size >= LIVE_STREAMS) return;
  streaming.add(job.id);
  watchJob(job.id, (j) => upsert(j)).then(upsert).catch(showError).finally(() => {
    streaming.delete(job.id);
    // a slot is free: pick up a job that had to wait for one
    for (const [id, row] of rows) if (!streaming.has(id) && row.children[2].className.match(/queued|running/)) {
      api(`/v1/jobs/${id}`).then((j) => upsert(j)).catch(showError);
      break;
    }
  });
}

async function load() {
  models = await api("/v1/models");
  const select = document.getElementById("model");
  select.replaceChildren(...models.map((m) => el("option", {value: m.name, textContent: m.name})));
  const ready = models.filter((m) => m.workers_ready), tiny = (m) => m.name === "tiny";
  select.value = (ready.find(tiny) || ready[0] || models.find(tiny) || models[0]).name;
  buildFields();
  select.addEventListener("change", buildFields);
  document.getElementById("defaults").addEventListener("click", buildFields);
  const page = await api("/v1/jobs?limit=20");
  page.items.forEach((j) => upsert(j));
  document.getElementById("jobs-empty").hidden = page.items.length > 0;
}

wireDrop();
document.getElementById("submit").addEventListener("submit", submit);
start(() => load().catch(showError));
