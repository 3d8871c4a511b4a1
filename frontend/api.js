// The plugin's HTTP API (docs/api.md). The only module that fetches; every answer's
// shape is checked by answers.js before it is returned.
// URLs are relative to the iframe page's <base href="plugin/batch_images/">.

import { checkBatch, checkHistory, checkRuns, checkStepsPage } from "./answers.js";

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

const STEPS_PAGE = 10000;

// The logger's own tag is the plugin's default; other tags are passed along.
function tagParam(tag) {
  return tag && tag !== "batch_images" ? tag : undefined;
}

/** Every kept step of a run, ordered by step: [StepSummary]. */
export async function fetchSteps(run, tag) {
  const steps = [];
  for (let offset = 0; ; offset += STEPS_PAGE) {
    const page = checkStepsPage(await getJson("steps", { run, tag: tagParam(tag), offset, limit: STEPS_PAGE }));
    steps.push(...page.steps);
    if (!page.received || offset + page.received >= page.total) break;
  }
  return steps;
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
