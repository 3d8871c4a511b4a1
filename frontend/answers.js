// The shapes of the plugin's answers (docs/api.md), checked in one place: api.js passes
// every answer through here before the app sees it. The plugin already validates each
// record (docs/format.md, "Validation"); this is the page's own guard, for whatever else
// may answer (an older plugin, a proxy): a value of the wrong type becomes null or an
// empty list, so no view meets a shape it does not expect. A batch lists what the page
// replaced in its `warnings`, after the plugin's own.

import { BATCHES_TAG } from "./contract.js";

const BAD = Symbol("bad");
const MAX_PAGE_WARNINGS = 20;

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

// Checks: a value, or BAD.
const text = (value) => (typeof value === "string" ? value : BAD);
const int = (value) => (Number.isSafeInteger(value) ? value : BAD);
const number = (value) => (typeof value === "number" && Number.isFinite(value) ? value : BAD);
const bool = (value) => (typeof value === "boolean" ? value : BAD);
const orNull = (check) => (value) => (value === null ? null : check(value));
const either = (...checks) => (value) => {
  for (const check of checks) {
    const checked = check(value);
    if (checked !== BAD) return checked;
  }
  return BAD;
};
/** A list whose every item passes (else BAD). */
const listOf = (check) => (value) => {
  if (!Array.isArray(value)) return BAD;
  const items = [];
  for (const item of value) {
    const checked = check(item);
    if (checked === BAD) return BAD;
    items.push(checked);
  }
  return items;
};
/** A list of the items that pass (order-free lists: flags, top-k, warnings). */
const goodItems = (check) => (value) =>
  Array.isArray(value) ? value.map(check).filter((item) => item !== BAD) : BAD;
/** An object of numbers (or nulls) by name, in written order (`head_losses`). */
const numbers = (value) => {
  if (!isObject(value)) return BAD;
  return Object.fromEntries(
    Object.entries(value).filter(([, number]) => number === null || (typeof number === "number" && Number.isFinite(number))),
  );
};
const counts = (value) => {
  if (!isObject(value)) return BAD;
  return Object.fromEntries(Object.entries(value).filter(([, count]) => Number.isSafeInteger(count)));
};

/**
 * Copies the known `fields` of `value` ({name: [check, fallback]}); a missing field or
 * one that fails its check gets its fallback, and a failed one is named in `problems`.
 */
function pick(value, fields, problems, where) {
  const source = isObject(value) ? value : {};
  const picked = {};
  for (const [name, [check, fallback]] of Object.entries(fields)) {
    const raw = source[name];
    const checked = raw === undefined ? BAD : check(raw);
    if (checked === BAD) {
      if (raw !== undefined) problems.push(`${where}${name}`);
      picked[name] = Array.isArray(fallback) ? [...fallback] : fallback;
    } else picked[name] = checked;
  }
  return picked;
}

const objectOf = (fields) => (value) => (isObject(value) ? pick(value, fields, [], "") : BAD);

const CLASS_VALUE = orNull(either(int, listOf(orNull(number))));
const TOP_K_ITEM = objectOf({
  class: [orNull(int), null],
  name: [orNull(text), null],
  probability: [orNull(number), null],
});
const OUTPUT_SUMMARY = objectOf({
  shape: [listOf(orNull(int)), []],
  min: [orNull(number), null],
  max: [orNull(number), null],
  mean: [orNull(number), null],
});

const SAMPLE_FIELDS = {
  position: [int, null],
  batch: [int, null],
  sample_id: [orNull(int), null],
  filename: [orNull(text), null],
  label: [CLASS_VALUE, null],
  label_name: [orNull(text), null],
  prediction: [CLASS_VALUE, null],
  prediction_name: [orNull(text), null],
  confidence: [orNull(number), null],
  correct: [orNull(bool), null],
  top_k: [goodItems(TOP_K_ITEM), []],
  output_summary: [orNull(OUTPUT_SUMMARY), null],
  loss: [orNull(number), null],
  flags: [goodItems(text), []],
  image_shape: [listOf(int), []],
  device: [either(int, text), null],
  process: [int, null],
  head_losses: [orNull(numbers), null],
  input_size: [orNull(listOf(int)), null],
  image: [orNull(text), null],
  // Segmentation masks (docs/format.md, `masks`).
  label_mask: [orNull(int), null],
  prediction_mask: [orNull(int), null],
  pixel_accuracy: [orNull(number), null],
  mean_iou: [orNull(number), null],
  mask_classes: [goodItems(int), []],
  label_range: [orNull(listOf(number)), null],
  prediction_range: [orNull(listOf(number)), null],
  label_mask_image: [orNull(text), null],
  prediction_mask_image: [orNull(text), null],
  // Format version 3: the step's pack file could not be read ("picture lost").
  lost: [bool, false],
};

