// Text formatting of logged values. Pure functions: values in, strings out.

import {
  FLAG_CLIPPED,
  FLAG_CONSTANT,
  FLAG_INF,
  FLAG_LABEL_OUT_OF_RANGE,
  FLAG_LOSS_NON_FINITE,
  FLAG_NAN,
  FLAG_PREDICTION_NON_FINITE,
  FLAG_RESCALED,
  TRIGGER_NON_FINITE,
  TRIGGER_SPIKE,
} from "./contract.js";

export const DASH = "—";

/** The last path component, shortened in the middle to at most `max` characters. */
export function shortenFilename(name, max = 24) {
  if (name === null || name === undefined || name === "") return "";
  const text = String(name);
  const base = text.split(/[\\/]/).filter(Boolean).pop() || text;
  if (base.length <= max) return base;
  const keep = max - 1;
  const head = Math.ceil(keep * 0.5);
  const tail = keep - head;
  return base.slice(0, head) + "…" + base.slice(base.length - tail);
}

/**
 * A file's folder and name ("cats/IMG_0042.jpg" of "/data/pets/cats/IMG_0042.jpg"),
 * shortened in the middle to at most `max` characters, so both ends stay readable.
 */
export function shortenPath(path, max = 30) {
  if (path === null || path === undefined || path === "") return "";
  const parts = String(path).split(/[\\/]/).filter(Boolean);
  const text = parts.length > 1 ? parts.slice(-2).join("/") : String(path);
  if (text.length <= max) return text;
  const keep = max - 1;
  const tail = Math.ceil(keep * 0.6); // the file name's end (its number, extension)
  const head = keep - tail;
  return text.slice(0, head) + "…" + text.slice(text.length - tail);
}

/** A loss or other real number with 3 significant digits. */
export function formatNumber(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return DASH;
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && magnitude < 1e-3) return value.toExponential(2);
  if (magnitude >= 1000) return value.toFixed(0);
  return String(Number(value.toPrecision(3)));
}

/** A probability as a percentage. */
export function formatPercent(probability) {
  if (probability === null || probability === undefined || !Number.isFinite(probability)) {
    return DASH;
  }
  return (probability * 100).toFixed(1) + "%";
}

/** A class value (int, class set, raw values) and its optional name. */
export function formatClass(value, name) {
  if (name !== null && name !== undefined && name !== "") return String(name);
  if (value === null || value === undefined) return DASH;
  if (Array.isArray(value)) {
    if (value.length === 0) return "none"; // an empty class set: no class predicted
    const shown = value.slice(0, 4).map((item) =>
      Number.isInteger(item) ? String(item) : formatNumber(item),
    );
    return "[" + shown.join(", ") + (value.length > 4 ? ", …]" : "]");
  }
  return Number.isInteger(value) ? String(value) : formatNumber(value);
}

/** A sample's prediction: "NaN" when its output was not finite (no class then). */
export function formatPrediction(sample, withName = true) {
  if ((sample.flags || []).includes(FLAG_PREDICTION_NON_FINITE)) return "NaN";
  return formatClass(sample.prediction, withName ? sample.prediction_name : null);
}

/** A loss: "NaN" for a sample whose loss was not finite (written as null). */
export function formatLoss(sample) {
  if ((sample.flags || []).includes(FLAG_LOSS_NON_FINITE)) return "NaN";
  return formatNumber(sample.loss);
}

/** Why a batch was logged, in words (null for the schedule). */
export const TRIGGER_TEXT = {
  [TRIGGER_NON_FINITE]: "non-finite",
  [TRIGGER_SPIKE]: "loss spike",
};

/** Seconds since the epoch as local "YYYY-MM-DD HH:MM:SS". */
export function formatWallTime(seconds) {
  if (!Number.isFinite(seconds)) return DASH;
  const date = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}

/** "1 sample", "3 samples". */
export function plural(count, word, many = word + "s") {
  return `${count} ${count === 1 ? word : many}`;
}

/** Any JSON value as compact text, for the metadata table. */
export function formatValue(value) {
  if (value === null || value === undefined) return DASH;
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : formatNumber(value);
  if (typeof value === "string") return value;
  if (typeof value === "boolean") return value ? "yes" : "no";
  return JSON.stringify(value);
}

/** A class of a run's statistics (docs/api.md, /sample_stats): its name if known. */
export function statsClassName(stats, value) {
  if (!Number.isFinite(value) || value < 0) return DASH;
  const names = stats.class_names;
  return formatClass(value, names && names[value] !== undefined ? names[value] : null);
}

/** The filename of sample `id` of a run's statistics, else "sample <id>". */
export function statsFilename(stats, id) {
  return (stats.filenames && stats.filenames[id]) || `sample ${id}`;
}

export const FLAG_HELP = {
  [FLAG_NAN]: "The input held NaN values (shown as 0).",
  [FLAG_INF]: "The input held ±Inf values (clipped).",
  [FLAG_CONSTANT]: "Every pixel of the input had the same value.",
  [FLAG_CLIPPED]: "Values fell outside the value range and were clipped.",
  [FLAG_RESCALED]: "The input matched no known range; shown min-max stretched.",
  [FLAG_LABEL_OUT_OF_RANGE]: "The label is not a valid class index.",
  [FLAG_LOSS_NON_FINITE]: "The sample's loss was NaN or Inf.",
  [FLAG_PREDICTION_NON_FINITE]: "The model's output held NaN or Inf: no class is predicted.",
  // Detection (docs/format.md, "Boxes"): contract.js's BOX_FLAGS.
  box_zero_area: "A label box has no (or negative) area.",
  box_outside: "A label box lies entirely outside the picture.",
  box_cut: "A label box is cut by the picture's border.",
  box_tiny: "A label box has a side under 3 pixels of the model's input.",
  box_label_out_of_range: "A label box's label is not a class (or not in class_names).",
  box_duplicate: "A label box repeats an earlier box of the sample exactly.",
  box_empty_region: "A label box covers an empty (constant) region of the picture.",
  boxes_capped: "More label boxes than the log keeps; the first are shown.",
  box_missed: "A label box that no predicted box matched (same class, IoU ≥ 0.5).",
  box_spurious: "A predicted box that matched no label box.",
};
