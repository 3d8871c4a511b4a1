// The Dataset view: every sample of a run at once, from its per-sample statistics
// (docs/format.md, batch_images_sample_stats). Per run: the data map (Dataset
// Cartography's confidence against variability, coloured by how often the sample was
// right; drawn by datamap_canvas.js), the ranked suspects with their pictures
// (watchlist captures, or any logged batch holding the sample) and a CSV of the whole
// ranking, and the confusion matrix of the last appearances (a click on a cell opens
// its samples), with per-class accuracy and loss by epoch. It says when the ranking
// is not worth reading yet, and, for a run without statistics, why the logger turned
// the data map off. An epoch scrubber; two runs side by side; the opened sample's
// picture, statistics per epoch and appearances. The state lives in the URL with the
// rest of the gallery (state.js: view, ds_*).

import * as api from "./api.js";
import { h, replaceChildren } from "./dom.js";
import { DataMap } from "./datamap_canvas.js";
import { DASH, formatClass, formatNumber, formatPercent, formatPrediction, plural, shortenPath, statsClassName, statsFilename } from "./format.js";
import { runLabel } from "./runs.js";
import { captionText, closeButton, sampleImage, scrubber, toolbarGroup, verdictClass } from "./widgets.js";

const SUSPECTS_SHOWN = 40;
const CELL_SAMPLES_SHOWN = 40;
const MAX_RUNS = 2;
const TREND_POINTS = 6; // loss values shown per class (first, then the latest)

function short(value) {
  return Number.isFinite(value) ? value.toFixed(3) : DASH;
}

/** Whether a seen sample's statistics are not finite (a NaN or inf output). */
function nonFinite(stats, id) {
  const { columns } = stats;
  return columns.count?.[id] > 0 && !Number.isFinite(columns.suspect_score?.[id]);
}

/** Sample ids ranked as the suspects are: non-finite first, then by score. */
function ranked(stats, ids) {
  const score = stats.columns.suspect_score;
  const key = (id) => (nonFinite(stats, id) ? Infinity : Number.isFinite(score?.[id]) ? score[id] : -Infinity);
  return [...ids].sort((a, b) => key(b) - key(a) || a - b);
}

/** One ranked suspect: its picture, file (folder and name), labels and scores. */
function suspectTile(stats, id, rank, picture, onPick) {
  const { columns } = stats;
  const filename = statsFilename(stats, id);
  const bad = nonFinite(stats, id);
  return h(
    "li",
    {},
    h(
      "button",
      {
        type: "button",
        className: "suspect-tile" + (picture ? "" : " no-picture") + (bad ? " is-non-finite" : ""),
        dataset: { sampleId: String(id), rank: String(rank), source: picture ? picture.source : "none", nonFinite: bad ? "true" : "false" },
        title: filename,
        on: { click: () => onPick(id) },
      },
      h(
        "span",
        { className: "suspect-thumb" },
        picture ? sampleImage(picture, { alt: filename }) : h("span", { className: "no-picture-text", text: "no picture yet" }),
        h("span", { className: "suspect-rank", text: `#${rank + 1}` }),
        bad ? h("span", { className: "non-finite-badge", text: "NaN/inf", title: "Its output was not finite (NaN or inf) at an appearance: listed first" }) : null,
      ),
      h("span", { className: "filename", text: stats.filenames ? shortenPath(filename) : filename }),
      captionText("label", statsClassName(stats, columns.label?.[id])),
      captionText("predicted", statsClassName(stats, columns.predicted_instead?.[id])),
      captionText("suspect", bad ? "non-finite" : short(columns.suspect_score?.[id])),
      captionText("conf · var", `${short(columns.confidence?.[id])} · ${short(columns.variability?.[id])}`),
      captionText("right · AUM", `${formatPercent(columns.correct?.[id])} · ${short(columns.margin?.[id])}`),
    ),
  );
}

/** A grid of sample tiles whose pictures load after it is shown. */
function tileGrid(run, stats, ids, onPick, className) {
  const grid = h("ol", { className: `suspects-grid ${className}`.trim(), dataset: { status: "loading" } });
  const fill = (pictures) => replaceChildren(grid, ids.map((id, rank) => suspectTile(stats, id, rank, pictures.get(id) || null, onPick)));
  fill(new Map());
  api
    .fetchSamplePictures(run, ids)
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
  return grid;
}

/** The loss values of one class over the epochs, as short text. */
function lossTrend(trend, index) {
  const values = trend.map((point) => point.loss[index]).filter((value) => value !== null && value !== undefined);
  if (!values.length) return DASH;
  const shown = values.length > TREND_POINTS ? [values[0], "…", ...values.slice(-(TREND_POINTS - 1))] : values;
  return shown.map((value) => (value === "…" ? value : formatNumber(value))).join(" → ");
}