const BATCH_FIELDS = {
  run: [text, ""],
  tag: [text, BATCHES_TAG],
  step: [int, null],
  error: [orNull(text), null],
  lost: [orNull(text), null],
  warnings: [goodItems(text), []],
  mode: [text, null],
  epoch: [int, null],
  batch: [int, null],
  wall_time: [number, null],
  sequence: [int, null],
  batch_size: [int, null],
  samples_logged: [int, null],
  selection: [text, null],
  replica: [int, null],
  num_replicas: [int, null],
  backend: [text, null],
  task: [text, null],
  class_names: [orNull(listOf(text)), null],
  num_classes: [orNull(int), null],
  image_key: [orNull(text), null],
  image_source: [orNull(text), null],
  preprocessing: [orNull(text), null],
  output: [orNull(text), null],
  input_shape: [listOf(int), []],
  input_dtype: [text, null],
  input_layout: [text, null],
  value_range: [orNull(listOf(number)), null],
  image_format: [text, null],
  masks: [orNull(text), null],
  mask_shape: [orNull(listOf(int)), null],
  dropped: [counts, {}],
};

/**
 * A `Batch` (the /samples answer) for `run` and `step`: every field of the expected
 * type, each sample with `index` (its place in the record). An answer that is not a
 * batch at all becomes a broken step (`error`).
 */
export function checkBatch(answer, run, step) {
  const problems = [];
  if (!isObject(answer) || !Array.isArray(answer.samples)) {
    const error = isObject(answer) && typeof answer.error === "string" && answer.error ? answer.error : "the plugin's answer for this step is not a batch";
    return { ...pick({}, BATCH_FIELDS, [], ""), run, step, error, samples: [] };
  }
  const batch = pick(answer, BATCH_FIELDS, problems, "");
  batch.run = run;
  if (batch.step === null) batch.step = step;
  batch.samples = answer.samples.map((sample, index) => {
    const checked = pick(sample, SAMPLE_FIELDS, problems, `samples[${index}].`);
    if (checked.position === null) checked.position = index;
    if (checked.batch === null) checked.batch = batch.batch;
    checked.index = index;
    return checked;
  });
  if (batch.error !== null) batch.samples = [];
  if (problems.length) {
    const shown = problems.slice(0, MAX_PAGE_WARNINGS);
    const more = problems.length - shown.length;
    batch.warnings.push(
      `the page left out fields of an unexpected type: ${shown.join(", ")}` + (more > 0 ? ` and ${more} more` : ""),
    );
  }
  return batch;
}

const RUN_FIELDS = {
  run: [text, null],
  tag: [text, BATCHES_TAG],
  mode: [orNull(text), null],
  steps_kept: [int, null],
  steps_logged: [int, null],
  first_step: [int, null],
  last_step: [int, null],
  dropped: [counts, {}],
  warnings: [goodItems(text), []],
};

/** The /runs answer: [Run], runs without a name left out. */
export function checkRuns(answer) {
  const runs = isObject(answer) && Array.isArray(answer.runs) ? answer.runs : [];
  return runs.map((run) => pick(run, RUN_FIELDS, [], "")).filter((run) => run.run !== null);
}

/**
 * A /steps?fields=step page: {steps: [int] sorted, total, first, received}. Summaries
 * (a server that ignored `fields`) are read for their step.
 */
export function checkStepNumbers(answer) {
  const items = isObject(answer) && Array.isArray(answer.steps) ? answer.steps : [];
  const steps = items
    .map((item) => (isObject(item) ? item.step : item))
    .filter((step) => Number.isSafeInteger(step))
    .sort((a, b) => a - b);
  const total = isObject(answer) && Number.isSafeInteger(answer.total) ? answer.total : steps.length;
  const first = isObject(answer) && Number.isSafeInteger(answer.first) ? answer.first : 0;
  return { steps, total, first, received: items.length };
}

