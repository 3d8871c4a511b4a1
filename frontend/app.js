// The gallery controller: holds the view state, asks the API for data, and hands it
// to the view modules. The state lives in the URL (state.js).

import * as api from "./api.js";
import { renderColumns } from "./compare.js";
import { renderDetail } from "./detail.js";
import { FLAGS, MODES } from "./contract.js";
import { DatasetView } from "./dataset.js";
import { h, replaceChildren } from "./dom.js";
import { plural } from "./format.js";
import { renderHistory } from "./history.js";
import { groupName, groupRuns, indexOfStep, modeOf, nearestStep, seriesKey, unionSteps } from "./runs.js";
import { maskKind } from "./masks.js";
import { classOptions, filterSamples, sortSamples } from "./samples.js";
import { onUrlChange, readState, stateToParams, writeState } from "./state.js";
import { Toolbar } from "./toolbar.js";

const SNIPPET = `from tb_batch_images import BatchImageLogger

model.fit(
    train_data,
    validation_data=val_data,
    callbacks=[BatchImageLogger("logs/my_run")],
)`;

const KEEP_ALL_FLAG = "--samples_per_plugin batch_images=0";

function sameJson(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

export class GalleryApp {
  constructor(root) {
    this.root = root;
    this.state = readState();
    this.groups = new Map();
    this.runGroup = new Map(); // seriesKey(run, tag) -> group name
    this.stepsByRun = new Map(); // seriesKey(run, tag) -> {first, all, steps}: api.fetchStepList
    this.historyByFile = new Map(); // filename -> Promise<[Appearance]>
    this.renderToken = 0;
    this.view = { steps: [], stepIndex: -1, target: null, columns: [] };
    this.note = "";

    this.toolbar = new Toolbar({
      onChange: (patch) => this.setState(patch),
      onStep: (move) => this.moveStep(move),
    });
    this.notices = h("div", { className: "notices", attrs: { role: "status" } });
    this.main = h("main", { className: "main", dataset: { status: "loading" } });
    this.historyRoot = h("div", { className: "history-root" });
    this.overlayRoot = h("div", { className: "overlay-root" });
    this.header = h("header", { className: "app-header" }, this.toolbar.element);
    // The Dataset view (dataset.js) shares only the URL state and this switch.
    this.dataset = new DatasetView({
      onChange: (patch) => this.setState(patch),
      onOpenBatch: (item) => {
        const group = groupName({ run: item.run, tag: item.tag });
        this.setState({ view: "batches", ds_sample: null, runs: [group], mode: "train", step: item.step, open: { group, index: item.index } });
      },
    });
    this.viewButtons = ["batches", "dataset"].map((view) =>
      h("button", { type: "button", className: "segment", dataset: { view }, text: view === "batches" ? "Batches" : "Dataset", on: { click: () => this.setState({ view }) } }),
    );
    replaceChildren(
      root,
      h("nav", { className: "view-switch", attrs: { "aria-label": "View" } }, h("div", { className: "segmented" }, this.viewButtons)),
      this.header,
      this.notices,
      this.main,
      (this.hints = h("footer", {
        className: "key-hints",
        text: "Keys: ←/→ or [ ] steps · Home/End first/latest · ↓ into the grid · arrows move between tiles · Enter opens · Escape closes",
      })),
      this.historyRoot,
      this.overlayRoot,
      this.dataset.element,
    );
    document.addEventListener("keydown", (event) => this.onKey(event));
    // A link pasted into the same tab changes only the fragment: follow it.
    onUrlChange(() => this.followUrl());
  }

  followUrl() {
    const next = readState();
    if (sameJson(stateToParams(next), stateToParams(this.state))) return;
    const historyChanged = next.history !== this.state.history;
    this.state = next;
    this.note = "";
    this.update({ historyChanged });
  }

  // -- loading ------------------------------------------------------------------

  async start() {
    this.showState("loading", "Loading runs…");
    await this.loadRuns();
  }

  /** TensorBoard's reload (its button and auto-reload): new runs and steps, same place. */
  async reload() {
    this.stepsByRun.clear();
    this.historyByFile.clear();
    await this.loadRuns({ quiet: true });
  }

  async loadRuns({ quiet = false } = {}) {
    let runs;
    try {
      runs = await api.fetchRuns();
    } catch (error) {
      if (!quiet || !this.groups.size) this.showError("Could not load the runs", error);
      return;
    }
    this.groups = groupRuns(runs);
    this.runGroup = new Map();
    for (const group of this.groups.values()) {
      for (const run of Object.values(group.modes)) this.runGroup.set(seriesKey(run.run, run.tag), group.name);
    }
    if (!this.groups.size && this.state.view !== "dataset") {
      this.showEmpty();
      return;
    }
    this.header.hidden = false;
    this.hints.hidden = false;
    await this.update({ historyChanged: true, quiet });
  }

  /**
   * A run's steps as far as they have arrived: the newest page first, every step once
   * the other pages are in (`entry.steps` then holds them). `target`: the step the view
   * wants; a step older than the first page waits for every page.
   * Returns {steps, total, complete}.
   */
  async loadSteps(run, tag, target) {
    const key = seriesKey(run, tag);
    if (!this.stepsByRun.has(key)) {
      const entry = { ...api.fetchStepList(run, tag), steps: null };
      entry.first.catch(() => this.stepsByRun.delete(key));
      entry.all.then(
        (steps) => {
          entry.steps = steps;
        },
        () => this.stepsByRun.delete(key),
      );
      this.stepsByRun.set(key, entry);
    }
    const entry = this.stepsByRun.get(key);
    if (entry.steps) return { steps: entry.steps, total: entry.steps.length, complete: true };
    const first = await entry.first;
    if (first.complete) return first;
    if (entry.steps) return { steps: entry.steps, total: entry.steps.length, complete: true };
    if (target === null || (first.steps.length && target >= first.steps[0])) {
      // Paint now; when every step is in, draw again (the grid is kept: same step).
      const token = this.renderToken;
      entry.all.then(() => {
        if (token === this.renderToken) this.update({ quiet: true });
      }, () => {});
      return first;
    }
    const steps = await entry.all;
    return { steps, total: steps.length, complete: true };
  }

  // -- state ----------------------------------------------------------------------

  /** Applies a patch to the state, writes the URL, and redraws what changed. */
  setState(patch) {
    const before = this.state;
    this.state = { ...before, ...patch };
    const changed = Object.keys(patch).filter((key) => !sameJson(before[key], this.state[key]));
    if (!changed.length) return;
    if (changed.some((key) => ["runs", "mode", "step"].includes(key))) this.note = "";
    writeState(this.state);
    if (changed.includes("mask_opacity")) this.applyMaskOpacity();
    if (changed.every((key) => key === "mask_opacity")) {
      this.updateToolbar(this.shownBatches());
      return; // a CSS variable: nothing to redraw
    }
    const onlyOverlays = changed.every((key) => key === "open" || key === "history");
    if (onlyOverlays && this.groups.size) {
      if (changed.includes("open")) this.renderDetail();
      if (changed.includes("history")) this.renderHistoryPanel();
      return;
    }
    this.update({ historyChanged: changed.includes("history") });
  }

  /** Keeps the state consistent with the runs that exist. */
  normalize() {
    const state = { ...this.state };
    state.runs = state.runs.filter((name) => this.groups.has(name));
    if (!state.runs.length && this.groups.size) state.runs = [this.groups.keys().next().value];
    const selected = state.runs.map((name) => this.groups.get(name));
    if (!selected.some((group) => group.modes[state.mode])) {
      const other = MODES.find((mode) => selected.some((group) => group.modes[mode]));
      if (other) state.mode = other;
    }
    if (state.open && !state.runs.includes(state.open.group)) state.open = null;
    if (!sameJson(state, this.state)) {
      this.state = state;
      writeState(this.state);
    }
  }

  // -- rendering ------------------------------------------------------------------

  /** Redraws from the state; `quiet` (TensorBoard's reload) shows no loading state. */
  async update(options = {}) {
    this.applyMaskOpacity();
    try {
      if (this.showView()) await this.dataset.render(this.state);
      else if (!this.groups.size) this.showEmpty(); // e.g. only the data map was logged
      else await this.render(options);
    } catch (error) {
      // A bug, not a bad answer (answers.js checked those): say so, and stay usable.
      console.error(error);
      this.showError("The gallery could not show this view", error);
    }
  }

  /** The mask opacity slider's value, as the CSS variable every mask canvas reads. */
  applyMaskOpacity() {
    document.documentElement.style.setProperty("--mask-opacity", String(this.state.mask_opacity / 100));
  }

  shownBatches() {
    return this.view.columns.map((column) => column.batch).filter(Boolean);
  }

  /** Shows the chosen view's elements; true when it is the Dataset view. */
  showView() {
    const dataset = this.state.view === "dataset";
    for (const button of this.viewButtons) button.setAttribute("aria-pressed", String(button.dataset.view === this.state.view));
    this.dataset.element.hidden = !dataset;
    for (const element of [this.header, this.notices, this.main, this.hints, this.historyRoot, this.overlayRoot]) element.hidden = dataset || (element === this.header || element === this.hints ? !this.groups.size : false);
    return dataset;
  }

  async render({ historyChanged = false, quiet = false } = {}) {
    if (!this.groups.size) return;
    const token = ++this.renderToken;
    this.normalize();
    const state = this.state;
    const columns = state.runs.map((name) => {
      const run = this.groups.get(name).modes[state.mode] || null;
      return { group: name, mode: state.mode, run: run ? run.run : null, tag: run ? run.tag : null, info: run, step: null, batch: null, samples: [], error: null, broken: null };
    });
    this.renderNotices(columns);

    const stepLists = new Map();
    const listing = []; // runs whose steps are still arriving (only their newest page)
    const needSteps = columns.filter((column) => column.run && !this.stepsByRun.has(seriesKey(column.run, column.tag)));
    if (needSteps.length && !quiet) this.markLoading("Loading steps…");
    await Promise.all(
      columns.map(async (column) => {
        if (!column.run) return;
        try {
          const list = await this.loadSteps(column.run, column.tag, state.step);
          stepLists.set(seriesKey(column.run, column.tag), list.steps);
          if (!list.complete) listing.push(list);
        } catch (error) {
          column.error = `Could not load the steps of ${column.run}: ${error.message}`;
        }
      }),
    );
    if (token !== this.renderToken) return;

    const steps = unionSteps([...stepLists.values()]);
    const following = state.step === null;
    const target = nearestStep(steps, state.step);
    if (!following && target !== null && target !== state.step) {
      // A step these runs did not log (a typed step, an old link): show the nearest.
      this.note = `Step ${state.step} was not logged; showing the nearest, ${target}.`;
      this.state = { ...this.state, step: target };
      writeState(this.state);
    }
    const stepIndex = target === null ? -1 : indexOfStep(steps, target);
    for (const column of columns) {
      if (column.run && stepLists.has(seriesKey(column.run, column.tag))) column.step = nearestStep(stepLists.get(seriesKey(column.run, column.tag)), target);
    }
    this.view = { steps, stepIndex, target, columns, following, listing };
    this.updateToolbar([]);

    if (steps.length === 0 && !columns.some((column) => column.error)) {
      this.showState("empty", `No ${state.mode} steps kept yet for the selected runs.`, [
        h("p", { text: "Steps appear here when TensorBoard reloads after the logger writes them (TensorBoard's ⟳ button, or its auto-reload)." }),
      ]);
      this.renderDetail();
      if (historyChanged) this.renderHistoryPanel();
      return;
    }

    const pending = columns.filter((column) => column.run && column.step !== null && !api.isBatchCached(column.run, column.step, column.tag));
    if (pending.length) this.markLoading(`Loading step ${target}…`);
    await Promise.all(
      columns.map(async (column) => {
        if (!column.run || column.step === null || column.error) return;
        try {
          const batch = await api.fetchBatch(column.run, column.step, column.tag);
          if (batch.error) column.broken = batch.error; // a broken step: its record is unusable
          else column.batch = batch;
        } catch (error) {
          column.error = `Could not load step ${column.step} of ${column.run}: ${error.message}`;
        }
      }),
    );
    if (token !== this.renderToken) return;

    const filters = { wrong: state.wrong, label: state.label, pred: state.pred, q: state.q, flag: state.flag, max_iou: state.max_iou };
    for (const column of columns) {
      if (!column.batch) continue;
      column.samples = sortSamples(filterSamples(column.batch.samples || [], column.batch.task, filters), state.sort);
    }
    this.updateToolbar(this.shownBatches());
    this.renderMain(columns);
    this.renderDetail();
    if (historyChanged) this.renderHistoryPanel();
    else this.markHistoryCurrent();
    this.prefetchNeighbours(columns, stepLists);
  }

  updateToolbar(batches) {
    const counts = new Map();
    for (const batch of batches) {
      for (const sample of batch.samples || []) {
        for (const flag of sample.flags || []) counts.set(flag, (counts.get(flag) || 0) + 1);
      }
    }
    const flagOptions = FLAGS.map((flag) => ({ value: flag, text: counts.has(flag) ? `${flag} (${counts.get(flag)})` : flag }));
    this.toolbar.update({
      state: this.state,
      groups: this.groups,
      steps: this.view.steps,
      stepIndex: this.view.stepIndex,
      following: this.view.following,
      note: this.note || this.listingNote(),
      classOptions: batches.length ? classOptions(batches) : this.lastClassOptions || [],
      flagOptions,
      hasMasks: batches.length ? batches.some((batch) => maskKind(batch)) : Boolean(this.lastHasMasks),
    });
    if (batches.length) {
      this.lastClassOptions = classOptions(batches);
      this.lastHasMasks = batches.some((batch) => maskKind(batch));
    }
  }

  /** While pages of steps are arriving: how many of how many are listed. */
  listingNote() {
    const listing = this.view.listing || [];
    if (!listing.length) return "";
    const total = listing.reduce((sum, list) => sum + list.total, 0);
    const shown = listing.reduce((sum, list) => sum + list.steps.length, 0);
    return `Listing steps: the newest ${shown.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} so far…`;
  }

  renderMain(columns) {
    // TensorBoard's reload redraws nothing when nothing changed (no lost clicks).
    const signature = JSON.stringify([
      this.view.target,
      this.state.masks,
      columns.map((column) => [column.group, column.run, column.step, column.error, column.broken, column.batch && column.batch.wall_time, column.samples.map((sample) => sample.index)]),
    ]);
    if (signature === this.mainSignature && this.main.querySelector(".columns")) {
      this.markReady();
      return;
    }
    this.mainSignature = signature;
    const handlers = {
      onOpen: (column, sample) => {
        this.lastFocus = { group: column.group, index: sample.index };
        this.setState({ open: { group: column.group, index: sample.index } });
      },
      onHistory: (sample) => this.setState({ history: sample.filename }),
      onClearFilters: () => this.setState({ wrong: false, label: "", pred: "", q: "", flag: "", max_iou: "" }),
      masks: this.state.masks,
    };
    const focusedTile = document.activeElement && document.activeElement.closest ? document.activeElement.closest(".tile") : null;
    const focusPlace = focusedTile
      ? { group: focusedTile.closest(".column")?.dataset.group, index: [...focusedTile.parentElement.children].indexOf(focusedTile) }
      : null;
    replaceChildren(this.main, renderColumns(columns, this.view.target, handlers));
    this.markReady();
    if (focusPlace) {
      // Stepping with the keyboard keeps the focus on the same place in the grid.
      const column = [...this.main.querySelectorAll(".column")].find((item) => item.dataset.group === focusPlace.group);
      const tiles = column ? column.querySelectorAll(".tile") : [];
      if (tiles.length) tiles[Math.min(focusPlace.index, tiles.length - 1)].focus({ preventScroll: true });
    }
  }

  markReady() {
    this.main.classList.remove("is-loading");
    this.main.dataset.status = "ready";
    this.main.dataset.step = String(this.view.target);
    this.main.removeAttribute("aria-busy");
  }

  renderNotices(columns) {
    const items = [];
    for (const column of columns) {
      const run = column.info;
      if (!run) continue;
      const name = `${column.group} (${column.mode})`;
      const kept = run.steps_kept;
      const logged = run.steps_logged;
      if (Number.isFinite(kept) && Number.isFinite(logged) && kept < logged) {
        items.push(
          h(
            "div",
            { className: "notice warn", dataset: { kind: "retention", run: run.run } },
            h("strong", { text: `${name}: ${kept} of ${logged} steps kept.` }),
            " TensorBoard keeps only a sample of each plugin's steps. To keep all, restart it with ",
            h("code", { text: KEEP_ALL_FLAG }),
            ".",
          ),
        );
      }
      const dropped = run.dropped || {};
      const reasons = [
        ["queue_full", "the background writer was behind (log fewer steps or samples)"],
        ["error", "encoding or writing failed"],
        ["not_image", "the input could not be shown as an image"],
      ].filter(([reason]) => dropped[reason] > 0);
      if (reasons.length) {
        const total = reasons.reduce((sum, [reason]) => sum + dropped[reason], 0);
        items.push(
          h("div", { className: "notice warn", dataset: { kind: "dropped", run: run.run } },
            h("strong", { text: `${name}: the logger dropped ${plural(total, "batch", "batches")}` }),
            ` — ${reasons.map(([reason, why]) => `${dropped[reason]} because ${why}`).join("; ")}.`,
          ),
        );
      }
      for (const warning of run.warnings || []) {
        items.push(h("div", { className: "notice", dataset: { kind: "warning", run: run.run } }, h("strong", { text: `${name}: ` }), String(warning)));
      }
    }
    replaceChildren(this.notices, items);
  }

  markLoading(text) {
    this.main.dataset.status = "loading";
    this.main.setAttribute("aria-busy", "true");
    if (this.main.querySelector(".columns")) {
      this.main.classList.add("is-loading");
    } else {
      this.showState("loading", text);
    }
  }

  showState(status, title, extra = []) {
    this.mainSignature = null;
    this.main.dataset.status = status;
    this.main.classList.remove("is-loading");
    if (status === "loading") this.main.setAttribute("aria-busy", "true");
    else this.main.removeAttribute("aria-busy");
    replaceChildren(
      this.main,
      h(
        "div",
        { className: `state-box ${status}` },
        status === "loading" ? h("div", { className: "spinner", attrs: { "aria-hidden": "true" } }) : null,
        h("h2", { text: title }),
        extra,
      ),
    );
  }

  showEmpty() {
    this.header.hidden = true;
    this.hints.hidden = true;
    this.showState("empty", "No batch images logged yet", [
      h("p", { text: "Add the BatchImageLogger callback to model.fit and point TensorBoard at the same log directory:" }),
      h("pre", { className: "snippet" }, h("code", { text: SNIPPET })),
      h("p", {}, "Then run ", h("code", { text: "tensorboard --logdir logs" }), ". New steps show up when TensorBoard reloads (its ⟳ button, or auto-reload every 30 seconds)."),
      h("p", {}, "To caption images with their files, make ", h("code", { text: "x" }), " a dict holding the image and a ", h("code", { text: '"filename"' }), " string (or an integer ", h("code", { text: '"sample_id"' }), " with ", h("code", { text: "filenames=[...]" }), ")."),
    ]);
  }

  showError(title, error) {
    const status = error && error.status;
    const hint =
      status === 0
        ? ""
        : "If this persists, check the terminal running TensorBoard for errors, then press TensorBoard's ⟳ reload button.";
    if (!this.groups.size) {
      this.header.hidden = true;
      this.hints.hidden = true;
    }
    this.showState("error", title, [
      h("p", { className: "error-message", text: error ? error.message : "unknown error" }),
      hint ? h("p", { text: hint }) : null,
      h("button", { className: "button", type: "button", text: "Try again", on: { click: () => this.start() } }),
    ]);
  }

  // -- detail view ------------------------------------------------------------------

  renderDetail() {
    const open = this.state.open;
    const column = open && this.view.columns.find((item) => item.group === open.group);
    const batch = column && column.batch;
    const sample = batch && (batch.samples || [])[open.index];
    const wasOpen = Boolean(this.overlayRoot.firstChild);
    if (!sample) {
      replaceChildren(this.overlayRoot);
      this.setInert(false);
      if (wasOpen && this.lastFocus) this.focusTile(this.lastFocus);
      return;
    }
    const list = column.samples.includes(sample) ? column.samples : sortSamples(batch.samples, this.state.sort);
    const index = list.indexOf(sample);
    const go = (offset) => {
      const next = list[index + offset];
      if (next) {
        this.lastFocus = { group: column.group, index: next.index };
        this.setState({ open: { group: column.group, index: next.index } });
      }
    };
    const overlay = renderDetail({
      sample,
      batch,
      group: column.group,
      index,
      count: list.length,
      onPrev: () => go(-1),
      onNext: () => go(1),
      onClose: () => this.setState({ open: null }),
      onHistory: () => this.setState({ history: sample.filename, open: null }),
      masks: this.state.masks,
      onMasks: (masks) => this.setState({ masks }),
    });
    replaceChildren(this.overlayRoot, overlay);
    this.moveDetail = go;
    this.setInert(true);
    overlay.focusTarget.focus({ preventScroll: true });
  }

  setInert(inert) {
    for (const element of [this.header, this.main, this.notices, this.historyRoot]) element.inert = inert;
  }

  focusTile({ group, index }) {
    const column = [...this.main.querySelectorAll(".column")].find((item) => item.dataset.group === group);
    const tile = column && column.querySelector(`.tile[data-index="${Number(index)}"]`);
    if (tile) tile.focus();
  }

  // -- history strip ------------------------------------------------------------------

  async renderHistoryPanel() {
    const filename = this.state.history;
    if (filename === null) {
      replaceChildren(this.historyRoot);
      document.body.classList.remove("has-history");
      return;
    }
    const panel = (found, error) =>
      renderHistory({
        filename,
        appearances: found ? found.appearances : null,
        total: found ? found.total : 0,
        error,
        groupOf: (item) => this.runGroup.get(seriesKey(item.run, item.tag)) ?? item.run,
        current: this.view.columns.filter((column) => column.batch).map((column) => ({ run: column.run, step: column.step })),
        onPick: (item) => this.pickAppearance(item),
        onClose: () => this.setState({ history: null }),
      });
    document.body.classList.add("has-history");
    if (!this.historyByFile.has(filename)) {
      const pending = api.fetchHistory({ filename });
      pending.catch(() => this.historyByFile.delete(filename));
      this.historyByFile.set(filename, pending);
      const shown = this.historyRoot.firstChild;
      if (!shown || shown.dataset.filename !== filename) replaceChildren(this.historyRoot, panel(null, null));
    }
    try {
      const found = await this.historyByFile.get(filename);
      if (this.state.history === filename) replaceChildren(this.historyRoot, panel(found, null));
    } catch (error) {
      if (this.state.history === filename) replaceChildren(this.historyRoot, panel(null, error.message));
    }
    this.markHistoryCurrent();
  }

  markHistoryCurrent() {
    const current = this.view.columns.filter((column) => column.batch);
    for (const item of this.historyRoot.querySelectorAll(".strip-item")) {
      const isCurrent = current.some((column) => column.run === item.dataset.run && String(column.step) === item.dataset.step);
      item.classList.toggle("is-current", isCurrent);
      if (isCurrent) item.setAttribute("aria-current", "step");
      else item.removeAttribute("aria-current");
    }
  }

  /** Goes to an appearance's run and step, and opens that sample (by its index in the record). */
  pickAppearance(item) {
    const group = this.runGroup.get(seriesKey(item.run, item.tag)) ?? item.run;
    const runs = this.state.runs.includes(group) ? this.state.runs : [...this.state.runs, group];
    const open = Number.isInteger(item.index) ? { group, index: item.index } : null;
    this.lastFocus = open;
    this.setState({ runs, mode: MODES.includes(item.mode) ? item.mode : modeOf(item), step: item.step, open });
  }

  // -- navigation ---------------------------------------------------------------------

  /** move: -1 / +1 (previous / next logged step), {step} (exact), {index} (scrubber). */
  moveStep(move) {
    const { steps, stepIndex } = this.view;
    if (!steps.length) return;
    let index;
    if (move === -1 || move === 1) index = Math.max(0, Math.min(steps.length - 1, stepIndex + move));
    else if (move && Number.isInteger(move.index)) index = Math.max(0, Math.min(steps.length - 1, move.index));
    else if (move && Number.isFinite(move.step)) {
      // update() resolves a step that was not logged to the nearest, and says so.
      if (move.step !== this.state.step) this.setState({ step: move.step, open: null });
      return;
    } else return;
    if (index === stepIndex && this.state.step !== null) return;
    this.setState({ step: steps[index], open: null });
  }

  onKey(event) {
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) return;
    const target = event.target instanceof Element ? event.target : null;
    const typing = target && target.matches("input, select, textarea") && !target.matches("input[type=checkbox]");
    if (event.key === "Escape") {
      if (this.state.view === "dataset" && this.state.ds_sample) this.setState({ ds_sample: null });
      else if (this.state.open) this.setState({ open: null });
      else if (this.state.history !== null) this.setState({ history: null });
      else if (typing) target.blur();
      else return;
      event.preventDefault();
      return;
    }
    if (typing) return;
    if (this.state.view === "dataset") return;
    if (this.state.open) {
      if (event.key === "ArrowLeft") this.moveDetail?.(-1);
      else if (event.key === "ArrowRight") this.moveDetail?.(1);
      else return;
      event.preventDefault();
      return;
    }
    const tile = target && target.closest(".tile");
    if (tile && ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"].includes(event.key)) {
      this.moveTileFocus(tile, event.key);
      event.preventDefault();
      return;
    }
    const actions = {
      ArrowLeft: () => this.moveStep(-1),
      ArrowRight: () => this.moveStep(1),
      "[": () => this.moveStep(-1),
      "]": () => this.moveStep(1),
      PageUp: () => this.moveStep(-1),
      PageDown: () => this.moveStep(1),
      Home: () => this.moveStep({ index: 0 }),
      End: () => this.setState({ step: null, open: null }),
      ArrowDown: () => this.main.querySelector(".tile")?.focus(),
    };
    if (target && target.closest(".history") && event.key.startsWith("Arrow")) return;
    const action = actions[event.key];
    if (!action) return;
    event.preventDefault();
    action();
  }

  moveTileFocus(tile, key) {
    const tiles = [...tile.parentElement.children];
    const index = tiles.indexOf(tile);
    const top = tiles[0].offsetTop;
    const perRow = Math.max(1, tiles.filter((item) => item.offsetTop === top).length);
    const offset = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -perRow, ArrowDown: perRow }[key];
    const next = tiles[index + offset];
    if (next) next.focus();
    else if (key === "ArrowUp") this.toolbar.stepInput.focus();
  }

  prefetchNeighbours(columns, stepLists) {
    const { steps, stepIndex } = this.view;
    for (const neighbour of [steps[stepIndex + 1], steps[stepIndex - 1]]) {
      if (neighbour === undefined) continue;
      for (const column of columns) {
        const list = column.run && stepLists.get(seriesKey(column.run, column.tag));
        if (!list) continue;
        const step = nearestStep(list, neighbour);
        if (!api.isBatchCached(column.run, step, column.tag)) api.fetchBatch(column.run, step, column.tag).catch(() => {});
      }
    }
  }
}
