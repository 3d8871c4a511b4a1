// The gallery's current view state, kept in step with the URL: read at start, written
// on every change, followed when the URL changes under the page. state.js says what
// the state holds and how it reads in a URL; this module holds the one current state.

import { MODES } from "./contract.js";
import { onUrlChange, readState, stateToParams, writeState } from "./state.js";

export function sameJson(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

export class StateSync {
  constructor() {
    this.state = readState();
  }

  /** Applies a patch and writes the URL; returns the keys whose values changed. */
  patch(patch) {
    const before = this.state;
    this.state = { ...before, ...patch };
    const changed = Object.keys(patch).filter((key) => !sameJson(before[key], this.state[key]));
    if (changed.length) writeState(this.state);
    return changed;
  }

  /** Replaces the state (a corrected one) and writes the URL when it differs. */
  replace(state) {
    if (sameJson(state, this.state)) return;
    this.state = state;
    writeState(this.state);
  }

  /**
   * Calls `listener(before, after)` when the URL comes to hold another state (a link
   * pasted into the same tab, the browser's back button); the state is then the URL's.
   */
  follow(listener) {
    onUrlChange(() => {
      const next = readState();
      if (sameJson(stateToParams(next), stateToParams(this.state))) return;
      const before = this.state;
      this.state = next;
      listener(before, next);
    });
  }
}

/**
 * The state made consistent with the experiments that exist (`groups`, runs.js):
 * known runs only (the first one when none is left), a mode one of them has, the
 * opened sample only in a shown run.
 */
export function fitStateToRuns(state, groups) {
  const fitted = { ...state };
  fitted.runs = fitted.runs.filter((name) => groups.has(name));
  if (!fitted.runs.length && groups.size) fitted.runs = [groups.keys().next().value];
  const selected = fitted.runs.map((name) => groups.get(name));
  if (!selected.some((group) => group.modes[fitted.mode])) {
    const other = MODES.find((mode) => selected.some((group) => group.modes[mode]));
    if (other) fitted.mode = other;
  }
  if (fitted.open && !fitted.runs.includes(fitted.open.group)) fitted.open = null;
  return fitted;
}
