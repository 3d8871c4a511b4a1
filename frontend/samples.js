// Sorting and filtering the samples of a batch. Pure functions.

import { boxClassKeys, boxCount, sampleMeanIou } from "./boxes.js";
import { BOX_FLAGS, FLAGS, TASK_BINARY, TASK_CATEGORICAL, TASK_DETECTION, TASK_MULTILABEL, TASK_SPARSE_CATEGORICAL } from "./contract.js";

export const SORTS = [
  { value: "position", text: "Position in batch" },
  { value: "loss_desc", text: "Loss, highest first" },
  { value: "loss_asc", text: "Loss, lowest first" },
  { value: "confidence_desc", text: "Confidence, highest first" },
  { value: "confidence_asc", text: "Confidence, lowest first" },
  // `needs`: offered only where the shown batches have it (toolbar.js).
  { value: "mean_iou_asc", text: "Mean IoU, lowest first", needs: "masks_or_boxes" },
  { value: "mean_iou_desc", text: "Mean IoU, highest first", needs: "masks_or_boxes" },
  { value: "pixel_accuracy_asc", text: "Pixel accuracy, lowest first", needs: "masks" },
  { value: "pixel_accuracy_desc", text: "Pixel accuracy, highest first", needs: "masks" },
  { value: "boxes_desc", text: "Boxes, most first", needs: "boxes" },
  { value: "boxes_asc", text: "Boxes, fewest first", needs: "boxes" },
];

const CLASS_TASKS = new Set([TASK_SPARSE_CATEGORICAL, TASK_CATEGORICAL, TASK_BINARY, TASK_MULTILABEL]);

/** The class keys ("3") of a label or prediction; [] for raw values. */
export function classKeys(value, task) {
  if (task && !CLASS_TASKS.has(task)) return [];
  if (Number.isInteger(value)) return [String(value)];
  if (Array.isArray(value) && value.every(Number.isInteger)) return value.map(String);
  return [];
}

/** Whether any filter is set. */
export function hasFilters(filters) {
  return Boolean(filters.wrong || filters.label || filters.pred || filters.q || filters.flag || maxIou(filters) !== null || boxLimit(filters.min_boxes) !== null || boxLimit(filters.max_boxes) !== null);
}

/** A box-count filter (`min_boxes`, `max_boxes`) as an integer, or null when not set. */
export function boxLimit(text) {
  return /^\d+$/.test(String(text ?? "").trim()) ? Number(text) : null;
}

/** The class keys a label / prediction filter matches: a detection sample's boxes'. */
function sampleClassKeys(sample, side, task) {
  if (task === TASK_DETECTION || sample.boxes) return boxClassKeys(sample, side === "label" ? "label" : "prediction");
  return classKeys(side === "label" ? sample.label : sample.prediction, task);
}

/** The `max_iou` filter as a number in [0, 1], or null when not set. */
export function maxIou(filters) {
  const text = filters.max_iou;
  if (text === undefined || text === null || String(text).trim() === "") return null;
  const value = Number(text);
  return Number.isFinite(value) ? value : null;
}

/** The samples that pass every filter. */
export function filterSamples(samples, task, filters) {
  const query = (filters.q || "").toLowerCase();
  const iouAtMost = maxIou(filters);
  const fewest = boxLimit(filters.min_boxes);
  const most = boxLimit(filters.max_boxes);
  return samples.filter((sample) => {
    const iou = sampleMeanIou(sample);
    if (iouAtMost !== null && !(iou !== null && iou <= iouAtMost)) return false;
    if (fewest !== null || most !== null) {
      const count = boxCount(sample);
      if (count === null || (fewest !== null && count < fewest) || (most !== null && count > most)) return false;
    }
    if (filters.wrong && sample.correct !== false) return false;
    if (filters.label && !sampleClassKeys(sample, "label", task).includes(filters.label)) return false;
    if (filters.pred && !sampleClassKeys(sample, "prediction", task).includes(filters.pred)) return false;
    if (filters.flag && !(sample.flags || []).includes(filters.flag)) return false;
    if (query && !String(sample.filename ?? "").toLowerCase().includes(query)) return false;
    return true;
  });
}

/** Batch order: the sample's batch (merged validation records), then its position. */
function batchOrder(a, b) {
  return (a.batch ?? 0) - (b.batch ?? 0) || a.position - b.position || (a.index ?? 0) - (b.index ?? 0);
}

/** A sorted copy; missing values go last, ties keep batch order. */
export function sortSamples(samples, sort) {
  const order = {
    loss_desc: ["loss", -1],
    loss_asc: ["loss", 1],
    confidence_desc: ["confidence", -1],
    confidence_asc: ["confidence", 1],
    mean_iou_asc: ["mean_iou", 1],
    mean_iou_desc: ["mean_iou", -1],
    pixel_accuracy_asc: ["pixel_accuracy", 1],
    pixel_accuracy_desc: ["pixel_accuracy", -1],
    boxes_desc: ["boxes", -1],
    boxes_asc: ["boxes", 1],
  }[sort];
  // The default order: a triggered batch's culprits first, then the batch's order.
  if (!order) return [...samples].sort((a, b) => Number(b.culprit === true) - Number(a.culprit === true) || batchOrder(a, b));
  const [field, direction] = order;
  const value = (sample) => {
    const number = field === "mean_iou" ? sampleMeanIou(sample) : field === "boxes" ? boxCount(sample) : sample[field];
    return typeof number === "number" && Number.isFinite(number) ? number : null;
  };
  return [...samples].sort((a, b) => {
    const x = value(a);
    const y = value(b);
    if (x === null || y === null) {
      if (x !== y) return x === null ? 1 : -1;
    } else if (x !== y) return (x - y) * direction;
    return batchOrder(a, b);
  });
}

/**
 * The class choices for the label / prediction filters: class_names of the batches,
 * plus every class seen in them. [{value: "3", text: "3 · cat"}], ordered by class.
 */
export function classOptions(batches) {
  const names = new Map();
  for (const batch of batches) {
    const task = batch.task;
    if (task && !CLASS_TASKS.has(task) && task !== TASK_DETECTION) continue;
    (batch.class_names || []).forEach((name, index) => names.set(String(index), name));
    for (const sample of batch.samples || []) {
      for (const side of ["label", "prediction"]) {
        for (const key of boxClassKeys(sample, side)) if (!names.has(key)) names.set(key, null);
      }
      for (const [value, name] of [
        [sample.label, sample.label_name],
        [sample.prediction, sample.prediction_name],
      ]) {
        for (const key of classKeys(value, task)) {
          if (!names.has(key) || (names.get(key) == null && name != null)) {
            names.set(key, Number.isInteger(value) ? name ?? null : null);
          }
        }
      }
    }
  }
  return [...names.entries()]
    .sort((a, b) => Number(a[0]) - Number(b[0]))
    .map(([value, name]) => ({ value, text: name ? `${value} · ${name}` : value }));
}

/**
 * The flag filter's choices: every flag (the box flags too when a batch is a detection
 * batch), with how many samples of `batches` carry it.
 */
export function flagOptions(batches) {
  const counts = new Map();
  let detection = false;
  for (const batch of batches) {
    if (batch.task === TASK_DETECTION) detection = true;
    for (const sample of batch.samples || []) {
      for (const flag of sample.flags || []) counts.set(flag, (counts.get(flag) || 0) + 1);
    }
  }
  const flags = detection ? [...FLAGS, ...BOX_FLAGS] : FLAGS;
  return flags.map((flag) => ({ value: flag, text: counts.has(flag) ? `${flag} (${counts.get(flag)})` : flag }));
}
