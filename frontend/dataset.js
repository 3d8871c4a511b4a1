// The Dataset view: every sample of a run at once, from its per-sample statistics
// (docs/format.md, batch_images_sample_stats). Per run: the data map (Dataset
// Cartography's confidence against variability, coloured by how often the sample was
// right) drawn on one <canvas>, and the ranked suspects with their pictures (watchlist
// captures, or any logged batch holding the sample). An epoch scrubber; two runs side
// by side; the opened sample's picture, statistics per epoch and appearances.
// The state lives in the URL with the rest of the gallery (state.js: view, ds_*).

import * as api from "./api.js";
import { h, replaceChildren } from "./dom.js";
import { DASH, formatClass, formatNumber, formatPercent, plural } from "./format.js";
import { captionText, closeButton, sampleImage, scrubber, toolbarGroup, verdictClass } from "./widgets.js";

const SUSPECTS_SHOWN = 40;
const MAX_RUNS = 2;
// The plot: variability on x (a standard deviation of probabilities: at most 0.5),
// confidence on y. Margins in CSS pixels.
const X_MAX = 0.5;
const MARGIN = { left: 46, right: 12, top: 12, bottom: 36 };
const CANVAS = { width: 520, height: 380 };
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

function className(stats, value) {
  if (!Number.isFinite(value) || value < 0) return DASH;
  const names = stats.class_names;
  return formatClass(value, names && names[value] !== undefined ? names[value] : null);
}

function filenameOf(stats, id) {
  return (stats.filenames && stats.filenames[id]) || `sample ${id}`;
}

/** The data map of one run's statistics: a canvas, its legend and a hover tooltip. */
class DataMap {
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
    const width = CANVAS.width - MARGIN.left - MARGIN.right;
    const height = CANVAS.height - MARGIN.top - MARGIN.bottom;
    const x = MARGIN.left + (Math.min(Math.max(variability, 0), X_MAX) / X_MAX) * width;
    const y = MARGIN.top + (1 - Math.min(Math.max(confidence, 0), 1)) * height;
    return { x, y };
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
    const text = styles.getPropertyValue("--muted").trim() || "#5f6670";
    const grid = styles.getPropertyValue("--border").trim() || "#dcdfe4";
    context.clearRect(0, 0, CANVAS.width, CANVAS.height);
    const width = CANVAS.width - MARGIN.left - MARGIN.right;
    const height = CANVAS.height - MARGIN.top - MARGIN.bottom;

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
      context.fillText((tick / 4).toFixed(2), MARGIN.left - 6, y);
    }
    context.textAlign = "center";
    context.textBaseline = "top";
    for (let tick = 0; tick <= 5; tick++) {
      const x = MARGIN.left + (tick / 5) * width;
      context.beginPath();
      context.moveTo(Math.round(x) + 0.5, MARGIN.top);
      context.lineTo(Math.round(x) + 0.5, MARGIN.top + height);
      context.stroke();
      context.fillText(((tick / 5) * X_MAX).toFixed(1), x, MARGIN.top + height + 5);
    }
    context.fillText("variability (std of p(label))", MARGIN.left + width / 2, MARGIN.top + height + 20);
    context.save();
    context.translate(12, MARGIN.top + height / 2);
    context.rotate(-Math.PI / 2);
    context.fillText("confidence", 0, -6);
    context.restore();

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
      width,
      height,
      x_max: X_MAX,
      y_max: 1,
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
      h("strong", { className: "tooltip-filename", text: filenameOf(this.stats, found.id) }),
      h("span", { text: `confidence ${formatNumber(columns.confidence[found.id])} · variability ${formatNumber(columns.variability[found.id])}` }),
      h("span", { text: `right ${formatPercent(columns.correct?.[found.id])} · label ${className(this.stats, columns.label?.[found.id])}` }),
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

function short(value) {
  return Number.isFinite(value) ? value.toFixed(3) : DASH;
}

