// What opens over or below the grid, following the state: the detail dialog of the
// opened sample (detail.js builds it) and the history strip of a file (history.js).
// Each finds what it shows in the current columns, keeps the focus where the user
// expects it, and asks the controller for state changes through callbacks.

import { renderDetail } from "./detail.js";
import { replaceChildren } from "./dom.js";
import { renderHistory } from "./history.js";
import { focusTile } from "./navigation.js";
import { sortSamples } from "./samples.js";

export class DetailOverlay {
  /**
   * root: the element the dialog goes in; background: what becomes inert under it;
   * main: the grid, whose tile gets the focus back; setState(patch).
   */
  constructor({ root, background, main, setState }) {
    this.root = root;
    this.background = background;
    this.main = main;
    this.setState = setState;
    this.lastFocus = null; // {group, index}: the tile to focus when the dialog closes
    this.go = null;
  }

  /** The tile that gets the focus back when the dialog closes. */
  returnTo(place) {
    this.lastFocus = place;
  }

  /** To the previous (-1) or next (+1) sample of the shown order. */
  move(offset) {
    this.go?.(offset);
  }

  /** Shows the state's opened sample (`state.open`) of `columns`, or closes the dialog. */
  render(state, columns) {
    const open = state.open;
    const column = open && columns.find((item) => item.group === open.group);
    const batch = column && column.batch;
    const sample = batch && (batch.samples || [])[open.index];
    const wasOpen = Boolean(this.root.firstChild);
    if (!sample) {
      replaceChildren(this.root);
      this.setInert(false);
      if (wasOpen && this.lastFocus) focusTile(this.main, this.lastFocus);
      return;
    }
    const list = column.samples.includes(sample) ? column.samples : sortSamples(batch.samples, state.sort);
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
      masks: state.masks,
      onMasks: (masks) => this.setState({ masks }),
      boxes: state.boxes,
      onBoxes: (boxes) => this.setState({ boxes }),
    });
    replaceChildren(this.root, overlay);
    this.go = go;
    this.setInert(true);
    overlay.focusTarget.focus({ preventScroll: true });
  }

  setInert(inert) {
    for (const element of this.background) element.inert = inert;
  }
}

export class HistoryPanel {
  /**
   * root: the element the strip goes in; data: gallery_data.js's GalleryData (the
   * histories, the experiments of runs); wanted() -> the filename the state asks for
   * (null: none); columns() -> the shown columns; onPick(appearance); onClose().
   */
  constructor({ root, data, wanted, columns, onPick, onClose, boxes = () => "both" }) {
    this.boxes = boxes;
    this.root = root;
    this.data = data;
    this.wanted = wanted;
    this.columns = columns;
    this.onPick = onPick;
    this.onClose = onClose;
  }

  /** Shows the history of the state's file (loading first, if it is not known yet). */
  async render() {
    const filename = this.wanted();
    if (filename === null) {
      replaceChildren(this.root);
      document.body.classList.remove("has-history");
      return;
    }
    const panel = (found, error) =>
      renderHistory({
        filename,
        appearances: found ? found.appearances : null,
        total: found ? found.total : 0,
        error,
        groupOf: (item) => this.data.groupOf(item.run, item.tag),
        current: this.shownBatches(),
        onPick: this.onPick,
        onClose: this.onClose,
        boxes: this.boxes(),
      });
    document.body.classList.add("has-history");
    if (!this.data.hasHistory(filename)) {
      this.data.history(filename);
      const shown = this.root.firstChild;
      if (!shown || shown.dataset.filename !== filename) replaceChildren(this.root, panel(null, null));
    }
    try {
      const found = await this.data.history(filename);
      if (this.wanted() === filename) replaceChildren(this.root, panel(found, null));
    } catch (error) {
      if (this.wanted() === filename) replaceChildren(this.root, panel(null, error.message));
    }
    this.markCurrent();
  }

  /** The shown steps with a batch: [{run, step}]. */
  shownBatches() {
    return this.columns().filter((column) => column.batch).map((column) => ({ run: column.run, step: column.step }));
  }

  /** Marks the strip's items that are the shown steps. */
  markCurrent() {
    const current = this.columns().filter((column) => column.batch);
    for (const item of this.root.querySelectorAll(".strip-item")) {
      const isCurrent = current.some((column) => column.run === item.dataset.run && String(column.step) === item.dataset.step);
      item.classList.toggle("is-current", isCurrent);
      if (isCurrent) item.setAttribute("aria-current", "step");
      else item.removeAttribute("aria-current");
    }
  }
}
