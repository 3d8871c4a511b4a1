// The gallery controller: builds the page, holds what is shown, and on every change of
// the state decides what to load and redraw. The parts it drives, each with one job:
// state_sync.js (the state, kept in the URL), gallery_data.js (runs, steps, batches
// and histories from the API), navigation.js (step moves and keys), main_panel.js,
// notices.js, overlays.js and toolbar.js (what is drawn), dataset.js (the Dataset view).

import { DatasetView } from "./dataset.js";
import { h, replaceChildren } from "./dom.js";
import { GalleryData, listingNote } from "./gallery_data.js";
import { LossCurve } from "./loss_curve.js";
import { MainPanel } from "./main_panel.js";
import { hasBoxes } from "./boxes.js";
import { maskKind } from "./masks.js";
import { appearancePatch, handleKey, stepPatch } from "./navigation.js";
import { renderNotices } from "./notices.js";
import { DetailOverlay, HistoryPanel } from "./overlays.js";
import { groupName, indexOfStep, nearestStep, seriesKey, unionSteps } from "./runs.js";
import { classOptions, filterSamples, flagOptions, sortSamples } from "./samples.js";
import { fitStateToRuns, StateSync } from "./state_sync.js";
import { Toolbar } from "./toolbar.js";

const HINTS = "Keys: ←/→ or [ ] steps · Home/End first/latest · ↓ into the grid · arrows move between tiles · Enter opens · Escape closes";

