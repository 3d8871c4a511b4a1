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

// A box: [x1, y1, x2, y2] pixels of the logged picture (docs/format.md, "Boxes").
const box = (value) => {
  const checked = listOf(number)(value);
  return checked !== BAD && checked.length === 4 ? checked : BAD;
};
const BOXES = objectOf({
  count: [orNull(int), null],
  label: [listOf(box), []],
  label_classes: [listOf(orNull(number)), []],
  label_flags: [listOf(goodItems(text)), []],
  label_iou: [orNull(listOf(orNull(number))), null],
  prediction_count: [orNull(int), null],
  prediction: [orNull(listOf(box)), null],
  prediction_classes: [listOf(orNull(number)), []],
  prediction_scores: [listOf(orNull(number)), []],
  prediction_iou: [listOf(orNull(number)), []],
  mean_iou: [orNull(number), null],
  missed: [orNull(int), null],
  spurious: [orNull(int), null],
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
  // A triggered batch's culprit (docs/format.md, `trigger`).
  culprit: [bool, false],
  // Object detection (docs/format.md, "Boxes").
  boxes: [orNull(BOXES), null],
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
  box_format: [orNull(text), null],
  box_predictions: [orNull(text), null],
  max_boxes: [orNull(int), null],
  box_iou_threshold: [orNull(number), null],
  dropped: [counts, {}],
  // Why it was logged, and the step's loss (docs/format.md, `trigger`).
  trigger: [orNull(text), null],
  batch_loss: [orNull(number), null],
  batch_loss_finite: [orNull(bool), null],
  loss_mean: [orNull(number), null],
  loss_deviation: [orNull(number), null],
  non_finite_samples: [orNull(int), null],
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

/**
 * The /sample_stats_runs answer: {runs: [{run, steps: [int]}], off: [{run, reason}]}:
 * runs with statistics, and runs whose logger said why the data map is off.
 */
export function checkStatsRuns(answer) {
  const runs = isObject(answer) && Array.isArray(answer.runs) ? answer.runs : [];
  const off = isObject(answer) && Array.isArray(answer.off) ? answer.off : [];
  return {
    runs: runs
      .map((run) => pick(run, { run: [text, null], steps: [goodItems(int), []] }, [], ""))
      .filter((run) => run.run !== null && run.steps.length),
    off: off
      .map((run) => pick(run, { run: [text, null], reason: [text, null] }, [], ""))
      .filter((run) => run.run !== null && run.reason !== null),
  };
}

const RELIABILITY_FIELDS = {
  reliable: [bool, true],
  reasons: [goodItems(text), []],
  accuracy: [orNull(number), null],
  chance: [orNull(number), null],
};
const CLASS_FIELDS = {
  class: [int, null],
  samples: [int, 0],
  right: [int, 0],
  accuracy: [orNull(number), null],
  loss: [orNull(number), null],
};
const TREND_FIELDS = {
  epoch: [int, null],
  step: [int, null],
  accuracy: [listOf(orNull(number)), []],
  loss: [listOf(orNull(number)), []],
};

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
  non_finite: [int, 0],
  confusion: [orNull(listOf(listOf(int))), null],
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
  stats.reliability = pick(isObject(answer) ? answer.reliability : null, RELIABILITY_FIELDS, [], "");
  const classes = isObject(answer) && Array.isArray(answer.classes) ? answer.classes : [];
  stats.classes = classes.map((item) => pick(item, CLASS_FIELDS, [], "")).filter((item) => item.class !== null);
  const trend = isObject(answer) && Array.isArray(answer.class_trend) ? answer.class_trend : [];
  stats.class_trend = trend.map((item) => pick(item, TREND_FIELDS, [], "")).filter((item) => item.epoch !== null);
  const classCount = Number.isSafeInteger(stats.num_classes) ? stats.num_classes : 0;
  if (stats.confusion && (stats.confusion.length !== classCount || stats.confusion.some((row) => row.length !== classCount))) {
    stats.confusion = null;
  }
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

const BUCKET_FIELDS = {
  first: [listOf(int), []],
  last: [listOf(int), []],
  min: [listOf(orNull(number)), []],
  max: [listOf(orNull(number)), []],
  max_step: [listOf(int), []],
  non_finite: [listOf(int), []],
  trigger: [listOf(orNull(text)), []],
};

const ANOMALY = objectOf({ step: [int, null], trigger: [orNull(text), null], loss: [orNull(number), null] });

/**
 * The /loss_curve answer: {run, total_steps, first_step, last_step, start, end,
 * loss_range, buckets: {first, last, min, max, max_step, non_finite, trigger} (equal
 * lengths, else none), anomalies: [{step, trigger, loss}], logged: [int]}.
 */
export function checkLossCurve(answer) {
  const curve = pick(
    answer,
    {
      run: [text, ""],
      total_steps: [int, 0],
      first_step: [int, 0],
      last_step: [int, 0],
      start: [int, 0],
      end: [int, 0],
      loss_range: [orNull(listOf(number)), null],
      anomalies: [goodItems(ANOMALY), []],
      logged: [goodItems(int), []],
    },
    [],
    "",
  );
  const buckets = pick(isObject(answer) ? answer.buckets : {}, BUCKET_FIELDS, [], "");
  const length = buckets.first.length;
  const even = Object.values(buckets).every((values) => values.length === length);
  curve.buckets = even ? buckets : pick({}, BUCKET_FIELDS, [], "");
  curve.anomalies = curve.anomalies.filter((item) => item.step !== null);
  return curve;
}

/** The /composition answer: one step's {run, step, loss, loss_finite, trigger,
 * sample_ids, filenames (or null), logged}. */
export function checkComposition(answer) {
  return pick(
    answer,
    {
      run: [text, ""],
      step: [int, null],
      loss: [orNull(number), null],
      loss_finite: [bool, true],
      trigger: [orNull(text), null],
      sample_ids: [goodItems(int), []],
      filenames: [orNull(listOf(orNull(text))), null],
      logged: [bool, false],
    },
    [],
    "",
  );
}
