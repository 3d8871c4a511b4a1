// The main area of the Batches view: the columns of batches (compare.js), or a box that
// says loading, empty or error. `data-status` (loading, ready, empty, error) and
// `data-step` tell the tests and assistive technology where it stands. Redrawing the
// same columns draws nothing (TensorBoard's reload loses no click), and a redraw keeps
// the keyboard focus on the same place in the grid.

import { renderColumns } from "./compare.js";
import { h, replaceChildren } from "./dom.js";
import { focusedTilePlace, focusTileAt } from "./navigation.js";

const SNIPPET = `from tb_batch_images import BatchImageLogger

model.fit(
    train_data,
    validation_data=val_data,
    callbacks=[BatchImageLogger("logs/my_run")],
)`;

export class MainPanel {
  constructor() {
    this.element = h("main", { className: "main", dataset: { status: "loading" } });
    this.signature = null;
  }

  /** Whether the columns are drawn (a redraw then only dims them while loading). */
  hasColumns() {
    return Boolean(this.element.querySelector(".columns"));
  }

  /** Draws the columns at `target` (unless the same are drawn), then marks them ready. */
  showColumns(columns, target, masks, handlers) {
    const signature = JSON.stringify([
      target,
      masks,
      handlers.boxes,
      columns.map((column) => [column.group, column.run, column.step, column.error, column.broken, column.batch && column.batch.wall_time, column.samples.map((sample) => sample.index)]),
    ]);
    if (signature === this.signature && this.hasColumns()) {
      this.markReady(target);
      return;
    }
    this.signature = signature;
    const focusPlace = focusedTilePlace();
    replaceChildren(this.element, renderColumns(columns, target, { ...handlers, masks }));
    this.markReady(target);
    // Stepping with the keyboard keeps the focus on the same place in the grid.
    if (focusPlace) focusTileAt(this.element, focusPlace);
  }

  markReady(target) {
    this.element.classList.remove("is-loading");
    this.element.dataset.status = "ready";
    this.element.dataset.step = String(target);
    this.element.removeAttribute("aria-busy");
  }

  markLoading(text) {
    this.element.dataset.status = "loading";
    this.element.setAttribute("aria-busy", "true");
    if (this.hasColumns()) {
      this.element.classList.add("is-loading");
    } else {
      this.showState("loading", text);
    }
  }

  showState(status, title, extra = []) {
    this.signature = null;
    this.element.dataset.status = status;
    this.element.classList.remove("is-loading");
    if (status === "loading") this.element.setAttribute("aria-busy", "true");
    else this.element.removeAttribute("aria-busy");
    replaceChildren(
      this.element,
      h(
        "div",
        { className: `state-box ${status}` },
        status === "loading" ? h("div", { className: "spinner", attrs: { "aria-hidden": "true" } }) : null,
        h("h2", { text: title }),
        extra,
      ),
    );
  }

  /** Nothing logged yet: how to log, and how TensorBoard shows new steps. */
  showEmpty() {
    this.showState("empty", "No batch images logged yet", [
      h("p", { text: "Add the BatchImageLogger callback to model.fit and point TensorBoard at the same log directory:" }),
      h("pre", { className: "snippet" }, h("code", { text: SNIPPET })),
      h("p", {}, "Then run ", h("code", { text: "tensorboard --logdir logs" }), ". New steps show up when TensorBoard reloads (its ⟳ button, or auto-reload every 30 seconds)."),
      h("p", {}, "To caption images with their files, make ", h("code", { text: "x" }), " a dict holding the image and a ", h("code", { text: '"filename"' }), " string (or an integer ", h("code", { text: '"sample_id"' }), " with ", h("code", { text: "filenames=[...]" }), ")."),
    ]);
  }

  /** An error (an ApiError or a bug), what to try, and a button that calls `onRetry`. */
  showError(title, error, onRetry) {
    const status = error && error.status;
    const hint =
      status === 0
        ? ""
        : "If this persists, check the terminal running TensorBoard for errors, then press TensorBoard's ⟳ reload button.";
    this.showState("error", title, [
      h("p", { className: "error-message", text: error ? error.message : "unknown error" }),
      hint ? h("p", { text: hint }) : null,
      h("button", { className: "button", type: "button", text: "Try again", on: { click: onRetry } }),
    ]);
  }
}
