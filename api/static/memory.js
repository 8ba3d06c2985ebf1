// A job's memory plan (worker/memory.py MemoryPlan, in runtime.pipeline.memory_plan) and what the render used
// (runtime.memory), as a small table a person reads instead of the JSON.
import {el} from "./common.js";

function gb(bytes) { return bytes === null || bytes === undefined ? undefined : (bytes / 1e9).toFixed(2) + " GB"; }
function yesNo(v) { return v === undefined || v === null ? undefined : v ? "yes" : "no"; }

// a <table> of the plan, or undefined when the job has neither a plan nor a memory record (not rendered yet)
export function memoryPlanTable(runtime) {
  const rt = runtime || {}, used = rt.memory || {}, pipeline = rt.pipeline || {}, plan = pipeline.memory_plan || {};
  if (!rt.memory && !pipeline.memory_plan) return undefined;
  const retried = used.mode && plan.mode && used.mode !== plan.mode;
  const rows = [
    ["mode", retried ? `${used.mode} (planned ${plan.mode})` : used.mode || plan.mode],
    ["decode chunk", (used.decode_chunk_size ?? plan.decode_chunk_size) === undefined ? undefined
      : `${used.decode_chunk_size ?? plan.decode_chunk_size} frames`],
    ["forward chunking", yesNo(used.forward_chunking ?? plan.forward_chunking)],
    ["model offload", plan.offload === undefined ? undefined : plan.offload === "none" ? "none" : plan.offload.replace(/_/g, " ")],
    ["fits (estimate)", yesNo(plan.fits)],
    ["estimated peak", plan.mode === "cpu" ? "not planned on the CPU" : gb(plan.estimated_peak_bytes)],
    ["usable memory", gb(plan.usable_bytes)],
    ["measured peak", gb(pipeline.peak_gpu_memory_bytes)],
  ].filter(([, v]) => v !== undefined);
  const table = el("table", {className: "memory-plan"},
    el("tbody", {}, ...rows.map(([name, value]) => el("tr", {}, el("th", {scope: "row", textContent: name}),
      el("td", {textContent: String(value)})))));
  const reasons = plan.reasons || [];
  if (!reasons.length) return table;
  return el("div", {}, table, el("ul", {className: "memory-reasons"}, ...reasons.map((r) => el("li", {textContent: r}))));
}
