// The notices above the grid, per shown run: steps TensorBoard did not keep, batches
// the logger dropped, and the logger's own warnings (docs/api.md, /runs).

import { PLUGIN_NAME } from "./contract.js";
import { h } from "./dom.js";
import { plural } from "./format.js";
import { groupLabel } from "./runs.js";

const KEEP_ALL_FLAG = `--samples_per_plugin ${PLUGIN_NAME}=0`;

const DROP_REASONS = [
  ["queue_full", "the background writer was behind (log fewer steps or samples)"],
  ["error", "encoding or writing failed"],
  ["not_image", "the input could not be shown as an image"],
];

/** The notices of the shown columns ({group, mode, info: the run}): a list of nodes. */
export function renderNotices(columns) {
  const items = [];
  for (const column of columns) {
    const run = column.info;
    if (!run) continue;
    const name = `${groupLabel(column.group)} (${column.mode})`;
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
    const reasons = DROP_REASONS.filter(([reason]) => dropped[reason] > 0);
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
  return items;
}
