// The plugin's HTTP API (docs/api.md). The only module that fetches; every answer's
// shape is checked by answers.js before it is returned.
// URLs are relative to the iframe page's <base href="plugin/batch_images/">.

import {
  checkBatch,
  checkComposition,
  checkHistory,
  checkLossCurve,
  checkRuns,
  checkSampleDetail,
  checkSamplePictures,
  checkSampleStats,
  checkStatsRuns,
  checkStepNumbers,
} from "./answers.js";
import { BATCHES_TAG } from "./contract.js";

export class ApiError extends Error {
  constructor(message, status, route) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0: no answer (TensorBoard not reachable)
    this.route = route;
  }
}

function url(route, params = {}) {
  const target = new URL(route, document.baseURI);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) target.searchParams.set(key, String(value));
  }
  return target;
}

async function getJson(route, params) {
  let response;
  try {
    response = await fetch(url(route, params), { headers: { Accept: "application/json" } });
  } catch {
    throw new ApiError(
      "TensorBoard did not answer. Is it still running? Start it again, then reload this page.",
      0,
      route,
    );
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`.trim();
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") message = body.error;
    } catch {
      // not JSON: keep the status line
    }
    throw new ApiError(message, response.status, route);
  }
  try {
    return await response.json();
  } catch {
    throw new ApiError(`the plugin's ${route} answer is not JSON`, response.status, route);
  }
}

/** Every run with batch images: [Run]. */
export async function fetchRuns() {
  return checkRuns(await getJson("runs"));
}

// The first page is the newest steps (the gallery opens on the latest), small so that it
// paints at once; the rest follow oldest first in big pages of step numbers only (no
// record is read for them). docs/api.md: /steps `order`, `fields`, `first`.
export const FIRST_STEPS_PAGE = 200;
const STEPS_PAGE = 10000;

// The logger's own tag is the plugin's default; other tags are passed along.
function tagParam(tag) {
  return tag && tag !== BATCHES_TAG ? tag : undefined;
}

/**
 * A run's kept step numbers, page by page:
 * {first: Promise<{steps, total, complete}>, all: Promise<[int]>}, both sorted by step.
 * `first` is the newest page (and `total`, from the first answer); `all` every step,
 * asked for only once `first` has arrived.
 */
export function fetchStepList(run, tag) {
  const params = { run, tag: tagParam(tag), fields: "step" };
  const first = getJson("steps", { ...params, order: "newest", limit: FIRST_STEPS_PAGE })
    .then(checkStepNumbers)
    .then((page) => ({ steps: page.steps, total: page.total, complete: page.first === 0 }));
  const all = first.then(async (newest) => {
    if (newest.complete) return newest.steps;
    const before = newest.total - newest.steps.length; // steps older than the first page
    const older = [];
    for (let offset = 0; offset < before; offset += STEPS_PAGE) {
      const page = checkStepNumbers(await getJson("steps", { ...params, offset, limit: Math.min(STEPS_PAGE, before - offset) }));
      older.push(...page.steps);
      if (!page.received) break;
    }
    return unionSorted(older, newest.steps);
  });
  all.catch(() => {}); // the caller sees the error when it awaits `all`
  return { first, all };
}

function unionSorted(a, b) {
  return [...new Set([...a, ...b])].sort((x, y) => x - y);
}

// Logged batches never change: keep the recent ones (navigation, compare, prefetch).
const batchCache = new Map();
const BATCH_CACHE_SIZE = 48;

/** The batch logged at `step` of `run`, with image keys. Cached. */
export function fetchBatch(run, step, tag) {
  const key = JSON.stringify([run, step, tagParam(tag)]);
  if (batchCache.has(key)) {
    const cached = batchCache.get(key);
    batchCache.delete(key); // most recently used last
    batchCache.set(key, cached);
    return cached;
  }
  // A sample's identity is its index in the record (`index`): positions repeat in the
  // merged record of several validation batches (docs/format.md).
  const pending = getJson("samples", { run, step, tag: tagParam(tag) }).then((batch) => checkBatch(batch, run, step));
  pending.catch(() => batchCache.delete(key));
  batchCache.set(key, pending);
  while (batchCache.size > BATCH_CACHE_SIZE) batchCache.delete(batchCache.keys().next().value);
  return pending;
}

/** Whether fetchBatch(run, step) would answer from the cache. */
export function isBatchCached(run, step, tag) {
  return batchCache.has(JSON.stringify([run, step, tagParam(tag)]));
}

const HISTORY_LIMIT = 2000;

/** Appearances of a file across steps and runs: {appearances: [Appearance], total}. */
export async function fetchHistory({ filename, sampleId, runs }) {
  const params =
    filename !== undefined && filename !== null ? { filename } : { sample_id: sampleId };
  if (runs && runs.length) params.runs = runs.join(",");
  params.limit = HISTORY_LIMIT;
  return checkHistory(await getJson("history", params));
}

/** The URL of a logged image (for <img src>). */
export function imageUrl(key) {
  return url("image", { key }).toString();
}

// -- the Dataset view ----------------------------------------------------------------

/** Runs with per-sample statistics, and why it is off elsewhere: {runs, off}. */
export async function fetchStatsRuns() {
  return checkStatsRuns(await getJson("sample_stats_runs"));
}

// A run's statistics at a step never change (one value per epoch end): keep a few.
const statsCache = new Map();
const STATS_CACHE_SIZE = 8;

/** The statistics of `run` at `step` (null: the latest), columns as Float64Arrays. */
export function fetchSampleStats(run, step) {
  const key = JSON.stringify([run, step]);
  if (!statsCache.has(key)) {
    const pending = getJson("sample_stats", { run, step }).then(checkSampleStats);
    pending.catch(() => statsCache.delete(key));
    statsCache.set(key, pending);
    while (statsCache.size > STATS_CACHE_SIZE) statsCache.delete(statsCache.keys().next().value);
  }
  return statsCache.get(key);
}

/** The URL of a run's ranked suspects as CSV (every sample seen, at `step`). */
export function suspectsCsvUrl(run, step) {
  return url("suspects.csv", { run, step }).toString();
}

/** The latest picture of each of `ids` in `run`: Map(id -> Appearance | null). */
export async function fetchSamplePictures(run, ids) {
  if (!ids.length) return new Map();
  return checkSamplePictures(await getJson("sample_pictures", { run, ids: ids.join(",") }));
}

/** One sample of a run: its statistics at every epoch and its pictures. */
export async function fetchSampleDetail(run, sampleId) {
  return checkSampleDetail(await getJson("sample", { run, sample_id: sampleId }));
}

// -- the loss curve (docs/api.md, /loss_curve and /composition) ------------------------

/** A run's loss curve in `buckets` columns over [start, end] (null: the whole run). */
export async function fetchLossCurve(run, { start = null, end = null, buckets = 1000 } = {}) {
  return checkLossCurve(await getJson("loss_curve", { run, start, end, buckets }));
}

/** One step's loss, trigger and file list (logged or not). */
export async function fetchComposition(run, step) {
  return checkComposition(await getJson("composition", { run, step }));
}
