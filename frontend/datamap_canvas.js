// The data map of one run (Dataset Cartography): every sample's confidence against its
// variability, coloured by how often it was right, drawn on one <canvas> in a single
// pass, with a hit-test grid for hovering (a tooltip) and clicking (onPick(id)).
// The Dataset view (dataset.js) places it; this module only draws and hit-tests.

import { h, replaceChildren } from "./dom.js";
import { formatNumber, formatPercent, statsClassName, statsFilename } from "./format.js";

// The plot: variability on x (a standard deviation of probabilities: at most 0.5),
// confidence on y, each axis fitted to the data (rounded out to a step of 0.05 on x,
// 0.1 on y). Margins in CSS pixels.
const X_LIMIT = 0.5;
const MARGIN = { left: 46, right: 12, top: 12, bottom: 36 };
const CANVAS = { width: 520, height: 380 };
const PLOT = { width: CANVAS.width - MARGIN.left - MARGIN.right, height: CANVAS.height - MARGIN.top - MARGIN.bottom };
const POINT = 3; // side of a point, CSS pixels
const HIT_RADIUS = 7;
const CELL = 8; // hit-test grid cell
// Fraction of appearances right, in 5 bins: wrong (red) to right (green).
const CORRECT_BINS = [
  { upTo: 0.2, colour: "#d93025", text: "≤ 20% right" },
  { upTo: 0.4, colour: "#e8710a", text: "≤ 40%" },
  { upTo: 0.6, colour: "#f9ab00", text: "≤ 60%" },
  { upTo: 0.8, colour: "#7cb342", text: "≤ 80%" },
  { upTo: 1.01, colour: "#188038", text: "> 80% right" },
];

function binOf(correct) {
  for (let bin = 0; bin < CORRECT_BINS.length; bin++) if (correct <= CORRECT_BINS[bin].upTo) return bin;
  return CORRECT_BINS.length - 1;
}

/** The axes' ranges fitted to the drawable samples: {x_min, x_max, y_min, y_max}. */
function fittedRange(stats) {
  const { confidence, variability, count } = stats.columns;
  let xMax = 0;
  let yMin = 1;
  let yMax = 0;
  let any = false;
  for (let id = 0; id < stats.num_samples; id++) {
    const c = confidence?.[id];
    const v = variability?.[id];
    if (!(count?.[id] > 0) || !Number.isFinite(c) || !Number.isFinite(v)) continue;
    any = true;
    if (v > xMax) xMax = v;
    if (c < yMin) yMin = c;
    if (c > yMax) yMax = c;
  }
  if (!any) return { x_min: 0, x_max: X_LIMIT, y_min: 0, y_max: 1 };
  const up = (value, step) => Math.ceil(value / step - 1e-9) * step;
  const down = (value, step) => Math.floor(value / step + 1e-9) * step;
  const x_max = Math.min(X_LIMIT, Math.max(0.05, up(xMax, 0.05)));
  let y_min = Math.max(0, down(yMin, 0.1));
  let y_max = Math.min(1, up(yMax, 0.1));
  if (y_max - y_min < 0.1) {
    if (y_max < 1) y_max = Math.min(1, y_min + 0.1);
    else y_min = Math.max(0, y_max - 0.1);
  }
  return { x_min: 0, x_max, y_min, y_max };
}

