// A sweep's measurements: each cell job's result.metrics (name -> {value, unit}, or name -> number) drawn against
// each swept parameter, a line per image (and per value of the other axes), and every value in one table.
import {el} from "./common.js";
import {formatNumber, lineChart, swatch} from "./charts.js";

// names as a reader says them (models/schemas.py VideoMetrics describes each); others are shown by their key
const NAMES = {motion: "motion", frame_difference: "frame difference", flicker: "flicker",
  first_frame_similarity: "first frame vs image"};
// the units of the parameters that have one
const PARAM_UNITS = {fps: "frames/s", num_frames: "frames", width: "px", height: "px", num_inference_steps: "steps"};

export function metricName(key) { return NAMES[key] || key.replace(/_/g, " "); }

export function paramTitle(name) { return PARAM_UNITS[name] ? `${name} (${PARAM_UNITS[name]})` : name; }

export function axisWords(name, value) { return `${name} = ${value}`; }

// [[key, value, unit]] of the numbers a result's metrics hold; anything else there (measured_on) is skipped
export function measurements(metrics) {
  if (!metrics || typeof metrics !== "object") return [];
  return Object.entries(metrics).flatMap(([key, v]) => {
    if (typeof v === "number" && Number.isFinite(v)) return [[key, v, ""]];
    if (v && typeof v === "object" && typeof v.value === "number" && Number.isFinite(v.value)) {
      return [[key, v.value, v.unit || ""]];
    }
    return [];
  });
}

function cellValue(job, axis) { return (job.sweep_cell || {})[axis] ?? job.params[axis]; }

/* Fill the charts section: `cells` are [{job, image: {index, label}}]; `width` is the room a chart has. */
export function renderMeasurements({axes, cells, width}) {
  const section = document.getElementById("charts"), list = document.getElementById("chart-list");
  const note = document.getElementById("charts-note");
  const measured = cells.map((c) => ({...c, values: measurements(c.job.result && c.job.result.metrics)}))
    .filter((c) => c.values.length)
    .sort((a, b) => a.image.index - b.image.index || a.job.sweep_index - b.job.sweep_index);
  section.hidden = cells.length === 0;
  list.replaceChildren();
  document.getElementById("values").hidden = measured.length === 0;
  if (!measured.length) {
    note.textContent = "No metrics yet: each cell's measurements (motion, frame difference, flicker, first " +
      "frame vs image) appear here once it has succeeded and been measured.";
    return;
  }
  const keys = [...new Set(measured.flatMap((c) => c.values.map(([k]) => k)))];
  const units = Object.fromEntries(measured.flatMap((c) => c.values.map(([k, , u]) => [k, u])));
  note.textContent = `${measured.length} of ${cells.length} cells measured. One point per cell; hover over a point for its ` +
    "value (every value is in the table below). Lines join the cells of one image (and one value of any other axis).";
  const names = Object.keys(axes);
  for (const axis of names) {
    const others = names.filter((n) => n !== axis);
    const seriesOf = (c) => [c.image.label, ...others.map((o) => axisWords(o, cellValue(c.job, o)))].join(" · ");
    const order = [...new Set(measured.map(seriesOf))];
    const group = el("section", {className: "chart-group"});
    group.setAttribute("aria-label", "measurements against " + axis);
    group.append(el("h3", {textContent: "Against " + axis}));
    group.append(el("ul", {className: "legend"}, ...order.map((name, i) => el("li", {}, swatch(i), name))));
    const figures = el("div", {className: "charts"});
    for (const key of keys) {
      const yTitle = metricName(key) + (units[key] ? ` (${units[key]})` : "");
      const series = order.map((name) => ({name, points: measured.filter((c) => seriesOf(c) === name)
        .flatMap((c) => c.values.filter(([k]) => k === key).map(([, y]) => ({x: cellValue(c.job, axis), y,
          cell: c.job.id, text: `${name}, ${axisWords(axis, cellValue(c.job, axis))}: ${formatNumber(y)} ${units[key]}`})))}));
      const title = `${metricName(key)} against ${axis}`;
      const fig = el("figure", {className: "chart-figure"});
      fig.dataset.metric = key;
      fig.dataset.axis = axis;
      fig.append(lineChart({title, xTitle: paramTitle(axis), yTitle, xValues: axes[axis], series}, width),
        el("figcaption", {textContent: title}));
      figures.append(fig);
    }
    group.append(figures);
    list.append(group);
  }
  renderValues(names, keys, units, measured);
}

function renderValues(names, keys, units, measured) {
  const table = document.getElementById("values-table");
  const head = el("tr", {}, ...["image", ...names, ...keys.map((k) => metricName(k) + (units[k] ? ` (${units[k]})` : "")),
    "job"].map((t) => el("th", {scope: "col", textContent: t})));
  const rows = measured.map((c) => {
    const v = Object.fromEntries(c.values.map(([k, y]) => [k, y]));
    return el("tr", {}, el("th", {scope: "row", textContent: c.image.label}),
      ...names.map((n) => el("td", {textContent: String(cellValue(c.job, n))})),
      ...keys.map((k) => el("td", {textContent: v[k] === undefined ? "—" : formatNumber(v[k])})),
      el("td", {}, el("a", {href: `/ui/jobs/${c.job.id}`, textContent: c.job.id})));
  });
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}
