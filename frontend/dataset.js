// The Dataset view: every sample of a run at once, from its per-sample statistics
// (docs/format.md, batch_images_sample_stats). Per run: the data map (Dataset
// Cartography's confidence against variability, coloured by how often the sample was
// right; drawn by datamap_canvas.js), and the ranked suspects with their pictures
// (watchlist captures, or any logged batch holding the sample). An epoch scrubber; two
// runs side by side; the opened sample's picture, statistics per epoch and appearances.
// The state lives in the URL with the rest of the gallery (state.js: view, ds_*).

import * as api from "./api.js";
import { h, replaceChildren } from "./dom.js";
import { DataMap } from "./datamap_canvas.js";
import { DASH, formatClass, formatNumber, formatPrediction, formatPercent, plural, statsClassName, statsFilename } from "./format.js";
import { captionText, closeButton, sampleImage, scrubber, toolbarGroup, verdictClass } from "./widgets.js";

const SUSPECTS_SHOWN = 40;
const MAX_RUNS = 2;

function short(value) {
  return Number.isFinite(value) ? value.toFixed(3) : DASH;
}

/** One ranked suspect: its picture, filename, labels and scores. */
function suspectTile(stats, id, rank, picture, onPick) {
  const { columns } = stats;
  const filename = statsFilename(stats, id);
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
      captionText("label", statsClassName(stats, columns.label?.[id])),
      captionText("predicted", statsClassName(stats, columns.predicted_instead?.[id])),
      captionText("suspect", short(columns.suspect_score?.[id])),
      captionText("conf · var", `${short(columns.confidence?.[id])} · ${short(columns.variability?.[id])}`),
      captionText("right · AUM", `${formatPercent(columns.correct?.[id])} · ${short(columns.margin?.[id])}`),
    ),
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