const APPEARANCE_FIELDS = {
  ...SAMPLE_FIELDS,
  run: [text, null],
  tag: [text, BATCHES_TAG],
  mode: [orNull(text), null],
  step: [int, null],
  epoch: [orNull(int), null],
  index: [int, null],
};

/** The /history answer: {appearances: [Appearance] (with a run and step), total}. */
export function checkHistory(answer) {
  const items = isObject(answer) && Array.isArray(answer.appearances) ? answer.appearances : [];
  const appearances = items
    .map((item) => pick(item, APPEARANCE_FIELDS, [], ""))
    .filter((item) => item.run !== null && item.step !== null);
  const total = isObject(answer) && Number.isSafeInteger(answer.total) ? answer.total : appearances.length;
  return { appearances, total };
}

// -- the Dataset view (dataset.js) -------------------------------------------------

/** The /sample_stats_runs answer: [{run, steps: [int]}], runs with a name. */
export function checkStatsRuns(answer) {
  const runs = isObject(answer) && Array.isArray(answer.runs) ? answer.runs : [];
  return runs
    .map((run) => pick(run, { run: [text, null], steps: [goodItems(int), []] }, [], ""))
    .filter((run) => run.run !== null && run.steps.length);
}

const STATS_FIELDS = {
  run: [text, null],
  step: [int, null],
  steps: [goodItems(int), []],
  epoch: [int, null],
  num_samples: [int, 0],
  num_classes: [orNull(int), null],
  head: [orNull(text), null],
  dropped: [int, 0],
  class_names: [orNull(listOf(text)), null],
  filenames: [orNull(listOf(orNull(text))), null],
  suspects: [goodItems(int), []],
};

/**
 * A /sample_stats answer: columns as Float64Arrays of num_samples values (NaN where
 * the plugin sent null or anything that is not a number).
 */
export function checkSampleStats(answer) {
  const stats = pick(answer, STATS_FIELDS, [], "");
  const source = isObject(answer) && isObject(answer.columns) ? answer.columns : {};
  const size = Math.max(0, Math.min(stats.num_samples, 50_000_000));
  stats.columns = {};
  for (const [name, values] of Object.entries(source)) {
    if (!Array.isArray(values)) continue;
    const column = new Float64Array(size).fill(NaN);
    for (let i = 0; i < Math.min(size, values.length); i++) {
      if (typeof values[i] === "number") column[i] = values[i];
    }
    stats.columns[name] = column;
  }
  stats.suspects = stats.suspects.filter((id) => id >= 0 && id < size);
  return stats;
}

const PICTURE_FIELDS = { ...APPEARANCE_FIELDS, source: [text, "batch"] };

/** A /sample_pictures answer: Map(sample id -> Appearance | null). */
export function checkSamplePictures(answer) {
  const pictures = isObject(answer) && isObject(answer.pictures) ? answer.pictures : {};
  const found = new Map();
  for (const [id, item] of Object.entries(pictures)) {
    if (!/^\d+$/.test(id)) continue;
    const picked = isObject(item) ? pick(item, PICTURE_FIELDS, [], "") : null;
    found.set(Number(id), picked && picked.image !== null ? picked : null);
  }
  return found;
}

/** A /sample answer: {run, sample_id, filename, epochs: [row], appearances, total}. */
export function checkSampleDetail(answer) {
  const detail = pick(
    answer,
    { run: [text, null], sample_id: [int, null], filename: [orNull(text), null], total: [int, 0] },
    [],
    "",
  );
  const rows = isObject(answer) && Array.isArray(answer.epochs) ? answer.epochs : [];
  detail.epochs = rows.filter(isObject).map((row) =>
    Object.fromEntries(Object.entries(row).map(([key, value]) => [key, typeof value === "number" && Number.isFinite(value) ? value : null])),
  );
  const items = isObject(answer) && Array.isArray(answer.appearances) ? answer.appearances : [];
  detail.appearances = items.map((item) => pick(item, PICTURE_FIELDS, [], "")).filter((item) => item.run !== null && item.step !== null);
  return detail;
}
