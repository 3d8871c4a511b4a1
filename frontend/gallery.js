// The batch view: a header with the batch's facts and a grid of captioned tiles.

import { MASK_VALUES } from "./contract.js";
import { h } from "./dom.js";
import {
  TRIGGER_TEXT,
  formatClass,
  formatLoss,
  formatPrediction,
  formatNumber,
  formatPercent,
  formatValue,
  formatWallTime,
  plural,
  shortenFilename,
} from "./format.js";
import { boxSummary, hasBoxes, renderBoxLegend } from "./boxes.js";
import { maskKind, maskRange, renderLegend } from "./masks.js";
import { captionRow, flagBadges, pictureWithMask, sampleImage, verdictBadge, verdictClass, verdictOf } from "./widgets.js";

/** Caption rows of a sample with masks: mean IoU and pixel accuracy, or a value range. */
function maskRows(sample, batch, choice) {
  const kind = maskKind(batch);
  if (!kind) return [];
  if (kind === MASK_VALUES) {
    const range = maskRange(sample, choice);
    return [
      captionRow(
        "range",
        h("span", {
          className: "cap-value",
          dataset: { field: "mask_range" },
          text: range ? `${formatNumber(range[0])} – ${formatNumber(range[1])}` : "—",
          title: `the value range of the ${choice} map`,
        }),
      ),
    ];
  }
  return [
    captionRow("IoU", h("span", { className: "cap-value", dataset: { field: "mean_iou" }, text: formatPercent(sample.mean_iou), title: "mean intersection over union of the classes in the label or prediction" })),
    captionRow("acc", h("span", { className: "cap-value", dataset: { field: "pixel_accuracy" }, text: formatPercent(sample.pixel_accuracy), title: "pixel accuracy: the pixels where the prediction equals the label" })),
  ];
}

/** One thumbnail with its caption. */
/** The caption row of a detection sample: its boxes, predictions and mean IoU. */
function boxRows(sample, batch) {
  if (!hasBoxes(batch)) return [];
  return [captionRow("boxes", h("span", { className: "cap-value", dataset: { field: "boxes" }, text: boxSummary(sample), title: "label boxes (in y), predicted boxes, mean IoU of the label boxes" }))];
}

export function renderTile(sample, batch, { onOpen, onHistory, merged, masks = "prediction", boxes = "both" }) {
  const verdict = verdictOf(sample);
  const filename = sample.filename;
  const detectionOnly = Boolean(sample.boxes) && sample.label === null && sample.prediction === null;
  const label = formatClass(sample.label, sample.label_name);
  const prediction = formatPrediction(sample);
  const describe = [
    filename ?? `sample ${sample.position}`,
    `label ${label}`,
    `predicted ${prediction} ${formatPercent(sample.confidence)}`,
    verdict ? verdict.text : null,
    `loss ${formatLoss(sample)}`,
    sample.culprit ? "culprit of the trigger" : null,
    Number.isFinite(sample.mean_iou) ? `mean IoU ${formatPercent(sample.mean_iou)}` : null,
    Number.isFinite(sample.pixel_accuracy) ? `pixel accuracy ${formatPercent(sample.pixel_accuracy)}` : null,
    sample.boxes ? `boxes: ${boxSummary(sample)}` : null,
  ].filter(Boolean);
  const [picture, drawn] = pictureWithMask(sample, batch, masks, sampleImage(sample, { alt: filename ?? `sample ${sample.position}` }), boxes);

  const tile = h(
    "article",
    {
      className: "tile" + verdictClass(sample) + (sample.culprit ? " is-culprit" : ""),
      tabIndex: 0,
      dataset: { position: String(sample.position), index: String(sample.index) },
      attrs: { "aria-label": describe.join(", ") },
      on: {
        click: (event) => {
          if (!event.target.closest("button")) onOpen(sample);
        },
        keydown: (event) => {
          if (event.key === "Enter" && event.target === tile) {
            event.preventDefault();
            onOpen(sample);
          }
        },
      },
    },
    h(
      "div",
      { className: "thumb" + (drawn === MASK_VALUES ? " has-value-map" : "") },
      picture,
      verdictBadge(sample, "on-image"),
      sample.culprit ? h("span", { className: "culprit-badge", text: "culprit", title: "what triggered this batch: a non-finite picture or loss, or a loss above the spike line" }) : null,
      h("span", {
        className: "position",
        text: merged ? `b${sample.batch} #${sample.position}` : `#${sample.position}`,
        title: merged ? `batch ${sample.batch}, position ${sample.position}` : "position in the batch",
      }),
    ),
    h(
      "div",
      { className: "caption" },
      h("div", {
        className: "filename",
        text: filename ? shortenFilename(filename) : `sample ${sample.position}`,
        title: filename ?? "no filename logged",
        dataset: { full: filename ?? "" },
      }),
      // A detection sample's label and prediction are its boxes (the boxes row).
      detectionOnly ? null : captionRow("label", h("span", { className: "cap-value label", text: label, title: label })),
      detectionOnly
        ? null
        : captionRow(
            "pred",
            h("span", { className: "cap-value prediction", text: prediction, title: prediction }),
            sample.confidence !== null && sample.confidence !== undefined
              ? h("span", { className: "confidence", text: formatPercent(sample.confidence) })
              : null,
          ),
      captionRow(
        "loss",
        h("span", { className: "cap-value loss", text: formatLoss(sample) }),
        filename !== null && filename !== undefined
          ? h("button", {
              className: "link-button history-button",
              type: "button",
              text: "history",
              title: "Every appearance of this file across steps and runs",
              on: { click: () => onHistory(sample) },
            })
          : null,
      ),
      maskRows(sample, batch, masks),
      boxRows(sample, batch),
      flagBadges(sample.flags),
    ),
  );
  return tile;
}