/** One ranked suspect: its picture, filename, labels and scores. */
function suspectTile(stats, id, rank, picture, onPick) {
  const { columns } = stats;
  const filename = filenameOf(stats, id);
  return h(
    "li",
    {},
    h(
      "button",
      {
        type: "button",
        className: "suspect-tile" + (picture ? "" : " no-picture"),
        dataset: { sampleId: String(id), rank: String(rank), source: picture ? picture.source : "none" },
        title: filename,
        on: { click: () => onPick(id) },
      },
      h(
        "span",
        { className: "suspect-thumb" },
        picture ? sampleImage(picture, { alt: filename }) : h("span", { className: "no-picture-text", text: "no picture yet" }),
        h("span", { className: "suspect-rank", text: `#${rank + 1}` }),
      ),
      h("span", { className: "filename", text: filename }),
      captionText("label", className(stats, columns.label?.[id])),
      captionText("predicted", className(stats, columns.predicted_instead?.[id])),
      captionText("suspect", short(columns.suspect_score?.[id])),
      captionText("conf · var", `${short(columns.confidence?.[id])} · ${short(columns.variability?.[id])}`),
      captionText("right · AUM", `${formatPercent(columns.correct?.[id])} · ${short(columns.margin?.[id])}`),
    ),
  );
}

/** The opened sample: its picture, statistics per epoch and every appearance. */
function samplePanel({ run, id, stats, detail, error, onClose, onOpenBatch }) {
  const filename = (detail && detail.filename) || (stats ? filenameOf(stats, id) : `sample ${id}`);
  let body;
  if (error) body = h("p", { className: "error-message", text: error });
  else if (!detail) body = h("p", { className: "loading-text", text: "Loading the sample…" });
  else {
    const latest = detail.appearances[detail.appearances.length - 1] || null;
    const columns = ["epoch", "count", "confidence", "variability", "correct", "margin", "forgetting", "last_loss", "predicted_instead", "suspect_score"];
    body = [
      h(
        "div",
        { className: "sample-figure" },
        latest
          ? sampleImage(latest, { alt: filename, lazy: false })
          : h("p", { className: "no-picture-text", text: "No picture of this sample was logged yet (it is captured when it is on the watchlist and next appears in a batch)." }),
        latest
          ? h("p", { className: "sample-caption", text: `step ${latest.step} · ${latest.source === "watchlist" ? "watchlist capture" : "logged batch"} · predicted ${formatClass(latest.prediction, latest.prediction_name)} ${formatPercent(latest.confidence)} · loss ${formatNumber(latest.loss)}` })
          : null,
      ),
      h(
        "table",
        { className: "sample-epochs" },
        h("thead", {}, h("tr", {}, columns.map((name) => h("th", { text: name.replace("_", " ") })))),
        h(
          "tbody",
          {},
          detail.epochs.map((row) =>
            h(
              "tr",
              { dataset: { epoch: String(row.epoch) } },
              columns.map((name) => h("td", { text: name === "predicted_instead" ? className(stats || {}, row[name]) : name === "epoch" || name === "count" || name === "forgetting" ? String(row[name] ?? DASH) : formatNumber(row[name]) })),
            ),
          ),
        ),
      ),
      h("h3", { text: detail.total ? `${plural(detail.total, "picture")} of this sample` : "No pictures" }),
      h(
        "ol",
        { className: "strip sample-strip" },
        detail.appearances.map((item) =>
          h(
            "li",
            {},
            h(
              "button",
              {
                type: "button",
                className: "strip-item" + verdictClass(item),
                dataset: { step: String(item.step), source: item.source, tag: item.tag },
                title: `${item.source === "watchlist" ? "watchlist capture" : "logged batch"} · step ${item.step} · epoch ${item.epoch}`,
                disabled: item.source === "watchlist",
                on: { click: () => onOpenBatch(item) },
              },
              h("span", { className: "strip-thumb" }, sampleImage(item)),
              h("span", { className: "strip-step", text: `step ${item.step}${item.source === "watchlist" ? " · watch" : ""}` }),
              h("span", { className: "strip-pred", text: `${formatClass(item.prediction, item.prediction_name)} ${formatPercent(item.confidence)}` }),
            ),
          ),
        ),
      ),
    ];
  }
  return h(
    "aside",
    { className: "sample-panel", dataset: { sampleId: String(id), run, status: detail ? "ready" : error ? "error" : "loading" }, attrs: { "aria-label": `Sample ${filename}` } },
    h(
      "header",
      { className: "history-header" },
      h("h2", {}, h("span", { className: "sample-filename", text: filename }), h("span", { className: "history-count", text: ` ${run} · id ${id}` })),
      closeButton("Close sample", onClose),
    ),
    body,
  );
}

