// What every page shares: the API key (this tab's session storage only), API calls, sign-in,
// the job event stream and small DOM helpers.
const KEY = "svdq-api-key";
export const TERMINAL = ["succeeded", "failed", "canceled"];

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `The API answered ${status}.`);
    this.status = status; this.code = err.code; this.details = err.details || [];
  }
}

export function key() { return sessionStorage.getItem(KEY); }
function auth() { return {Authorization: "Bearer " + key()}; }

function signedOut() {
  sessionStorage.removeItem(KEY);
  document.getElementById("content").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("signin").hidden = false;
}

export async function api(path, {method = "GET", body, json} = {}) {
  const headers = auth();
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  const r = await fetch(path, {method, headers, body});
  const data = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (r.status === 401) {
    signedOut();
    document.getElementById("signin-error").textContent = "The API did not accept this key; sign in again.";
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

export function showError(e) { document.getElementById("page-error").textContent = e ? "Error: " + e.message : ""; }

// Start a page: ask for the key when there is none, then run `load` once signed in.
export function start(load) {
  const form = document.getElementById("signin");
  const run = async () => {
    try {
      const me = await api("/v1/keys/self");
      document.getElementById("who").textContent = "signed in as " + me.name;
      document.getElementById("signout").hidden = false;
      document.getElementById("content").hidden = false;
      form.hidden = true;
      await load();
    } catch (e) { if (e.status !== 401) showError(e); }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById("api-key").value.trim());
    document.getElementById("api-key").value = "";
    document.getElementById("signin-error").textContent = "";
    run();
  });
  document.getElementById("signout").addEventListener("click", () => { signedOut(); location.reload(); });
  if (key()) run(); else signedOut();
}

// API-served media need the key, which <video> and <img> cannot send: fetch those as blobs.
// Presigned storage URLs (another origin) carry their own signature and are used as they are.
export async function mediaSrc(url) {
  if (new URL(url, location.href).origin !== location.origin) return url;
  const r = await fetch(url, {headers: auth()});
  if (!r.ok) throw new ApiError(r.status, null);
  return URL.createObjectURL(await r.blob());
}

// Server-sent events need the Authorization header, which EventSource cannot send: read the stream
// with fetch. Calls onJob for each job object (and, when given, onPreview for each live preview, which
// only a stream asked with ?preview=true carries); returns when the stream ends.
async function streamOnce(jobId, onJob, onPreview) {
  const r = await fetch(`/v1/jobs/${jobId}/events${onPreview ? "?preview=true" : ""}`, {headers: auth()});
  if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "", last = null;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return last;
    buf += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const lines = buf.slice(0, end).split("\n");
      const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      const name = (lines.find((l) => l.startsWith("event:")) || "event: message").slice(6).trim();
      buf = buf.slice(end + 2);
      if (!data) continue;
      if (name === "preview") { if (onPreview) onPreview(JSON.parse(data)); }
      else { last = JSON.parse(data); onJob(last); }
    }
  }
}

// Follow a job to its end, reconnecting after a dropped stream; resolves with the terminal job.
export async function watchJob(jobId, onJob, onPreview) {
  for (;;) {
    let last = null;
    try { last = await streamOnce(jobId, onJob, onPreview); } catch (e) { if (e.status) throw e; }
    if (last && TERMINAL.includes(last.status)) return last;
    await new Promise((ok) => setTimeout(ok, 2000));
  }
}

export function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) node.append(c);
  return node;
}

export function percent(job) { return Math.round(100 * ((job.progress && job.progress.fraction) || 0)); }

export function statusText(job) {
  if (job.status === "queued") {
    const pos = job.queue_position === null || job.queue_position === undefined ? "" : `, position ${job.queue_position}`;
    return `queued${pos}` + (job.error ? ` (retrying after ${job.error.code})` : "");
  }
  if (job.status === "running") {
    const stage = job.progress.stage ? ` · ${job.progress.stage}` : "";
    return `running ${percent(job)}%${stage}` + (job.cancel_requested ? " · cancel requested" : "");
  }
  return job.status + (job.error && job.error.code !== job.status ? `: ${job.error.code}` : "");
}

export function fill(dl, rows) {
  dl.replaceChildren();
  for (const [name, value] of rows) {
    if (value === undefined) continue;
    dl.append(el("dt", {textContent: name}),
      el("dd", {}, value instanceof Node ? value
        : value === null ? "—" : typeof value === "object" ? JSON.stringify(value) : String(value)));
  }
}
