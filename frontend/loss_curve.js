// The loss curve of a training run: every step's batch loss (the composition), drawn
// from the plugin's /loss_curve answer: the steps cut into one bucket per pixel
// column, each drawn as its min-max bar (a million steps draw as fast as a thousand).
// Logged steps are ticks under the curve (grey: the schedule; red: a trigger), non-
// finite losses red marks at the top. A click opens that step: the batch where it was
// logged, else its file list (/composition). Dragging across the curve zooms into
// those steps (asked again from the plugin: lookup is never downsampled); the list of
// the run's anomalies opens each one.

import { fetchComposition, fetchLossCurve } from "./api.js";
import { h, replaceChildren } from "./dom.js";
import { TRIGGER_TEXT, formatNumber, plural } from "./format.js";

const HEIGHT = 140;
const TICKS = 14; // the band under the curve where logged steps are marked
const TOP = 10; // the band above it where non-finite losses are marked

export class LossCurve {
  constructor({ onOpenStep }) {
    this.onOpenStep = onOpenStep;
    this.run = null;
    this.curve = null;
    this.range = null; // [start, end] when zoomed
    this.token = 0;
    this.fileToken = 0;
    this.logged = new Set();
    this.canvas = h("canvas", {
      className: "loss-canvas",
      attrs: { role: "img", "aria-label": "the batch loss of every training step" },
      on: {
        mousedown: (event) => this.pressed(event),
        mouseup: (event) => this.released(event),
        mousemove: (event) => this.hovered(event),
        mouseleave: () => {
          this.readout.textContent = "";
        },
      },
    });
    this.title = h("span", { className: "loss-title", text: "Loss" });
    this.readout = h("span", { className: "loss-readout", attrs: { "aria-live": "polite" } });
    this.resetButton = h("button", { type: "button", className: "loss-reset", text: "whole run", hidden: true, on: { click: () => this.zoom(null) } });
    this.anomalies = h("div", { className: "loss-anomalies" });
    this.files = h("div", { className: "step-files", hidden: true });
    this.element = h(
      "section",
      { className: "loss-curve", hidden: true, attrs: { "aria-label": "Loss curve" } },
      h("div", { className: "loss-head" }, this.title, this.readout, this.resetButton),
      this.canvas,
      this.anomalies,
      this.files,
    );
    this.onResize = () => this.draw();
    window.addEventListener("resize", this.onResize);
  }

  /** Shows the curve of `run` (a training run), or hides it (null). */
  async show(run, { reload = false } = {}) {
    if (!run) {
      this.element.hidden = true;
      this.run = null;
      return;
    }
    if (run === this.run && this.curve && !reload) {
      this.element.hidden = this.curve.total_steps === 0; // back from another view
      return;
    }
    if (run !== this.run) {
      this.range = null;
      this.files.hidden = true;
    }
    this.run = run;
    await this.load();
  }

  async load() {
    const token = ++this.token;
    const width = Math.max(100, Math.floor(this.element.parentElement?.clientWidth || 800) - 24);
    let curve;
    try {
      curve = await fetchLossCurve(this.run, { start: this.range?.[0], end: this.range?.[1], buckets: width });
    } catch (error) {
      if (token !== this.token) return;
      // A run without composition (an older logger, log_composition=False): no curve.
      this.curve = null;
      this.element.hidden = true;
      if (error.status !== 404) console.warn("loss curve:", error.message);
      return;
    }
    if (token !== this.token) return;
    this.curve = curve;
    this.logged = new Set(curve.logged);
    this.element.hidden = curve.total_steps === 0;
    this.resetButton.hidden = this.range === null;
    this.title.textContent = `Loss · ${plural(curve.total_steps, "step")}` + (this.range ? ` · steps ${curve.start}–${curve.end}` : "");
    this.renderAnomalies();
    this.draw();
  }

