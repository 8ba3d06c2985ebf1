// Line charts as inline SVG, with no library: one chart is a measurement against one swept parameter, a line
// per series and a marker per point. Drawn at the width it is given, so its text stays its size on any screen.
const SVG = "http://www.w3.org/2000/svg";
// Okabe & Ito's colour-blind-safe palette (without its yellow, too faint on white)
export const COLOURS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000"];
const MARKERS = ["circle", "square", "diamond", "triangle"];  // a second cue besides colour

function node(tag, attrs = {}, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  if (text !== undefined) n.textContent = text;
  return n;
}

// about `count` round tick values (steps of 1, 2 or 5 times a power of ten) spanning lo..hi
export function niceTicks(lo, hi, count = 5) {
  if (lo === hi) { const pad = Math.abs(lo) * 0.1 || 1; lo -= pad; hi += pad; }
  const raw = (hi - lo) / count, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.floor(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  if (ticks[ticks.length - 1] < hi) ticks.push(+(ticks[ticks.length - 1] + step).toPrecision(12));
  return ticks;
}

// tick labels with as many decimals as their step needs, so neighbours never read the same
export function tickFormat(ticks) {
  const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
  const top = Math.max(...ticks.map(Math.abs));
  if (top >= 1e6 || step < 1e-4) return (t) => (t === 0 ? "0" : t.toExponential(Math.max(1, Math.ceil(Math.log10(top / step)))));
  const decimals = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9));
  return (t) => t.toFixed(decimals);
}

export function formatNumber(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
  return String(+v.toPrecision(4));
}

function marker(kind, x, y, attrs) {
  const r = 4.5;
  if (kind === "square") return node("rect", {x: x - r, y: y - r, width: 2 * r, height: 2 * r, ...attrs});
  if (kind === "diamond") return node("polygon", {points: `${x},${y - r * 1.3} ${x + r * 1.3},${y} ${x},${y + r * 1.3} ${x - r * 1.3},${y}`, ...attrs});
  if (kind === "triangle") return node("polygon", {points: `${x},${y - r * 1.3} ${x + r * 1.2},${y + r} ${x - r * 1.2},${y + r}`, ...attrs});
  return node("circle", {cx: x, cy: y, r, ...attrs});
}

export function markerKind(i) { return MARKERS[i % MARKERS.length]; }

// A small legend swatch (line and marker) for series i, as an inline SVG
export function swatch(i) {
  const s = node("svg", {width: 28, height: 12, viewBox: "0 0 28 12", "aria-hidden": "true"});
  s.append(node("line", {x1: 0, y1: 6, x2: 28, y2: 6, stroke: COLOURS[i % COLOURS.length], "stroke-width": 2}),
    marker(markerKind(i), 14, 6, {fill: COLOURS[i % COLOURS.length]}));
  return s;
}

/* chart({title, xTitle, yTitle, xValues, series: [{name, points: [{x, y, text}]}]}, width) -> <svg>
   xValues: the swept values in order; numbers are placed to scale, anything else evenly. */
export function lineChart({title, xTitle, yTitle, xValues, series}, width = 480) {
  const height = Math.round(Math.min(300, Math.max(200, width * 0.62)));
  const ys = series.flatMap((s) => s.points.map((p) => p.y));
  const yTicks = niceTicks(Math.min(...ys), Math.max(...ys));
  const [ylo, yhi] = [yTicks[0], yTicks[yTicks.length - 1]];
  // room on the left for the longest tick label (about 7 px a character at 12 px) and the rotated title
  const yLabel = tickFormat(yTicks);
  const m = {left: 30 + 7 * Math.max(...yTicks.map((t) => yLabel(t).length)), right: 16, top: 12, bottom: 46};
  const w = width - m.left - m.right, h = height - m.top - m.bottom;
  const numeric = xValues.every((v) => typeof v === "number");
  const xs = numeric ? xValues : xValues.map((_, i) => i);
  const [xlo, xhi] = [Math.min(...xs), Math.max(...xs)];
  const xAt = (v) => {
    const x = numeric ? v : xValues.findIndex((u) => String(u) === String(v));
    return m.left + (xhi === xlo ? w / 2 : ((x - xlo) / (xhi - xlo)) * w);
  };
  const yAt = (v) => m.top + h - ((v - ylo) / (yhi - ylo)) * h;

  const svg = node("svg", {viewBox: `0 0 ${width} ${height}`, width, height, role: "img", class: "chart",
    "aria-label": `${title}: ${series.reduce((n, s) => n + s.points.length, 0)} points`});
  svg.append(node("title", {}, title));
  const grid = node("g", {class: "grid-lines"}), axes = node("g", {class: "axes"});
  for (const t of yTicks) {
    const y = yAt(t);
    grid.append(node("line", {x1: m.left, x2: m.left + w, y1: y, y2: y}));
    axes.append(node("text", {x: m.left - 6, y: y + 4, "text-anchor": "end"}, yLabel(t)));
  }
  // every swept value is a tick; on a narrow chart only as many as fit
  const room = Math.max(1, Math.floor(w / 44)), every = Math.ceil(xValues.length / room);
  xValues.forEach((v, i) => {
    const x = xAt(v);
    axes.append(node("line", {x1: x, x2: x, y1: m.top + h, y2: m.top + h + 4}));
    if (i % every === 0 || i === xValues.length - 1) {
      axes.append(node("text", {x, y: m.top + h + 17, "text-anchor": "middle"}, numeric ? formatNumber(v) : String(v)));
    }
  });
  axes.append(node("line", {x1: m.left, x2: m.left + w, y1: m.top + h, y2: m.top + h}),
    node("line", {x1: m.left, x2: m.left, y1: m.top, y2: m.top + h}));
  axes.append(node("text", {x: m.left + w / 2, y: height - 6, "text-anchor": "middle", class: "axis-title"}, xTitle));
  axes.append(node("text", {x: 0, y: 0, "text-anchor": "middle", class: "axis-title",
    transform: `translate(14 ${m.top + h / 2}) rotate(-90)`}, yTitle));
  svg.append(grid, axes);

  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const pts = [...s.points].sort((a, b) => xAt(a.x) - xAt(b.x));
    const g = node("g", {class: "series", "data-series": s.name});
    if (pts.length > 1) {
      g.append(node("polyline", {points: pts.map((p) => `${xAt(p.x)},${yAt(p.y)}`).join(" "), fill: "none",
        stroke: colour, "stroke-width": 2, "stroke-linejoin": "round"}));
    }
    for (const p of pts) {
      const mk = marker(markerKind(i), xAt(p.x), yAt(p.y), {fill: colour, stroke: "#fff", "stroke-width": 1,
        class: "point", "data-cell": p.cell || ""});
      mk.append(node("title", {}, p.text));
      g.append(mk);
    }
    svg.append(g);
  });
  return svg;
}