/** The confusion matrix (given × predicted at the last appearance), per-class accuracy and loss. */
function confusionSection(run, stats, openCell, onCell) {
  const title = h("h3", { className: "confusion-title", text: "Given label × predicted label (last appearance)" });
  if (!stats.confusion) {
    const why = stats.num_classes > 0 ? "This run's statistics were written by an older logger (no last prediction)." : "No classes.";
    return h("section", { className: "confusion", dataset: { status: "none" } }, title, h("p", { className: "muted", text: why }));
  }
  const matrix = stats.confusion;
  const classes = matrix.length;
  const name = (index) => statsClassName(stats, index);
  let diagonal = 0;
  let total = 0;
  matrix.forEach((row, given) => row.forEach((count, predicted) => {
    total += count;
    if (given === predicted) diagonal += count;
  }));
  const byClass = new Map(stats.classes.map((item) => [item.class, item]));
  const head = h(
    "tr",
    {},
    h("th", { className: "corner", text: "given ↓ predicted →" }),
    Array.from({ length: classes }, (_, predicted) => h("th", { className: "predicted-head", text: name(predicted), title: `predicted ${name(predicted)}` })),
    h("th", { text: "accuracy" }),
    h("th", { text: "loss by epoch" }),
  );
  const rows = matrix.map((row, given) => {
    const summary = byClass.get(given);
    return h(
      "tr",
      { dataset: { given: String(given) } },
      h("th", { className: "given-head", text: name(given), title: `given ${name(given)}` }),
      row.map((count, predicted) => {
        const open = openCell && openCell.given === given && openCell.predicted === predicted;
        return h(
          "td",
          {},
          h("button", {
            type: "button",
            className: "confusion-cell" + (given === predicted ? " is-diagonal" : " is-off-diagonal") + (open ? " is-open" : "") + (count ? "" : " is-empty"),
            dataset: { given: String(given), predicted: String(predicted), count: String(count) },
            text: String(count),
            title: `${plural(count, "sample")} given ${name(given)}, predicted ${name(predicted)}`,
            disabled: count === 0,
            attrs: { "aria-pressed": open ? "true" : "false" },
            on: { click: () => onCell(open ? null : { given, predicted }) },
          }),
        );
      }),
      h("td", { className: "class-accuracy", text: summary ? formatPercent(summary.accuracy) : DASH }),
      h("td", { className: "class-trend", text: lossTrend(stats.class_trend, given), dataset: { losses: JSON.stringify(stats.class_trend.map((point) => point.loss[given] ?? null)) } }),
    );
  });
  return h(
    "section",
    { className: "confusion", dataset: { status: "ready", diagonal: String(diagonal), offDiagonal: String(total - diagonal) } },
    title,
    h("p", {
      className: "confusion-summary muted",
      text: `${plural(diagonal, "sample")} on the diagonal (right), ${plural(total - diagonal, "sample")} off it (wrong): ${formatPercent(total ? diagonal / total : NaN)} right at their last appearance. Click a cell for its samples.`,
    }),
    h("div", { className: "confusion-scroll" }, h("table", { className: "confusion-matrix" }, h("thead", {}, head), h("tbody", {}, rows))),
  );
}

/** The samples of one confusion cell, most suspect first, with their pictures. */
function cellPanel(run, stats, cell, onPick, onClose) {
  const { columns } = stats;
  const ids = [];
  for (let id = 0; id < stats.num_samples; id++) {
    if (columns.count?.[id] > 0 && columns.label?.[id] === cell.given && columns.last_predicted?.[id] === cell.predicted) ids.push(id);
  }
  const order = ranked(stats, ids);
  const shown = order.slice(0, CELL_SAMPLES_SHOWN);
  const given = statsClassName(stats, cell.given);
  const predicted = statsClassName(stats, cell.predicted);
  return h(
    "section",
    { className: "cell-samples", dataset: { given: String(cell.given), predicted: String(cell.predicted), count: String(order.length), ids: JSON.stringify(shown) } },
    h(
      "header",
      { className: "cell-samples-header" },
      h("h3", { text: `Given ${given}, predicted ${predicted}: ${plural(order.length, "sample")}` + (order.length > shown.length ? ` (the ${shown.length} most suspect shown)` : "") }),
      closeButton("Close the cell", onClose),
    ),
    tileGrid(run, stats, shown, onPick, "cell-grid"),
  );
}

/** The opened sample: its picture, statistics per epoch and every appearance. */
function samplePanel({ run, id, stats, detail, error, onClose, onOpenBatch }) {
  const filename = (detail && detail.filename) || (stats ? statsFilename(stats, id) : `sample ${id}`);
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
          ? h("p", { className: "sample-caption", text: `step ${latest.step} · ${latest.source === "watchlist" ? "watchlist capture" : "logged batch"} · predicted ${formatPrediction(latest)} ${formatPercent(latest.confidence)} · loss ${formatNumber(latest.loss)}` })
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
              columns.map((name) => h("td", { text: name === "predicted_instead" ? statsClassName(stats || {}, row[name]) : name === "epoch" || name === "count" || name === "forgetting" ? String(row[name] ?? DASH) : formatNumber(row[name]) })),
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
              h("span", { className: "strip-pred", text: `${formatPrediction(item)} ${formatPercent(item.confidence)}` }),
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
      h("h2", {}, h("span", { className: "sample-filename", text: filename }), h("span", { className: "history-count", text: ` ${runLabel(run)} · id ${id}` })),
      closeButton("Close sample", onClose),
    ),
    body,
  );
}

