// The detail view of one sample: the image at its logged size, every field, top-k.

import { MASK_VALUES } from "./contract.js";
import { h } from "./dom.js";
import {
  FLAG_HELP,
  formatClass,
  formatLoss,
  formatPrediction,
  formatNumber,
  formatPercent,
  formatValue,
  formatWallTime,
} from "./format.js";
import { BOX_CHOICES, boxSummary, hasBoxes, renderBoxLegend, renderBoxTable } from "./boxes.js";
import { MASK_CHOICES, maskKind, maskRange, renderLegend } from "./masks.js";
import { closeButton, field, flagBadges, pictureWithMask, sampleImage, verdictBadge } from "./widgets.js";

const DISPLAY_TARGET = 384; // small images are scaled by an integer factor towards this

function scaleFor(height, width) {
  const longest = Math.max(height || 0, width || 0);
  if (!longest || longest >= DISPLAY_TARGET) return 1;
  return Math.min(16, Math.max(1, Math.floor(DISPLAY_TARGET / longest)));
}

function row(key, value, field) {
  return [
    h("dt", { text: key }),
    h("dd", { text: value, dataset: field ? { field } : undefined }),
  ];
}

function topKBars(topK, label) {
  if (!topK || !topK.length) return null;
  return h(
    "ol",
    { className: "topk" },
    topK.map((entry) => {
      const probability = Number.isFinite(entry.probability) ? entry.probability : 0;
      const name = formatClass(entry.class, entry.name);
      const isLabel = Number.isInteger(entry.class) && entry.class === label;
      return h(
        "li",
        { className: "topk-row" + (isLabel ? " is-label" : ""), title: isLabel ? "the labelled class" : "" },
        h("span", { className: "topk-name", title: name }, h("span", { className: "topk-class", text: name }), isLabel ? h("span", { className: "tag", text: "label" }) : null),
        h(
          "span",
          { className: "topk-track", attrs: { role: "img", "aria-label": `${name}: ${formatPercent(probability)}` } },
          h("span", { className: "topk-bar", style: `width: ${Math.max(0, Math.min(100, probability * 100)).toFixed(1)}%` }),
        ),
        h("span", { className: "topk-value", text: formatPercent(probability) }),
      );
    }),
  );
}

/** One row per head of a model with several outputs: its per-sample loss. */
function headLossRows(headLosses, shown) {
  if (!headLosses) return [];
  return Object.entries(headLosses).map(([name, loss]) => {
    const [key, value] = row(`loss of ${name}`, formatNumber(loss) + (name === shown ? " (shown)" : ""), "head_loss");
    value.dataset.head = name;
    return [key, value];
  });
}

/** Rows of a sample with masks: pixel accuracy and mean IoU, or the value ranges. */
function maskFields(sample, kind) {
  if (!kind) return [];
  if (kind === MASK_VALUES) {
    return ["label", "prediction"].map((choice) => {
      const range = maskRange(sample, choice);
      return row(`${choice} range`, range ? `${formatNumber(range[0])} – ${formatNumber(range[1])}` : "—", `${choice}_range`);
    });
  }
  return [
    row("pixel accuracy", formatPercent(sample.pixel_accuracy), "pixel_accuracy"),
    row("mean IoU", formatPercent(sample.mean_iou), "mean_iou"),
    row("mask classes", (sample.mask_classes || []).join(", ") || "—", "mask_classes"),
  ];
}

/**
 * The detail dialog.
 * context: {sample, batch, group, index, count, onPrev, onNext, onClose, onHistory,
 *          masks (the mask shown: "prediction", "label", "off"), onMasks(choice)}
 */