export class DatasetView {
  /** onChange(patch): a state patch; onOpenBatch(appearance): show a logged batch. */
  constructor({ onChange, onOpenBatch }) {
    this.onChange = onChange;
    this.onOpenBatch = onOpenBatch;
    this.token = 0;
    this.runList = h("div", { className: "run-list", attrs: { role: "group", "aria-label": "Runs with statistics" } });
    this.scrubber = scrubber({
      control: "ds-epoch",
      label: "Epoch",
      onSettle: (index) => this.onChange({ ds_epoch: index === Number(this.scrubber.max) ? null : index, ds_sample: null }),
    });
    this.epochLabel = h("span", { className: "step-label epoch-label", attrs: { "aria-live": "polite" } });
    this.columns = h("div", { className: "dataset-columns" });
    this.panelRoot = h("div", { className: "sample-panel-root" });
    this.element = h(
      "section",
      { className: "dataset", dataset: { status: "loading" } },
      h(
        "div",
        { className: "toolbar" },
        h(
          "div",
          { className: "toolbar-row" },
          toolbarGroup("Runs (up to 2)", "runs-group", this.runList),
          toolbarGroup("Epoch", "", this.scrubber, this.epochLabel),
        ),
      ),
      this.columns,
      this.panelRoot,
    );
  }

  status(value) {
    this.element.dataset.status = value;
  }

  async render(state) {
    const token = ++this.token;
    let runs;
    try {
      runs = await api.fetchStatsRuns();
    } catch (error) {
      if (token !== this.token) return;
      this.message("error", `Could not load the runs with statistics: ${error.message}`);
      return;
    }
    if (token !== this.token) return;
    if (!runs.length) {
      replaceChildren(this.runList);
      this.message(
        "empty",
        "No per-sample statistics logged yet. They are written once per epoch when the batches carry an integer x['sample_id'] and BatchImageLogger knows how many samples there are (filenames= or num_samples=).",
      );
      return;
    }
    const known = new Map(runs.map((run) => [run.run, run]));
    let chosen = state.ds_runs.filter((name) => known.has(name)).slice(0, MAX_RUNS);
    if (!chosen.length) chosen = [runs[0].run];
    this.renderRunList(runs, chosen);
    const longest = Math.max(...chosen.map((name) => known.get(name).steps.length));
    const index = state.ds_epoch === null ? longest - 1 : Math.min(state.ds_epoch, longest - 1);
    this.scrubber.max = String(longest - 1);
    this.scrubber.value = String(index);
    this.scrubber.disabled = longest < 2;
    this.status("loading");
    let answers;
    try {
      answers = await Promise.all(
        chosen.map((name) => {
          const steps = known.get(name).steps;
          return api.fetchSampleStats(name, steps[Math.min(index, steps.length - 1)]);
        }),
      );
    } catch (error) {
      if (token !== this.token) return;
      this.message("error", `Could not load the statistics: ${error.message}`);
      return;
    }
    if (token !== this.token) return;
    this.epochLabel.textContent = answers.map((stats) => `epoch ${stats.epoch} (step ${stats.step})`).join(" · ");
    this.stats = new Map(chosen.map((name, i) => [name, answers[i]]));
    const selected = state.ds_sample;
    const signature = JSON.stringify([chosen, answers.map((stats) => stats.step), selected]);
    if (signature !== this.signature) {
      this.signature = signature;
      replaceChildren(
        this.columns,
        chosen.map((name, i) => this.renderColumn(name, answers[i], selected && selected.run === name ? selected.id : null, token)),
      );
    }
    this.renderPanel(selected, token);
    this.status("ready");
  }