/** The grid lines, tick labels and axis titles (in the page's colours). */
function drawAxes(context, range, { text, grid }) {
  const { width, height } = PLOT;
  context.font = "11px system-ui, sans-serif";
  context.fillStyle = text;
  context.strokeStyle = grid;
  context.lineWidth = 1;
  context.textAlign = "right";
  context.textBaseline = "middle";
  for (let tick = 0; tick <= 4; tick++) {
    const y = MARGIN.top + (1 - tick / 4) * height;
    context.beginPath();
    context.moveTo(MARGIN.left, Math.round(y) + 0.5);
    context.lineTo(MARGIN.left + width, Math.round(y) + 0.5);
    context.stroke();
    const value = range.y_min + (tick / 4) * (range.y_max - range.y_min);
    context.fillText(value.toFixed(2), MARGIN.left - 6, y);
  }
  context.textAlign = "center";
  context.textBaseline = "top";
  for (let tick = 0; tick <= 5; tick++) {
    const x = MARGIN.left + (tick / 5) * width;
    context.beginPath();
    context.moveTo(Math.round(x) + 0.5, MARGIN.top);
    context.lineTo(Math.round(x) + 0.5, MARGIN.top + height);
    context.stroke();
    const value = range.x_min + (tick / 5) * (range.x_max - range.x_min);
    context.fillText(value.toFixed(range.x_max - range.x_min < 0.5 ? 2 : 1), x, MARGIN.top + height + 5);
  }
  context.fillText("variability (std of p(label))", MARGIN.left + width / 2, MARGIN.top + height + 20);
  context.save();
  context.translate(12, MARGIN.top + height / 2);
  context.rotate(-Math.PI / 2);
  context.fillText("confidence", 0, -6);
  context.restore();
}

/** The data map of one run's statistics: a canvas, its legend and a hover tooltip. */
export class DataMap {
  constructor({ run, stats, selected, onPick }) {
    this.run = run;
    this.stats = stats;
    this.onPick = onPick;
    this.canvas = h("canvas", {
      className: "datamap-canvas",
      attrs: { role: "img", tabindex: "0", "aria-label": `Data map of ${run}: confidence against variability` },
      on: {
        mousemove: (event) => this.hover(event),
        mouseleave: () => this.hover(null),
        click: (event) => this.click(event),
      },
    });
    this.range = fittedRange(stats);
    let nonFinite = 0;
    const { count, suspect_score: score } = stats.columns;
    for (let id = 0; id < stats.num_samples; id++) if (count?.[id] > 0 && !Number.isFinite(score?.[id])) nonFinite++;
    this.tooltip = h("div", { className: "datamap-tooltip", attrs: { role: "status" } });
    this.tooltip.hidden = true;
    this.element = h(
      "figure",
      { className: "datamap" },
      h("div", { className: "datamap-box" }, this.canvas, this.tooltip),
      h(
        "figcaption",
        { className: "datamap-legend" },
        CORRECT_BINS.map((bin) => h("span", { className: "legend-item" }, h("span", { className: "legend-swatch", attrs: { style: `background:${bin.colour}` } }), bin.text)),
        nonFinite ? h("span", { className: "legend-item non-finite-note", dataset: { count: String(nonFinite) }, text: `${nonFinite} non-finite: not drawn, listed first` }) : null,
      ),
    );
    this.draw(selected);
  }

  /** Plot coordinates (CSS pixels in the canvas) of a sample, or null if not drawable. */
  place(id) {
    const confidence = this.stats.columns.confidence?.[id];
    const variability = this.stats.columns.variability?.[id];
    const count = this.stats.columns.count?.[id];
    if (!(count > 0) || !Number.isFinite(confidence) || !Number.isFinite(variability)) return null;
    const { x_min, x_max, y_min, y_max } = this.range;
    const across = (Math.min(Math.max(variability, x_min), x_max) - x_min) / (x_max - x_min);
    const up = (Math.min(Math.max(confidence, y_min), y_max) - y_min) / (y_max - y_min);
    return { x: MARGIN.left + across * PLOT.width, y: MARGIN.top + (1 - up) * PLOT.height };
  }