  renderAnomalies() {
    const items = this.curve.anomalies;
    if (!items.length) {
      replaceChildren(this.anomalies, h("span", { className: "loss-none", text: "No anomaly: no non-finite loss or input, no loss spike." }));
      return;
    }
    replaceChildren(
      this.anomalies,
      h("span", { className: "loss-anomalies-title", text: `${plural(items.length, "anomaly", "anomalies")}:` }),
      items.slice(0, 50).map((item) =>
        h("button", {
          type: "button",
          className: `anomaly trigger-${item.trigger}`,
          dataset: { step: String(item.step), trigger: item.trigger || "" },
          text: `step ${item.step} · ${TRIGGER_TEXT[item.trigger] || item.trigger} · loss ${item.loss === null ? "NaN" : formatNumber(item.loss)}`,
          on: { click: () => this.open(item.step) },
        }),
      ),
      items.length > 50 ? h("span", { text: `and ${items.length - 50} more` }) : null,
    );
  }

  /** Scales: bucket index <-> x, loss -> y (log when the losses span decades). */
  layout() {
    const curve = this.curve;
    const buckets = curve.buckets;
    const count = buckets.first.length;
    const width = this.canvas.clientWidth || 800;
    const [low, high] = curve.loss_range || [0, 1];
    const log = low > 0 && high / low > 100;
    const value = (v) => (log ? Math.log10(v) : v);
    const lo = value(low);
    const hi = value(high) === lo ? lo + 1 : value(high);
    const plot = HEIGHT - TICKS - TOP;
    return {
      count,
      width,
      log,
      x: (i) => (count <= 1 ? width / 2 : ((i + 0.5) / count) * width),
      y: (v) => TOP + plot - ((value(v) - lo) / (hi - lo)) * plot,
      bucketAt: (x) => Math.max(0, Math.min(count - 1, Math.floor((x / width) * count))),
    };
  }