export class GalleryApp {
  constructor(root) {
    this.root = root;
    this.sync = new StateSync();
    this.data = new GalleryData();
    this.renderToken = 0;
    this.view = { steps: [], stepIndex: -1, target: null, columns: [] };
    this.note = "";

    this.toolbar = new Toolbar({
      onChange: (patch) => this.setState(patch),
      onStep: (move) => this.moveStep(move),
    });
    this.notices = h("div", { className: "notices", attrs: { role: "status" } });
    // The training run's loss curve: a click opens a step (loss_curve.js).
    this.lossCurve = new LossCurve({ onOpenStep: (step) => this.setState({ step, open: null }) });
    this.panel = new MainPanel();
    this.main = this.panel.element;
    this.historyRoot = h("div", { className: "history-root" });
    this.overlayRoot = h("div", { className: "overlay-root" });
    this.header = h("header", { className: "app-header" }, this.toolbar.element);
    this.hints = h("footer", { className: "key-hints", text: HINTS });
    this.detail = new DetailOverlay({
      root: this.overlayRoot,
      background: [this.header, this.main, this.notices, this.historyRoot],
      main: this.main,
      setState: (patch) => this.setState(patch),
    });
    this.history = new HistoryPanel({
      root: this.historyRoot,
      data: this.data,
      wanted: () => this.state.history,
      columns: () => this.view.columns,
      onPick: (item) => this.pickAppearance(item),
      onClose: () => this.setState({ history: null }),
      boxes: () => this.state.boxes,
    });
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
      this.lossCurve.element,
      this.main,
      this.hints,
      this.historyRoot,
      this.overlayRoot,
      this.dataset.element,
    );
    const actions = {
      setState: (patch) => this.setState(patch),
      moveStep: (move) => this.moveStep(move),
      moveDetail: (offset) => this.detail.move(offset),
      firstTile: () => this.main.querySelector(".tile"),
      stepInput: () => this.toolbar.stepInput,
    };
    document.addEventListener("keydown", (event) => handleKey(event, this.state, actions));
    // A link pasted into the same tab changes only the fragment: follow it.
    this.sync.follow((before, after) => {
      this.note = "";
      this.update({ historyChanged: after.history !== before.history });
    });
  }

  /** The view state (state.js); change it with setState. */
  get state() {
    return this.sync.state;
  }

  // -- loading ------------------------------------------------------------------

  async start() {
    this.panel.showState("loading", "Loading runs…");
    await this.loadRuns();
  }

  /** TensorBoard's reload (its button and auto-reload): new runs and steps, same place. */
  async reload() {
    this.data.clear();
    await this.loadRuns({ quiet: true });
    if (this.lossCurve.run) this.lossCurve.show(this.lossCurve.run, { reload: true });
  }

  async loadRuns({ quiet = false } = {}) {
    try {
      await this.data.loadRuns();
    } catch (error) {
      if (!quiet || !this.data.groups.size) this.showError("Could not load the runs", error);
      return;
    }
    if (!this.data.groups.size && this.state.view !== "dataset") {
      this.showEmpty();
      return;
    }
    this.header.hidden = false;
    this.hints.hidden = false;
    await this.update({ historyChanged: true, quiet });
  }

  // -- state ----------------------------------------------------------------------

  /** Applies a patch to the state, writes the URL, and redraws what changed. */
  setState(patch) {
    const changed = this.sync.patch(patch);
    if (!changed.length) return;
    if (changed.some((key) => ["runs", "mode", "step"].includes(key))) this.note = "";
    if (changed.includes("mask_opacity") || changed.includes("box_opacity")) this.applyMaskOpacity();
    if (changed.every((key) => key === "mask_opacity" || key === "box_opacity")) {
      this.updateToolbar(this.shownBatches());
      return; // a CSS variable: nothing to redraw
    }
    const onlyOverlays = changed.every((key) => key === "open" || key === "history");
    if (onlyOverlays && this.data.groups.size) {
      if (changed.includes("open")) this.detail.render(this.state, this.view.columns);
      if (changed.includes("history")) this.history.render();
      return;
    }
    this.update({ historyChanged: changed.includes("history") || changed.includes("boxes") });
  }

  /** Goes to another logged step (navigation.js's stepPatch says which). */
  moveStep(move) {
    const patch = stepPatch(move, this.view, this.state.step);
    if (patch) this.setState(patch);
  }

  /** Goes to an appearance's run and step, and opens that sample. */
  pickAppearance(item) {
    const patch = appearancePatch(item, this.state, this.data.groupOf(item.run, item.tag));
    this.detail.returnTo(patch.open);
    this.setState(patch);
  }

  // -- rendering ------------------------------------------------------------------

  /** Redraws from the state; `quiet` (TensorBoard's reload) shows no loading state. */
  async update(options = {}) {
    this.applyMaskOpacity();
    try {
      if (this.showView()) await this.dataset.render(this.state);
      else if (!this.data.groups.size) this.showEmpty(); // e.g. only the data map was logged
      else await this.render(options);
    } catch (error) {
      // A bug, not a bad answer (answers.js checked those): say so, and stay usable.
      console.error(error);
      this.showError("The gallery could not show this view", error);
    }
  }

  /** The opacity sliders' values, as the CSS variables every mask canvas and box overlay read. */
  applyMaskOpacity() {
    document.documentElement.style.setProperty("--mask-opacity", String(this.state.mask_opacity / 100));
    document.documentElement.style.setProperty("--box-opacity", String(this.state.box_opacity / 100));
  }

  shownBatches() {
    return this.view.columns.map((column) => column.batch).filter(Boolean);
  }

  /** Shows the chosen view's elements; true when it is the Dataset view. */
  showView() {
    const dataset = this.state.view === "dataset";
    for (const button of this.viewButtons) button.setAttribute("aria-pressed", String(button.dataset.view === this.state.view));
    this.dataset.element.hidden = !dataset;
    if (dataset) this.lossCurve.element.hidden = true;
    for (const element of [this.header, this.notices, this.main, this.hints, this.historyRoot, this.overlayRoot]) element.hidden = dataset || (element === this.header || element === this.hints ? !this.data.groups.size : false);
    return dataset;
  }

  /** The Batches view: columns, their steps, their batches, then what is drawn of them. */
  async render({ historyChanged = false, quiet = false } = {}) {
    if (!this.data.groups.size) return;
    const token = ++this.renderToken;
    this.sync.replace(fitStateToRuns(this.state, this.data.groups));
    const state = this.state;
    const columns = this.data.columnsFor(state);
    replaceChildren(this.notices, renderNotices(columns));
    const trainRun = state.mode === "train" ? columns.find((column) => column.run)?.run : null;
    this.lossCurve.show(trainRun || null); // not awaited: the grid does not wait for it

    if (columns.some((column) => this.data.needsSteps(column)) && !quiet) this.panel.markLoading("Loading steps…");
    // Runs whose first page of steps is shown while the rest arrive: draw again once
    // they are in, unless another render came after (the grid is kept: same step).
    const { stepLists, listing } = await this.data.loadStepLists(columns, state.step, () => {
      const current = this.renderToken;
      return () => {
        if (current === this.renderToken) this.update({ quiet: true });
      };
    });
    if (token !== this.renderToken) return;

    const steps = unionSteps([...stepLists.values()]);
    const following = state.step === null;
    const target = nearestStep(steps, state.step);
    if (!following && target !== null && target !== state.step) {
      // A step these runs did not log (a typed step, an old link): show the nearest.
      this.note = `Step ${state.step} was not logged; showing the nearest, ${target}.`;
      this.sync.replace({ ...this.state, step: target });
    }
    const stepIndex = target === null ? -1 : indexOfStep(steps, target);
    for (const column of columns) {
      if (column.run && stepLists.has(seriesKey(column.run, column.tag))) column.step = nearestStep(stepLists.get(seriesKey(column.run, column.tag)), target);
    }
    this.view = { steps, stepIndex, target, columns, following, listing };
    this.updateToolbar([]);

    if (steps.length === 0 && !columns.some((column) => column.error)) {
      this.panel.showState("empty", `No ${state.mode} steps kept yet for the selected runs.`, [
        h("p", { text: "Steps appear here when TensorBoard reloads after the logger writes them (TensorBoard's ⟳ button, or its auto-reload)." }),
      ]);
      this.detail.render(this.state, this.view.columns);
      if (historyChanged) this.history.render();
      return;
    }

    if (this.data.batchesToFetch(columns).length) this.panel.markLoading(`Loading step ${target}…`);
    await this.data.loadBatches(columns);
    if (token !== this.renderToken) return;

    const filters = { wrong: state.wrong, label: state.label, pred: state.pred, q: state.q, flag: state.flag, max_iou: state.max_iou, min_boxes: state.min_boxes, max_boxes: state.max_boxes };
    for (const column of columns) {
      if (!column.batch) continue;
      column.samples = sortSamples(filterSamples(column.batch.samples || [], column.batch.task, filters), state.sort);
    }
    this.updateToolbar(this.shownBatches());
    this.panel.showColumns(columns, this.view.target, this.state.masks, {
      boxes: this.state.boxes,
      onOpen: (column, sample) => {
        this.detail.returnTo({ group: column.group, index: sample.index });
        this.setState({ open: { group: column.group, index: sample.index } });
      },
      onHistory: (sample) => this.setState({ history: sample.filename }),
      onClearFilters: () => this.setState({ wrong: false, label: "", pred: "", q: "", flag: "", max_iou: "", min_boxes: "", max_boxes: "" }),
    });
    this.detail.render(this.state, this.view.columns);
    if (historyChanged) this.history.render();
    else this.history.markCurrent();
    this.data.prefetchNeighbours(columns, stepLists, steps, stepIndex);
  }

  updateToolbar(batches) {
    this.toolbar.update({
      state: this.state,
      groups: this.data.groups,
      steps: this.view.steps,
      stepIndex: this.view.stepIndex,
      following: this.view.following,
      note: this.note || listingNote(this.view.listing),
      classOptions: batches.length ? classOptions(batches) : this.lastClassOptions || [],
      flagOptions: flagOptions(batches),
      hasMasks: batches.length ? batches.some((batch) => maskKind(batch)) : Boolean(this.lastHasMasks),
      hasBoxes: batches.length ? batches.some((batch) => hasBoxes(batch)) : Boolean(this.lastHasBoxes),
    });
    if (batches.length) {
      this.lastClassOptions = classOptions(batches);
      this.lastHasMasks = batches.some((batch) => maskKind(batch));
      this.lastHasBoxes = batches.some((batch) => hasBoxes(batch));
    }
  }

  showEmpty() {
    this.header.hidden = true;
    this.hints.hidden = true;
    this.panel.showEmpty();
  }

  showError(title, error) {
    if (!this.data.groups.size) {
      this.header.hidden = true;
      this.hints.hidden = true;
    }
    this.panel.showError(title, error, () => this.start());
  }
}