  /** Draws every point in one pass (grouped by colour), and builds the hit-test grid. */
  draw(selected) {
    const started = performance.now();
    const ratio = window.devicePixelRatio || 1;
    const canvas = this.canvas;
    canvas.width = Math.round(CANVAS.width * ratio);
    canvas.height = Math.round(CANVAS.height * ratio);
    canvas.style.width = `${CANVAS.width}px`;
    canvas.style.height = `${CANVAS.height}px`;
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    const styles = getComputedStyle(document.documentElement);
    context.clearRect(0, 0, CANVAS.width, CANVAS.height);
    drawAxes(context, this.range, {
      text: styles.getPropertyValue("--muted").trim() || "#5f6670",
      grid: styles.getPropertyValue("--border").trim() || "#dcdfe4",
    });

    // Bucket the points by colour and by hit-test cell in one loop.
    const total = this.stats.num_samples;
    const correct = this.stats.columns.correct;
    const byBin = CORRECT_BINS.map(() => []);
    this.cells = new Map();
    this.columnsPerRow = Math.ceil(CANVAS.width / CELL);
    let drawn = 0;
    for (let id = 0; id < total; id++) {
      const place = this.place(id);
      if (!place) continue;
      byBin[binOf(correct ? correct[id] : NaN)].push(place.x, place.y);
      const cell = Math.floor(place.y / CELL) * this.columnsPerRow + Math.floor(place.x / CELL);
      let members = this.cells.get(cell);
      if (!members) this.cells.set(cell, (members = []));
      members.push(id);
      drawn++;
    }
    context.globalAlpha = total > 5000 ? 0.55 : 0.8;
    const half = POINT / 2;
    byBin.forEach((points, bin) => {
      context.fillStyle = CORRECT_BINS[bin].colour;
      for (let i = 0; i < points.length; i += 2) context.fillRect(points[i] - half, points[i + 1] - half, POINT, POINT);
    });
    context.globalAlpha = 1;
    const chosen = selected !== null && selected !== undefined ? this.place(selected) : null;
    if (chosen) {
      context.strokeStyle = styles.getPropertyValue("--focus").trim() || "#1a73e8";
      context.lineWidth = 2;
      context.beginPath();
      context.arc(chosen.x, chosen.y, 6, 0, 2 * Math.PI);
      context.stroke();
    }
    // What the tests and the curious read: what was drawn, and where the plot is.
    canvas.dataset.points = String(drawn);
    canvas.dataset.samples = String(total);
    canvas.dataset.plot = JSON.stringify({
      left: MARGIN.left,
      top: MARGIN.top,
      width: PLOT.width,
      height: PLOT.height,
      ...this.range,
    });
    canvas.dataset.drawMs = (performance.now() - started).toFixed(1);
  }

  /** The drawn sample nearest to a mouse event (within HIT_RADIUS pixels), or null. */
  nearest(event) {
    const box = this.canvas.getBoundingClientRect();
    const x = ((event.clientX - box.left) * CANVAS.width) / box.width;
    const y = ((event.clientY - box.top) * CANVAS.height) / box.height;
    let best = null;
    let bestDistance = HIT_RADIUS * HIT_RADIUS;
    const column = Math.floor(x / CELL);
    const row = Math.floor(y / CELL);
    for (let dy = -1; dy <= 1; dy++) {
      for (let dx = -1; dx <= 1; dx++) {
        if (column + dx < 0 || column + dx >= this.columnsPerRow) continue;
        for (const id of this.cells.get((row + dy) * this.columnsPerRow + column + dx) || []) {
          const place = this.place(id);
          const distance = (place.x - x) ** 2 + (place.y - y) ** 2;
          if (distance < bestDistance || (distance === bestDistance && best !== null && id < best.id)) {
            best = { id, x: place.x, y: place.y };
            bestDistance = distance;
          }
        }
      }
    }
    return best;
  }

  hover(event) {
    const found = event ? this.nearest(event) : null;
    this.canvas.style.cursor = found ? "pointer" : "default";
    if (!found) {
      this.tooltip.hidden = true;
      delete this.canvas.dataset.hover;
      return;
    }
    const { columns } = this.stats;
    this.canvas.dataset.hover = String(found.id);
    replaceChildren(
      this.tooltip,
      h("strong", { className: "tooltip-filename", text: statsFilename(this.stats, found.id) }),
      h("span", { text: `confidence ${formatNumber(columns.confidence[found.id])} · variability ${formatNumber(columns.variability[found.id])}` }),
      h("span", { text: `right ${formatPercent(columns.correct?.[found.id])} · label ${statsClassName(this.stats, columns.label?.[found.id])}` }),
    );
    this.tooltip.hidden = false;
    this.tooltip.style.left = `${Math.min(found.x + 10, CANVAS.width - 200)}px`;
    this.tooltip.style.top = `${Math.max(found.y - 10, 0)}px`;
  }

  click(event) {
    const found = this.nearest(event);
    if (found) this.onPick(found.id);
  }
}
