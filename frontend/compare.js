// Runs side by side: one column per run, each showing its logged step nearest to
// the shared step, so stepping moves every column together.

import { h } from "./dom.js";
import { renderBatch } from "./gallery.js";
import { groupLabel } from "./runs.js";
import { messageBox } from "./widgets.js";

function columnHeader(column, targetStep) {
  let stepText = "";
  if (column.step !== null && column.step !== undefined) {
    stepText = column.step === targetStep ? `step ${column.step}` : `step ${column.step} (nearest to ${targetStep})`;
  }
  return h(
    "header",
    { className: "column-header" },
    h("h2", { className: "column-title", text: groupLabel(column.group), title: column.run ?? column.group }),
    h("span", {
      className: "column-step" + (column.step !== targetStep ? " is-nearest" : ""),
      text: stepText,
      dataset: { field: "column-step" },
    }),
  );
}

/**
 * One column.
 * column: {group, run, step, batch, samples, error, broken (a broken step's error)}
 */
export function renderColumn(column, targetStep, handlers) {
  let body;
  if (column.error) {
    body = messageBox(column.error, "error");
  } else if (column.broken !== null && column.broken !== undefined) {
    body = h(
      "div",
      { className: "state-box small error broken-step", dataset: { kind: "broken-step", step: String(column.step) } },
      h("h3", { text: `Step ${column.step} cannot be shown` }),
      h("p", { className: "error-message", text: `Its record in ${column.run} could not be used: ${column.broken}` }),
      h("p", { text: "Other steps and runs are not affected: step with ← / → or type another step." }),
    );
  } else if (!column.run) {
    body = messageBox(`No ${column.mode} batches in this run.`);
  } else if (column.step === null) {
    body = messageBox("No steps kept for this run yet.");
  } else if (!column.batch) {
    body = messageBox(`Loading step ${column.step}…`, "loading");
  } else {
    body = renderBatch({
      batch: column.batch,
      samples: column.samples,
      onOpen: (sample) => handlers.onOpen(column, sample),
      onHistory: (sample) => handlers.onHistory(sample),
      onClearFilters: handlers.onClearFilters,
      masks: handlers.masks,
      boxes: handlers.boxes,
    });
  }
  return h(
    "div",
    {
      className: "column",
      dataset: { group: column.group, run: column.run ?? "", step: column.step === null ? "" : String(column.step) },
    },
    handlers.showHeader ? columnHeader(column, targetStep) : null,
    body,
  );
}

/** All columns, side by side. */
export function renderColumns(columns, targetStep, handlers) {
  const compare = columns.length > 1;
  const container = h(
    "div",
    { className: compare ? "columns is-compare" : "columns" },
    columns.map((column) => renderColumn(column, targetStep, { ...handlers, showHeader: compare })),
  );
  if (compare) container.style.setProperty("--columns", String(columns.length));
  return container;
}