export function renderDetail({ sample, batch, group, index, count, onPrev, onNext, onClose, onHistory, masks = "prediction", onMasks = () => {}, boxes = "both", onBoxes = () => {} }) {
  const [height, width, channels] = sample.image_shape || [];
  const scale = scaleFor(height, width);
  const image = sampleImage(sample, { alt: sample.filename ?? `sample ${sample.position}`, lazy: false });
  image.classList.add("detail-image");
  if (scale > 1) image.classList.add("pixelated");
  if (width && height) {
    image.style.width = `${width * scale}px`;
  }
  const kind = maskKind(batch);
  // Box captions about 12 px high on screen, whatever the picture's scale.
  const [picture, drawn] = pictureWithMask(sample, batch, masks, image, boxes, { text: true, fontSize: 12 / scale });
  for (const canvas of picture.slice(1)) {
    if (scale > 1) canvas.classList.add("pixelated");
    if (width && height && canvas.classList.contains("value-map")) canvas.style.width = `${width * scale}px`;
  }
  // The picture with its overlay stacked on it, or the value map in a box beside it.
  const imageBox =
    drawn === MASK_VALUES
      ? h("div", { className: "detail-image-box has-value-map" }, picture)
      : h("div", { className: "detail-image-box" }, h("div", { className: "mask-stack" }, picture));
  const maskSelect = kind
    ? field(
        "Masks",
        h(
          "select",
          { dataset: { control: "detail_masks" }, on: { change: (event) => onMasks(event.target.value) } },
          MASK_CHOICES.map((choice) => h("option", { value: choice.value, text: choice.text, selected: choice.value === masks })),
        ),
        "detail-masks",
      )
    : null;
  const detection = hasBoxes(batch);
  const boxSelect = detection
    ? field(
        "Boxes",
        h(
          "select",
          { dataset: { control: "detail_boxes" }, on: { change: (event) => onBoxes(event.target.value) } },
          BOX_CHOICES.map((choice) => h("option", { value: choice.value, text: choice.text, selected: choice.value === boxes })),
        ),
        "detail-masks",
      )
    : null;
  const title = sample.filename ?? `sample ${sample.position}`;
  const sampleFields = [
    row("position", String(sample.position), "position"),
    sample.batch !== null && sample.batch !== undefined && sample.batch !== batch.batch ? row("from batch", String(sample.batch), "sample_batch") : null,
    row("sample id", formatValue(sample.sample_id), "sample_id"),
    row("filename", formatValue(sample.filename), "filename"),
    row("label", formatClass(sample.label, null), "label"),
    row("label name", formatValue(sample.label_name), "label_name"),
    row("prediction", formatPrediction(sample, false), "prediction"),
    row("prediction name", formatValue(sample.prediction_name), "prediction_name"),
    row("confidence", formatPercent(sample.confidence), "confidence"),
    row("correct", formatValue(sample.correct), "correct"),
    row("loss", formatLoss(sample) + (batch.output ? ` (output ${batch.output})` : ""), "loss"),
    ...headLossRows(sample.head_losses, batch.output),
    row("flags", (sample.flags || []).join(", ") || "none", "flags"),
    row("image shape", (sample.image_shape || []).join(" × ") || "—", "image_shape"),
    Array.isArray(sample.input_size) ? row("size as input", sample.input_size.join(" × "), "input_size") : null,
    ...maskFields(sample, kind),
    sample.boxes ? row("boxes", boxSummary(sample), "boxes") : null,
    sample.boxes && Number.isInteger(sample.boxes.missed) ? row("missed, spurious", `${sample.boxes.missed}, ${sample.boxes.spurious ?? "—"}`, "box_matching") : null,
  ];
  if (sample.output_summary) {
    const summary = sample.output_summary;
    sampleFields.push(
      row(
        "output",
        `shape ${formatValue(summary.shape)}, min ${formatNumber(summary.min)}, ` +
          `max ${formatNumber(summary.max)}, mean ${formatNumber(summary.mean)}`,
        "output_summary",
      ),
    );
  }
  if (Array.isArray(sample.label) && sample.label.length > 4) {
    sampleFields.push(row("label values", JSON.stringify(sample.label), "label_values"));
  }
  if (Array.isArray(sample.prediction) && sample.prediction.length > 4) {
    sampleFields.push(row("prediction values", JSON.stringify(sample.prediction), "prediction_values"));
  }
  const batchFields = [
    row("run", formatValue(batch.run), "run"),
    row("mode", formatValue(batch.mode), "mode"),
    row("step", String(batch.step), "step"),
    row("epoch", formatValue(batch.epoch), "epoch"),
    row("batch", formatValue(batch.batch), "batch"),
    row("wall time", formatWallTime(batch.wall_time), "wall_time"),
    row("samples", `${formatValue(batch.samples_logged)} of ${formatValue(batch.batch_size)}`, "samples"),
    row("selection", formatValue(batch.selection), "selection"),
    row("replica", `${formatValue(batch.replica)} of ${formatValue(batch.num_replicas)}`, "replica"),
    batch.output ? row("output shown", batch.output, "output") : null,
    row("task", formatValue(batch.task), "task"),
    row("classes", formatValue(batch.num_classes), "num_classes"),
    row("input", `${formatValue(batch.input_shape)} ${formatValue(batch.input_dtype)} ${formatValue(batch.input_layout)}`, "input"),
    row(
      "picture of",
      batch.image_source ? `output of layer ${batch.image_source}` : "x, as the model received it",
      "image_source",
    ),
    row("value range", formatValue(batch.value_range), "value_range"),
    row("preprocessing", formatValue(batch.preprocessing), "preprocessing"),
    row("image format", formatValue(batch.image_format), "image_format"),
    kind ? row("masks", `${kind}, ${formatValue(batch.mask_shape)}`, "masks") : null,
    detection ? row("boxes", `${formatValue(batch.box_format)} in y; predictions: ${formatValue(batch.box_predictions)}; at most ${formatValue(batch.max_boxes)} a sample; match at IoU ${formatValue(batch.box_iou_threshold)}`, "box_format") : null,
  ];

  const flagNotes = (sample.flags || []).map((flag) =>
    h("li", {}, h("strong", { text: flag }), " ", FLAG_HELP[flag] || ""),
  );

  const close = closeButton("Close", onClose);
  const dialog = h(
    "div",
    {
      className: "detail",
      attrs: { role: "dialog", "aria-modal": "true", "aria-label": `Sample ${title}` },
      dataset: { position: String(sample.position), index: String(sample.index), run: batch.run, step: String(batch.step) },
    },
    h(
      "header",
      { className: "detail-header" },
      h(
        "div",
        { className: "detail-title" },
        h("h2", { className: "detail-filename", text: title, title }),
        h("div", {
          className: "detail-subtitle",
          text: `${group} · ${formatValue(batch.mode)} · step ${batch.step} · epoch ${formatValue(batch.epoch)} · batch ${formatValue(batch.batch)} · #${sample.position}`,
        }),
      ),
      h(
        "div",
        { className: "detail-nav" },
        h("span", { className: "detail-count", text: `${index + 1} / ${count}` }),
        h("button", { className: "button", type: "button", text: "← Previous", title: "Previous sample (←)", disabled: index <= 0, on: { click: onPrev } }),
        h("button", { className: "button", type: "button", text: "Next →", title: "Next sample (→)", disabled: index >= count - 1, on: { click: onNext } }),
        close,
      ),
    ),
    h(
      "div",
      { className: "detail-body" },
      h(
        "figure",
        { className: "detail-figure" },
        imageBox,
        maskSelect,
        boxSelect,
        renderLegend(batch, [sample], masks),
        renderBoxLegend(batch, [sample], boxes),
        h("figcaption", {
          text: `${width ?? "?"} × ${height ?? "?"} px, ${channels ?? "?"} channel${channels === 1 ? "" : "s"}` + (scale > 1 ? `, shown at ${scale}×` : ""),
        }),
      ),
      h(
        "div",
        { className: "detail-info" },
        h(
          "div",
          { className: "detail-headline" },
          verdictBadge(sample, "large"),
          h(
            "div",
            { className: "headline-text" },
            h("div", {}, h("span", { className: "cap-key", text: "label" }), h("span", { className: "headline-value", text: formatClass(sample.label, sample.label_name) })),
            h("div", {}, h("span", { className: "cap-key", text: "predicted" }), h("span", { className: "headline-value", text: formatPrediction(sample) }), h("span", { className: "confidence", text: sample.confidence == null ? "" : formatPercent(sample.confidence) })),
            h("div", {}, h("span", { className: "cap-key", text: "loss" }), h("span", { className: "headline-value", text: formatLoss(sample) })),
          ),
        ),
        flagBadges(sample.flags),
        flagNotes.length ? h("ul", { className: "flag-notes" }, flagNotes) : null,
        sample.top_k && sample.top_k.length ? h("h3", { text: `Top ${sample.top_k.length}` }) : null,
        topKBars(sample.top_k, sample.label),
        sample.filename !== null && sample.filename !== undefined
          ? h("button", { className: "button", type: "button", text: "History of this file", on: { click: onHistory } })
          : null,
        sample.boxes ? h("h3", { text: "Boxes" }) : null,
        renderBoxTable(sample, batch),
        h("h3", { text: "Sample" }),
        h("dl", { className: "fields" }, sampleFields),
        h("h3", { text: "Batch" }),
        h("dl", { className: "fields" }, batchFields),
      ),
    ),
  );
  const backdrop = h(
    "div",
    {
      className: "detail-backdrop",
      on: {
        click: (event) => {
          if (event.target === backdrop) onClose();
        },
      },
    },
    dialog,
  );
  backdrop.focusTarget = close;
  return backdrop;
}