  message(status, text) {
    this.signature = null;
    replaceChildren(this.columns, h("div", { className: `state-box ${status}` }, h("h2", { text })));
    replaceChildren(this.panelRoot);
    this.status(status);
  }

  renderRunList(runs, chosen) {
    const signature = JSON.stringify([runs.map((run) => run.run), chosen]);
    if (signature === this.runSignature) return;
    this.runSignature = signature;
    replaceChildren(
      this.runList,
      runs.map((run) => {
        const on = chosen.includes(run.run);
        return h("button", {
          type: "button",
          className: "run-chip" + (on ? " is-checked" : ""),
          text: run.run,
          dataset: { run: run.run },
          attrs: { "aria-pressed": on ? "true" : "false" },
          on: {
            click: () => {
              let next = on ? chosen.filter((name) => name !== run.run) : [...chosen, run.run];
              if (next.length > MAX_RUNS) next = next.slice(-MAX_RUNS);
              if (!next.length) return;
              this.onChange({ ds_runs: next, ds_sample: null });
            },
          },
        });
      }),
    );
  }

  renderColumn(run, stats, selected, token) {
    const pick = (id) => this.onChange({ ds_sample: { run, id } });
    const map = new DataMap({ run, stats, selected, onPick: pick });
    const count = stats.columns.count;
    let seen = 0;
    if (count) for (let i = 0; i < count.length; i++) if (count[i] > 0) seen++;
    const suspects = stats.suspects.slice(0, SUSPECTS_SHOWN);
    const grid = h("ol", { className: "suspects-grid", dataset: { status: "loading" } });
    const fill = (pictures) => {
      replaceChildren(
        grid,
        suspects.map((id, rank) => suspectTile(stats, id, rank, pictures.get(id) || null, pick)),
      );
    };
    fill(new Map());
    api
      .fetchSamplePictures(run, suspects)
      .then((pictures) => {
        if (!grid.isConnected) return;
        fill(pictures);
        grid.dataset.status = "ready";
        grid.dataset.pictures = String([...pictures.values()].filter(Boolean).length);
      })
      .catch((error) => {
        grid.dataset.status = "error";
        grid.title = `Could not load the pictures: ${error.message}`;
      });
    return h(
      "section",
      { className: "dataset-column", dataset: { run, step: String(stats.step), epoch: String(stats.epoch) } },
      h(
        "header",
        { className: "batch-header" },
        h("h2", { className: "column-title", text: run }),
        h("span", { className: "muted", text: `epoch ${stats.epoch} · step ${stats.step} · ${plural(seen, "sample")} seen of ${stats.num_samples}` + (stats.dropped ? ` · ${stats.dropped} appearances dropped` : "") }),
      ),
      map.element,
      h("h3", { className: "suspects-title", text: `Suspected label errors (highest suspect score, 1 − confidence; ${suspects.length} of ${stats.num_samples})` }),
      grid,
    );
  }

  async renderPanel(selected, token) {
    if (!selected || !this.stats.has(selected.run)) {
      replaceChildren(this.panelRoot);
      document.body.classList.remove("has-sample-panel");
      return;
    }
    const stats = this.stats.get(selected.run);
    const key = JSON.stringify([selected.run, selected.id, stats.step]);
    if (this.panelKey === key && this.panelRoot.firstChild) return;
    this.panelKey = key;
    const props = { run: selected.run, id: selected.id, stats, onClose: () => this.onChange({ ds_sample: null }), onOpenBatch: this.onOpenBatch };
    document.body.classList.add("has-sample-panel");
    replaceChildren(this.panelRoot, samplePanel({ ...props, detail: null, error: null }));
    try {
      const detail = await api.fetchSampleDetail(selected.run, selected.id);
      if (this.panelKey !== key) return;
      replaceChildren(this.panelRoot, samplePanel({ ...props, detail, error: null }));
    } catch (error) {
      if (this.panelKey !== key) return;
      replaceChildren(this.panelRoot, samplePanel({ ...props, detail: null, error: `Could not load the sample: ${error.message}` }));
    }
  }
}