/** Why a run has no statistics: the logger's own words (its status record). */
function offNotice(run) {
  return h(
    "div",
    { className: "notice warn", dataset: { kind: "data-map-off", run: run.run } },
    h("strong", { text: `${runLabel(run.run)}: the data map is off. ` }),
    h("span", { className: "off-reason", text: run.reason }),
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
    this.notices = h("div", { className: "dataset-notices" });
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
      this.notices,
      this.columns,
      this.panelRoot,
    );
  }

  status(value) {
    this.element.dataset.status = value;
  }

  async render(state) {
    const token = ++this.token;
    let listing;
    try {
      listing = await api.fetchStatsRuns();
    } catch (error) {
      if (token !== this.token) return;
      this.message("error", `Could not load the runs with statistics: ${error.message}`);
      return;
    }
    if (token !== this.token) return;
    const { runs, off } = listing;
    replaceChildren(this.notices, off.map(offNotice));
    if (!runs.length) {
      replaceChildren(this.runList);
      this.message(
        off.length ? "off" : "empty",
        off.length
          ? "No run has per-sample statistics: the logger turned the data map off, for the reason above."
          : "No per-sample statistics logged yet. The logger writes them at the end of each training epoch; when it cannot (no sample ids, no classification head…), it warns once, saying why, and this page shows that reason.",
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
    const cell = state.ds_cell;
    const signature = JSON.stringify([chosen, answers.map((stats) => stats.step), selected, cell]);
    if (signature !== this.signature) {
      this.signature = signature;
      replaceChildren(
        this.columns,
        chosen.map((name, i) =>
          this.renderColumn(name, answers[i], selected && selected.run === name ? selected.id : null, cell && cell.run === name ? cell : null),
        ),
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
          text: runLabel(run.run),
          title: run.run,
          dataset: { run: run.run },
          attrs: { "aria-pressed": on ? "true" : "false" },
          on: {
            click: () => {
              let next = on ? chosen.filter((name) => name !== run.run) : [...chosen, run.run];
              if (next.length > MAX_RUNS) next = next.slice(-MAX_RUNS);
              if (!next.length) return;
              this.onChange({ ds_runs: next, ds_sample: null, ds_cell: null });
            },
          },
        });
      }),
    );
  }

  renderColumn(run, stats, selected, cell) {
    const pick = (id) => this.onChange({ ds_sample: { run, id } });
    const map = new DataMap({ run, stats, selected, onPick: pick });
    const count = stats.columns.count;
    let seen = 0;
    if (count) for (let i = 0; i < count.length; i++) if (count[i] > 0) seen++;
    const suspects = stats.suspects.slice(0, SUSPECTS_SHOWN);
    const reliability = stats.reliability;
    const csv = h("a", {
      className: "button csv-link",
      href: api.suspectsCsvUrl(run, stats.step),
      text: "Download the ranking (CSV)",
      title: "Every sample seen, most suspect first: file, given label, predicted instead, scores",
      attrs: { download: "" },
    });
    return h(
      "section",
      { className: "dataset-column", dataset: { run, step: String(stats.step), epoch: String(stats.epoch), reliable: reliability.reliable ? "true" : "false" } },
      h(
        "header",
        { className: "batch-header" },
        h("h2", { className: "column-title", text: runLabel(run), title: run }),
        h("span", { className: "muted", text: `epoch ${stats.epoch} · step ${stats.step} · ${plural(seen, "sample")} seen of ${stats.num_samples}` + (stats.dropped ? ` · ${stats.dropped} appearances dropped` : "") }),
      ),
      map.element,
      h(
        "div",
        { className: "suspects-head" },
        h("h3", { className: "suspects-title", text: `Suspected label errors (most suspect first; ${suspects.length} of ${plural(seen, "sample")} seen)` }),
        csv,
      ),
      reliability.reliable
        ? null
        : h(
            "div",
            { className: "notice warn unreliable", dataset: { kind: "unreliable" } },
            h("strong", { text: "Not worth reading yet: " }),
            reliability.reasons.join("; ") + ". The list below may be noise; train longer, then look again.",
          ),
      stats.non_finite
        ? h(
            "div",
            { className: "notice warn", dataset: { kind: "non-finite", count: String(stats.non_finite) } },
            h("strong", { text: `${plural(stats.non_finite, "sample")} had a non-finite output (NaN or inf): ` }),
            "they head the list, marked NaN/inf, and are not on the map.",
          )
        : null,
      tileGrid(run, stats, suspects, pick, ""),
      confusionSection(run, stats, cell, (chosenCell) => this.onChange({ ds_cell: chosenCell ? { run, ...chosenCell } : null })),
      cell ? cellPanel(run, stats, cell, pick, () => this.onChange({ ds_cell: null })) : null,
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
