// The history strip of one file: every appearance across steps and runs.

import { h } from "./dom.js";
import { formatClass, formatNumber, formatPercent, formatPrediction, plural } from "./format.js";
import { boxOverlay } from "./boxes.js";
import { closeButton, messageBox, sampleImage, verdictBadge, verdictClass } from "./widgets.js";

/**
 * panel: {filename, appearances | null (loading), total, error, groupOf(appearance) -> name,
 *         current: {run, step}, onPick(appearance), onClose}
 */
export function renderHistory({ filename, appearances, total, error, groupOf, current, onPick, onClose, boxes = "both" }) {
  let body;
  let subtitle = "";
  if (error) {
    body = messageBox(`Could not load the history: ${error}`, "error");
  } else if (!appearances) {
    body = messageBox("Loading the history…", "loading");
  } else if (!appearances.length) {
    body = messageBox("This file appears in no kept step.");
  } else {
    const runs = new Set(appearances.map((item) => item.run));
    subtitle = `${plural(total, "appearance")} in ${runs.size === 1 ? "1 run" : `${runs.size} runs`}`;
    if (total > appearances.length) subtitle += ` (the first ${appearances.length} shown)`;
    body = h(
      "ol",
      { className: "strip" },
      appearances.map((item) => {
        const isCurrent = current.some((place) => place.run === item.run && place.step === item.step);
        return h(
          "li",
          {},
          h(
            "button",
            {
              type: "button",
              className: "strip-item" + (isCurrent ? " is-current" : "") + verdictClass(item),
              dataset: { run: item.run, step: String(item.step), index: String(item.index), position: String(item.position) },
              title: `${item.run} · step ${item.step} · epoch ${item.epoch} · batch ${item.batch} · #${item.position}`,
              on: { click: () => onPick(item) },
            },
            h("span", { className: "strip-thumb" }, sampleImage(item), boxOverlay(item, {}, boxes), verdictBadge(item, "on-image compact")),
            h("span", { className: "strip-run", text: groupOf(item), title: item.run }),
            h(
              "span",
              { className: "strip-step" },
              h("span", { text: `step ${item.step}`, dataset: { field: "step" } }),
              h("span", { className: "strip-mode", text: item.mode === "validation" ? "val" : item.mode ?? "" }),
            ),
            h(
              "span",
              { className: "strip-pred" },
              h("span", { className: "prediction", text: formatPrediction(item) }),
              item.confidence == null ? null : h("span", { className: "confidence", text: formatPercent(item.confidence) }),
            ),
            h("span", { className: "strip-loss" }, h("span", { className: "cap-key", text: "loss" }), h("span", { className: "loss", text: formatNumber(item.loss) })),
          ),
        );
      }),
    );
  }
  return h(
    "section",
    { className: "history", attrs: { "aria-label": `History of ${filename}` }, dataset: { filename } },
    h(
      "header",
      { className: "history-header" },
      h("h2", {}, "History of ", h("span", { className: "history-filename", text: filename })),
      h("span", { className: "history-count", text: subtitle }),
      closeButton("Close history", onClose),
    ),
    body,
  );
}