function fact(field, key, value) {
  return h(
    "span",
    { className: "fact", dataset: { field } },
    h("span", { className: "fact-key", text: key }),
    h("span", { className: "fact-value", text: value }),
  );
}

/** Counts of right / wrong and the mean loss of a batch. */
function batchSummary(samples) {
  let right = 0;
  let wrong = 0;
  let lossSum = 0;
  let lossCount = 0;
  for (const sample of samples) {
    if (sample.correct === true) right += 1;
    if (sample.correct === false) wrong += 1;
    if (Number.isFinite(sample.loss)) {
      lossSum += sample.loss;
      lossCount += 1;
    }
  }
  const parts = [];
  if (right + wrong) parts.push(`${right} right`, `${wrong} wrong`);
  if (lossCount) parts.push(`mean loss ${formatNumber(lossSum / lossCount)}`);
  return parts.join(" · ");
}

/** Why a triggered batch was logged, with its loss against the running estimate. */
function triggerTitle(batch) {
  const loss = batch.batch_loss_finite === false ? "NaN" : formatNumber(batch.batch_loss);
  const parts = [`logged by the ${TRIGGER_TEXT[batch.trigger]} trigger: batch loss ${loss}`];
  if (batch.loss_mean !== null) parts.push(`running mean ${formatNumber(batch.loss_mean)} ± ${formatNumber(batch.loss_deviation)}`);
  if (batch.non_finite_samples) parts.push(`${plural(batch.non_finite_samples, "sample")} of the batch with a NaN or Inf input or loss`);
  return parts.join("; ");
}

/** The facts of a batch: epoch, batch, step, wall time, "k of n samples". */
export function renderBatchHeader(batch, shownCount) {
  const total = batch.samples.length;
  return h(
    "header",
    { className: "batch-header" },
    h(
      "div",
      { className: "facts" },
      fact("step", "step", String(batch.step)),
      TRIGGER_TEXT[batch.trigger]
        ? h("span", {
            className: `trigger-badge trigger-${batch.trigger}`,
            dataset: { trigger: batch.trigger },
            text: TRIGGER_TEXT[batch.trigger],
            title: triggerTitle(batch),
          })
        : null,
      fact("epoch", "epoch", formatValue(batch.epoch)),
      fact("batch", "batch", formatValue(batch.batch)),
      fact("wall_time", "", formatWallTime(batch.wall_time)),
      fact("samples", "", `${batch.samples_logged ?? total} of ${plural(batch.batch_size ?? total, "sample")}`),
    ),
    h(
      "div",
      { className: "summary" },
      h("span", { text: batchSummary(batch.samples) }),
      shownCount < total
        ? h("span", { className: "shown-count", dataset: { field: "shown" }, text: `showing ${shownCount} of ${total} after filters` })
        : null,
    ),
  );
}

/** What the validator dropped or repaired in this step's record (docs/format.md). */
export function renderRecordWarnings(batch) {
  const warnings = batch.warnings || [];
  if (!warnings.length) return null;
  return h(
    "div",
    { className: "notice warn record-warnings", dataset: { kind: "record-warnings", step: String(batch.step) } },
    h("strong", {
      text: batch.lost
        ? `Step ${batch.step}: its pictures and record are lost (its pack file could not be read); the tiles show what its index entry says.`
        : `Step ${batch.step}: parts of its record could not be used and are left out or repaired.`,
    }),
    h("ul", {}, warnings.map((warning) => h("li", { text: warning }))),
  );
}

/** A batch: header, what its record lacked, and grid (or a note when the filters leave nothing). */
export function renderBatch({ batch, samples, onOpen, onHistory, onClearFilters, masks = "prediction", boxes = "both" }) {
  // A merged validation record holds samples of several batches (docs/format.md).
  const merged = new Set((batch.samples || []).map((sample) => sample.batch ?? batch.batch)).size > 1;
  const grid = h(
    "div",
    { className: "grid" },
    samples.map((sample) => renderTile(sample, batch, { onOpen, onHistory, merged, masks, boxes })),
  );
  return h(
    "section",
    { className: "batch", dataset: { run: batch.run, step: String(batch.step) } },
    renderBatchHeader(batch, samples.length),
    renderRecordWarnings(batch),
    renderLegend(batch, samples, masks),
    renderBoxLegend(batch, samples, boxes),
    samples.length
      ? grid
      : h(
          "div",
          { className: "state-box small" },
          h("p", { text: "No sample of this batch matches the filters." }),
          h("button", { className: "button", type: "button", text: "Clear filters", on: { click: onClearFilters } }),
        ),
  );
}
