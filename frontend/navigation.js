// Moving around the Batches view: between logged steps, to a file's appearance, and
// with the keyboard (steps, tiles of the grid, the detail dialog, Escape). The moves
// are state patches; the controller (app.js) applies them.

import { MODES } from "./contract.js";
import { modeOf } from "./runs.js";

/**
 * The patch a step move makes, or null (nothing to do).
 * move: -1 / +1 (previous / next logged step), {step} (exact), {index} (scrubber);
 * view: {steps (the sorted union), stepIndex}; step: the state's step (null: latest).
 */
export function stepPatch(move, { steps, stepIndex }, step) {
  if (!steps.length) return null;
  let index;
  if (move === -1 || move === 1) index = Math.max(0, Math.min(steps.length - 1, stepIndex + move));
  else if (move && Number.isInteger(move.index)) index = Math.max(0, Math.min(steps.length - 1, move.index));
  else if (move && Number.isFinite(move.step)) {
    // The controller resolves a step that was not logged to the nearest, and says so.
    return move.step !== step ? { step: move.step, open: null } : null;
  } else return null;
  if (index === stepIndex && step !== null) return null;
  return { step: steps[index], open: null };
}

/**
 * The patch that shows a file's appearance (history.js): its run (added to the shown
 * ones), mode and step, with that sample open (by its index in the record).
 * `group`: the appearance's experiment.
 */
export function appearancePatch(item, state, group) {
  const runs = state.runs.includes(group) ? state.runs : [...state.runs, group];
  const open = Number.isInteger(item.index) ? { group, index: item.index } : null;
  return { runs, mode: MODES.includes(item.mode) ? item.mode : modeOf(item), step: item.step, open };
}

/**
 * The gallery's keys, given the current state. gallery: {setState(patch),
 * moveStep(move), moveDetail(offset), firstTile() -> element, stepInput() -> element}.
 */
export function handleKey(event, state, gallery) {
  if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) return;
  const target = event.target instanceof Element ? event.target : null;
  const typing = target && target.matches("input, select, textarea") && !target.matches("input[type=checkbox]");
  if (event.key === "Escape") {
    if (state.view === "dataset" && state.ds_sample) gallery.setState({ ds_sample: null });
    else if (state.open) gallery.setState({ open: null });
    else if (state.history !== null) gallery.setState({ history: null });
    else if (typing) target.blur();
    else return;
    event.preventDefault();
    return;
  }
  if (typing) return;
  if (state.view === "dataset") return;
  if (state.open) {
    if (event.key === "ArrowLeft") gallery.moveDetail(-1);
    else if (event.key === "ArrowRight") gallery.moveDetail(1);
    else return;
    event.preventDefault();
    return;
  }
  const tile = target && target.closest(".tile");
  if (tile && ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"].includes(event.key)) {
    moveTileFocus(tile, event.key, () => gallery.stepInput().focus());
    event.preventDefault();
    return;
  }
  const actions = {
    ArrowLeft: () => gallery.moveStep(-1),
    ArrowRight: () => gallery.moveStep(1),
    "[": () => gallery.moveStep(-1),
    "]": () => gallery.moveStep(1),
    PageUp: () => gallery.moveStep(-1),
    PageDown: () => gallery.moveStep(1),
    Home: () => gallery.moveStep({ index: 0 }),
    End: () => gallery.setState({ step: null, open: null }),
    ArrowDown: () => gallery.firstTile()?.focus(),
  };
  if (target && target.closest(".history") && event.key.startsWith("Arrow")) return;
  const action = actions[event.key];
  if (!action) return;
  event.preventDefault();
  action();
}

/** Moves the focus from a tile to its neighbour in the grid (`onAbove` past the top row). */
function moveTileFocus(tile, key, onAbove) {
  const tiles = [...tile.parentElement.children];
  const index = tiles.indexOf(tile);
  const top = tiles[0].offsetTop;
  const perRow = Math.max(1, tiles.filter((item) => item.offsetTop === top).length);
  const offset = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -perRow, ArrowDown: perRow }[key];
  const next = tiles[index + offset];
  if (next) next.focus();
  else if (key === "ArrowUp") onAbove();
}

/** Focuses the tile of sample `index` (its index in the record) in the column of `group`. */
export function focusTile(main, { group, index }) {
  const column = [...main.querySelectorAll(".column")].find((item) => item.dataset.group === group);
  const tile = column && column.querySelector(`.tile[data-index="${Number(index)}"]`);
  if (tile) tile.focus();
}

/** Where the focused tile is: {group, index among its column's tiles}, or null. */
export function focusedTilePlace() {
  const focused = document.activeElement && document.activeElement.closest ? document.activeElement.closest(".tile") : null;
  return focused
    ? { group: focused.closest(".column")?.dataset.group, index: [...focused.parentElement.children].indexOf(focused) }
    : null;
}

/** Focuses the tile at a place (focusedTilePlace), or the last one of a shorter column. */
export function focusTileAt(main, place) {
  const column = [...main.querySelectorAll(".column")].find((item) => item.dataset.group === place.group);
  const tiles = column ? column.querySelectorAll(".tile") : [];
  if (tiles.length) tiles[Math.min(place.index, tiles.length - 1)].focus({ preventScroll: true });
}
