// What the Batches view shows, asked of the API (api.js) and kept while the page
// lives: the runs grouped into experiments, each run's list of steps (page by page),
// the batches of the shown columns (api.js caches those), and each file's history.
// TensorBoard's reload forgets the step lists and histories (clear()).

import * as api from "./api.js";
import { groupRuns, nearestStep, seriesKey } from "./runs.js";

export class GalleryData {
  constructor() {
    this.groups = new Map(); // group name -> {name, modes: {train, validation}}: runs.js
    this.runGroup = new Map(); // seriesKey(run, tag) -> group name
    this.stepsByRun = new Map(); // seriesKey(run, tag) -> {first, all, steps}: api.fetchStepList
    this.historyByFile = new Map(); // filename -> Promise<{appearances, total}>
  }

  /** Forgets what may have grown since (TensorBoard's reload): step lists, histories. */
  clear() {
    this.stepsByRun.clear();
    this.historyByFile.clear();
  }

  /** Asks for the runs and groups them into experiments; throws what the API threw. */
  async loadRuns() {
    const runs = await api.fetchRuns();
    this.groups = groupRuns(runs);
    this.runGroup = new Map();
    for (const group of this.groups.values()) {
      for (const run of Object.values(group.modes)) this.runGroup.set(seriesKey(run.run, run.tag), group.name);
    }
  }

  /** The experiment (group name) of a run's series, else the run's name. */
  groupOf(run, tag) {
    return this.runGroup.get(seriesKey(run, tag)) ?? run;
  }

  /** One column per selected experiment: its run in the state's mode (or none). */
  columnsFor(state) {
    return state.runs.map((name) => {
      const run = this.groups.get(name).modes[state.mode] || null;
      return { group: name, mode: state.mode, run: run ? run.run : null, tag: run ? run.tag : null, info: run, step: null, batch: null, samples: [], error: null, broken: null };
    });
  }

  /** Whether a column's run has no step list asked for yet. */
  needsSteps(column) {
    return Boolean(column.run) && !this.stepsByRun.has(seriesKey(column.run, column.tag));
  }

  /**
   * A run's steps as far as they have arrived: the newest page first, every step once
   * the other pages are in (`entry.steps` then holds them). `target`: the step the view
   * wants; a step older than the first page waits for every page. When the first page
   * is returned while the others are still coming, `afterAll()` is called, and the
   * function it returns is called once they are in. Returns {steps, total, complete}.
   */
  async loadSteps(run, tag, target, afterAll) {
    const key = seriesKey(run, tag);
    if (!this.stepsByRun.has(key)) {
      const entry = { ...api.fetchStepList(run, tag), steps: null };
      entry.first.catch(() => this.stepsByRun.delete(key));
      entry.all.then(
        (steps) => {
          entry.steps = steps;
        },
        () => this.stepsByRun.delete(key),
      );
      this.stepsByRun.set(key, entry);
    }
    const entry = this.stepsByRun.get(key);
    if (entry.steps) return { steps: entry.steps, total: entry.steps.length, complete: true };
    const first = await entry.first;
    if (first.complete) return first;
    if (entry.steps) return { steps: entry.steps, total: entry.steps.length, complete: true };
    if (target === null || (first.steps.length && target >= first.steps[0])) {
      // Paint now; when every step is in, the caller may draw again.
      entry.all.then(afterAll(), () => {});
      return first;
    }
    const steps = await entry.all;
    return { steps, total: steps.length, complete: true };
  }

  /**
   * The step lists of the columns' runs: {stepLists: Map(seriesKey -> [step]), listing:
   * the lists still arriving}. A column whose steps could not be loaded gets `error`.
   * `afterAll`: as for loadSteps.
   */
  async loadStepLists(columns, target, afterAll) {
    const stepLists = new Map();
    const listing = []; // runs whose steps are still arriving (only their newest page)
    await Promise.all(
      columns.map(async (column) => {
        if (!column.run) return;
        try {
          const list = await this.loadSteps(column.run, column.tag, target, afterAll);
          stepLists.set(seriesKey(column.run, column.tag), list.steps);
          if (!list.complete) listing.push(list);
        } catch (error) {
          column.error = `Could not load the steps of ${column.run}: ${error.message}`;
        }
      }),
    );
    return { stepLists, listing };
  }

  /** The columns whose batch is not in api.js's cache yet. */
  batchesToFetch(columns) {
    return columns.filter((column) => column.run && column.step !== null && !api.isBatchCached(column.run, column.step, column.tag));
  }

  /** Loads each column's batch at its step: `batch`, or `broken` (an unusable record), or `error`. */
  async loadBatches(columns) {
    await Promise.all(
      columns.map(async (column) => {
        if (!column.run || column.step === null || column.error) return;
        try {
          const batch = await api.fetchBatch(column.run, column.step, column.tag);
          if (batch.error) column.broken = batch.error; // a broken step: its record is unusable
          else column.batch = batch;
        } catch (error) {
          column.error = `Could not load step ${column.step} of ${column.run}: ${error.message}`;
        }
      }),
    );
  }

  /** Asks for the batches of the steps before and after `stepIndex` of `steps`, for stepping. */
  prefetchNeighbours(columns, stepLists, steps, stepIndex) {
    for (const neighbour of [steps[stepIndex + 1], steps[stepIndex - 1]]) {
      if (neighbour === undefined) continue;
      for (const column of columns) {
        const list = column.run && stepLists.get(seriesKey(column.run, column.tag));
        if (!list) continue;
        const step = nearestStep(list, neighbour);
        if (!api.isBatchCached(column.run, step, column.tag)) api.fetchBatch(column.run, step, column.tag).catch(() => {});
      }
    }
  }

  /** Whether the history of `filename` was asked for already. */
  hasHistory(filename) {
    return this.historyByFile.has(filename);
  }

  /** The history of a file (every appearance): a Promise, asked for once. */
  history(filename) {
    if (!this.historyByFile.has(filename)) {
      const pending = api.fetchHistory({ filename });
      pending.catch(() => this.historyByFile.delete(filename));
      this.historyByFile.set(filename, pending);
    }
    return this.historyByFile.get(filename);
  }
}

/** While pages of steps are arriving: how many of how many are listed. */
export function listingNote(listing = []) {
  if (!listing.length) return "";
  const total = listing.reduce((sum, list) => sum + list.total, 0);
  const shown = listing.reduce((sum, list) => sum + list.steps.length, 0);
  return `Listing steps: the newest ${shown.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} so far…`;
}
