// Runs, modes and steps: grouping TensorBoard runs into experiments and aligning
// steps across them. Pure functions.

import { BATCHES_TAG, MODES } from "./contract.js";

export const ROOT_GROUP = ".";
// How every view names the root group (runs directly in the log directory).
export const ROOT_LABEL = "(top level)";

/** The name every view shows for a group (experiment). */
export function groupLabel(name) {
  return name === ROOT_GROUP ? ROOT_LABEL : name;
}

/** The name every view shows for a run: its group's, the mode apart. */
export function runLabel(run) {
  return groupLabel(groupName({ run }));
}

/**
 * The experiment a run belongs to: its name without the trailing mode directory
 * ("demo/a/train" -> "demo/a"; "train" -> "."). Runs not in a mode directory are
 * their own group.
 */
export function groupName(run) {
  const parts = String(run.run).split("/");
  const last = parts[parts.length - 1];
  let name = String(run.run);
  if (MODES.includes(last) && (!run.mode || run.mode === last)) {
    name = parts.length > 1 ? parts.slice(0, -1).join("/") : ROOT_GROUP;
  }
  // A series under another tag than the logger's own is its own experiment.
  return run.tag && run.tag !== BATCHES_TAG ? `${name} [${run.tag}]` : name;
}

/** A key for a (run, tag) series. */
export function seriesKey(run, tag) {
  return JSON.stringify([run, tag || BATCHES_TAG]);
}

/** The mode of a run: as the plugin says, else from the directory name. */
export function modeOf(run) {
  if (MODES.includes(run.mode)) return run.mode;
  const last = String(run.run).split("/").pop();
  return MODES.includes(last) ? last : "train";
}

/**
 * Groups runs into experiments: Map(group name -> {name, modes: {train, validation}}),
 * ordered by name.
 */
export function groupRuns(runs) {
  const groups = new Map();
  for (const run of runs) {
    const mode = modeOf(run);
    let name = groupName(run);
    if (groups.has(name) && groups.get(name).modes[mode]) name = `${run.run} [${run.tag || BATCHES_TAG}]`;
    if (!groups.has(name)) groups.set(name, { name, modes: {} });
    groups.get(name).modes[mode] = run;
  }
  return new Map([...groups.entries()].sort((a, b) => a[0].localeCompare(b[0])));
}

/** Index of the first element >= target in a sorted array. */
function lowerBound(sorted, target) {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (sorted[middle] < target) low = middle + 1;
    else high = middle;
  }
  return low;
}

/** The logged step nearest to `target` (ties go to the earlier step); null if none. */
export function nearestStep(sortedSteps, target) {
  if (!sortedSteps.length) return null;
  if (target === null || target === undefined) return sortedSteps[sortedSteps.length - 1];
  const index = lowerBound(sortedSteps, target);
  if (index === 0) return sortedSteps[0];
  if (index === sortedSteps.length) return sortedSteps[sortedSteps.length - 1];
  const before = sortedSteps[index - 1];
  const after = sortedSteps[index];
  return target - before <= after - target ? before : after;
}

/** Index of `step` in a sorted array, or -1. */
export function indexOfStep(sortedSteps, step) {
  const index = lowerBound(sortedSteps, step);
  return sortedSteps[index] === step ? index : -1;
}

/** The sorted union of several sorted step lists. */
export function unionSteps(lists) {
  const all = new Set();
  for (const list of lists) for (const step of list) all.add(step);
  return [...all].sort((a, b) => a - b);
}