  draw() {
    if (!this.curve || this.element.hidden) return;
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 800;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(HEIGHT * ratio);
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, HEIGHT);
    const styles = getComputedStyle(this.element);
    const ink = styles.getPropertyValue("--loss-ink").trim() || "#3367d6";
    const alarm = styles.getPropertyValue("--loss-alarm").trim() || "#d93025";
    const muted = styles.getPropertyValue("--loss-muted").trim() || "#9aa0a6";
    const { count, x, y } = this.layout();
    const buckets = this.curve.buckets;
    const step = Math.max(1, width / Math.max(count, 1));
    context.fillStyle = ink;
    context.strokeStyle = ink;
    // Min-max bars, joined: a line where a bucket is one step.
    context.beginPath();
    let drawing = false;
    for (let i = 0; i < count; i += 1) {
      const high = buckets.max[i];
      const low = buckets.min[i];
      if (high === null || low === null) {
        drawing = false;
        continue;
      }
      const cx = x(i);
      if (!drawing) context.moveTo(cx, y(high));
      context.lineTo(cx, y(high));
      context.lineTo(cx, y(low));
      drawing = true;
    }
    context.lineWidth = 1.25;
    context.stroke();
    // Non-finite losses: a red mark at the top; triggered buckets: a red tick below.
    const logged = this.curve.logged;
    for (let i = 0; i < count; i += 1) {
      if (buckets.non_finite[i] > 0) {
        context.fillStyle = alarm;
        context.fillRect(x(i) - Math.max(1.5, step / 2), 0, Math.max(3, step), TOP - 3);
      }
    }
    // Logged steps: grey ticks (schedule), red ticks (a trigger).
    const first = buckets.first;
    const last = buckets.last;
    let j = 0;
    const sortedLogged = logged.filter((s) => s >= this.curve.start && s <= this.curve.end);
    for (const stepValue of sortedLogged) {
      while (j < count - 1 && last[j] < stepValue) j += 1;
      if (first[j] > stepValue && j > 0 && last[j - 1] < stepValue) continue; // between buckets
      const triggered = buckets.trigger[j] && this.isAnomaly(stepValue);
      context.fillStyle = triggered ? alarm : muted;
      context.fillRect(x(j) - 1, HEIGHT - TICKS + 3, 2, triggered ? TICKS - 3 : TICKS - 7);
    }
    for (const item of this.curve.anomalies) {
      if (item.step < this.curve.start || item.step > this.curve.end) continue;
      const i = this.bucketOfStep(item.step);
      if (i === null) continue;
      context.fillStyle = alarm;
      const cy = item.loss === null ? TOP - 2 : y(item.loss);
      context.beginPath();
      context.arc(x(i), cy, 4, 0, Math.PI * 2);
      context.fill();
    }
    this.canvas.dataset.drawn = String(count);
  }

  isAnomaly(step) {
    return this.curve.anomalies.some((item) => item.step === step);
  }

  bucketOfStep(step) {
    const first = this.curve.buckets.first;
    const last = this.curve.buckets.last;
    let lo = 0;
    let hi = first.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (last[mid] < step) lo = mid + 1;
      else if (first[mid] > step) hi = mid - 1;
      else return mid;
    }
    return null;
  }

  /** The step a bucket stands for: its anomaly, else a logged step in it where the
   * bucket is one step wide, else the step of its max (a spike is its bucket's max). */
  stepOfBucket(i) {
    const buckets = this.curve.buckets;
    const anomaly = this.curve.anomalies.find((item) => item.step >= buckets.first[i] && item.step <= buckets.last[i]);
    if (anomaly) return anomaly.step;
    return buckets.max_step[i];
  }

  eventBucket(event) {
    if (!this.curve || !this.curve.buckets.first.length) return null;
    const rect = this.canvas.getBoundingClientRect();
    return this.layout().bucketAt(event.clientX - rect.left);
  }

  hovered(event) {
    const i = this.eventBucket(event);
    if (i === null) return;
    const buckets = this.curve.buckets;
    const range = buckets.first[i] === buckets.last[i] ? `step ${buckets.first[i]}` : `steps ${buckets.first[i]}–${buckets.last[i]}`;
    const loss = buckets.max[i] === null ? "NaN" : buckets.min[i] === buckets.max[i] ? formatNumber(buckets.max[i]) : `${formatNumber(buckets.min[i])}–${formatNumber(buckets.max[i])}`;
    this.readout.textContent = `${range} · loss ${loss}` + (buckets.non_finite[i] ? ` · ${buckets.non_finite[i]} non-finite` : "");
  }

  pressed(event) {
    this.pressedAt = this.eventBucket(event);
  }

  released(event) {
    const start = this.pressedAt;
    this.pressedAt = null;
    const end = this.eventBucket(event);
    if (start === null || end === null) return;
    if (Math.abs(end - start) >= 3) {
      const buckets = this.curve.buckets;
      const a = Math.min(start, end);
      const b = Math.max(start, end);
      this.zoom([buckets.first[a], buckets.last[b]]);
      return;
    }
    this.open(this.stepOfBucket(end));
  }

  zoom(range) {
    this.range = range;
    this.load();
  }

  /** Opens a step: its logged batch, or its file list. */
  async open(step) {
    if (this.logged.has(step)) {
      this.files.hidden = true;
      this.onOpenStep(step);
      return;
    }
    const token = ++this.fileToken;
    let answer;
    try {
      answer = await fetchComposition(this.run, step);
    } catch (error) {
      if (token !== this.fileToken) return;
      replaceChildren(this.files, h("p", { className: "notice warn", text: `Step ${step}: ${error.message}` }));
      this.files.hidden = false;
      return;
    }
    if (token !== this.fileToken) return;
    this.showFiles(answer);
  }

  showFiles(answer) {
    const names = answer.filenames;
    const rows = answer.sample_ids.map((id, i) =>
      h("li", { dataset: { sampleId: String(id) } }, h("span", { className: "file-id", text: `#${id}` }), h("span", { className: "file-name", text: names && names[i] ? names[i] : "" })),
    );
    replaceChildren(
      this.files,
      h(
        "div",
        { className: "step-files-head" },
        h("strong", { text: `Step ${answer.step} was not logged` }),
        h("span", { text: ` · loss ${answer.loss_finite ? formatNumber(answer.loss) : "NaN"}` + (answer.trigger ? ` · ${TRIGGER_TEXT[answer.trigger] || answer.trigger}` : "") }),
        h("button", { type: "button", className: "close", text: "×", attrs: { "aria-label": "close the file list" }, on: { click: () => { this.files.hidden = true; } } }),
      ),
      rows.length
        ? h("ol", { className: "file-list", attrs: { "aria-label": `the files of step ${answer.step}` } }, rows)
        : h("p", { text: "The batches carried no sample ids (x[\"sample_id\"]): only the loss is known." }),
    );
    this.files.dataset.step = String(answer.step);
    this.files.hidden = false;
  }
}
