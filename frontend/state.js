// The view state and its place in the URL.
//
// Users copy TensorBoard's top-level URL, not the plugin iframe's, so the state lives
// in the top window's fragment, in TensorBoard's own scheme: "#<tab>&key=value&...".
// TensorBoard keeps keys it does not know when it rewrites the fragment, and its
// plugin API reads plugin data from keys named "p.<plugin>.<key>", so ours are
// "p.batch_images.step=120" and so on. The iframe's own fragment holds the same
// state, so the page also works when opened on its own. Both are written with
// history.replaceState: no history entries, no hashchange for TensorBoard to handle.

import { PLUGIN_NAME } from "./contract.js";
import { BOX_CHOICES, DEFAULT_BOX_OPACITY } from "./boxes.js";
import { DEFAULT_MASK_OPACITY, MASK_CHOICES } from "./masks.js";
import { SORTS } from "./samples.js";

const PREFIX = `p.${PLUGIN_NAME}.`;
const TAB_KEY = "__tab__";

export function defaultState() {
  return {
    runs: [], // experiment (group) names, see runs.js
    mode: "train",
    step: null, // null: the latest logged step
    sort: "position",
    wrong: false,
    label: "",
    pred: "",
    q: "",
    flag: "",
    max_iou: "", // keep samples whose mean IoU is at most this (0..1); "": no filter
    masks: "prediction", // the mask drawn: "prediction", "label" or "off"
    mask_opacity: DEFAULT_MASK_OPACITY, // 0..100
    boxes: "both", // the boxes drawn: "both", "label", "prediction" or "off"
    box_opacity: DEFAULT_BOX_OPACITY, // 0..100
    min_boxes: "", // keep samples with at least / at most this many label boxes
    max_boxes: "",
    open: null, // {group, index}: the sample (index in its record) in the detail view
    history: null, // filename whose history strip is shown
    // The Dataset view (dataset.js): per-sample statistics of whole runs.
    view: "batches", // or "dataset"
    ds_runs: [], // run names (e.g. "exp/train") with sample statistics, at most 2
    ds_epoch: null, // index into a run's statistics steps; null: the latest
    ds_sample: null, // {run, id}: the sample opened from the data map or the suspects
    ds_cell: null, // {run, given, predicted}: the confusion-matrix cell opened
  };
}

// Run names may hold anything; only "," (the separator) and "%" are escaped.
function joinNames(names) {
  return names.map((name) => name.replaceAll("%", "%25").replaceAll(",", "%2C")).join(",");
}

function splitNames(text) {
  return text
    .split(",")
    .filter(Boolean)
    .map((name) => name.replaceAll("%2C", ",").replaceAll("%25", "%"));
}

/** The state as ordered [key, value] string pairs, defaults left out. */
export function stateToParams(state) {
  const params = [];
  if (state.runs.length) params.push(["runs", joinNames(state.runs)]);
  if (state.mode !== "train") params.push(["mode", state.mode]);
  if (state.step !== null) params.push(["step", String(state.step)]);
  if (state.sort !== "position") params.push(["sort", state.sort]);
  if (state.wrong) params.push(["wrong", "1"]);
  for (const key of ["label", "pred", "q", "flag", "max_iou", "min_boxes", "max_boxes"]) {
    if (state[key]) params.push([key, state[key]]);
  }
  if (state.masks !== "prediction") params.push(["masks", state.masks]);
  if (state.mask_opacity !== DEFAULT_MASK_OPACITY) params.push(["mask_opacity", String(state.mask_opacity)]);
  if (state.boxes !== "both") params.push(["boxes", state.boxes]);
  if (state.box_opacity !== DEFAULT_BOX_OPACITY) params.push(["box_opacity", String(state.box_opacity)]);
  if (state.open) {
    params.push(["open", String(state.open.index)]);
    params.push(["open_run", state.open.group]);
  }
  if (state.history !== null) params.push(["history", state.history]);
  if (state.view === "dataset") params.push(["view", "dataset"]);
  if (state.ds_runs.length) params.push(["ds_runs", joinNames(state.ds_runs)]);
  if (state.ds_epoch !== null) params.push(["ds_epoch", String(state.ds_epoch)]);
  if (state.ds_sample) {
    params.push(["ds_sample", String(state.ds_sample.id)]);
    params.push(["ds_sample_run", state.ds_sample.run]);
  }
  if (state.ds_cell) {
    params.push(["ds_cell", `${state.ds_cell.given},${state.ds_cell.predicted}`]);
    params.push(["ds_cell_run", state.ds_cell.run]);
  }
  return params;
}

/** A state from a {key: value} object (unknown or malformed values are ignored). */
export function paramsToState(params) {
  const state = defaultState();
  const get = (key) => (typeof params[key] === "string" ? params[key] : null);
  if (get("runs")) state.runs = splitNames(get("runs"));
  if (get("mode") === "validation") state.mode = "validation";
  if (/^-?\d+$/.test(get("step") || "")) state.step = Number(get("step"));
  if (SORTS.some((sort) => sort.value === get("sort"))) state.sort = get("sort");
  state.wrong = get("wrong") === "1";
  for (const key of ["label", "pred", "q", "flag"]) state[key] = get(key) || "";
  if (/^(\d+(\.\d*)?|\.\d+)$/.test(get("max_iou") || "")) state.max_iou = get("max_iou");
  if (MASK_CHOICES.some((choice) => choice.value === get("masks"))) state.masks = get("masks");
  if (/^\d+$/.test(get("mask_opacity") || "")) state.mask_opacity = Math.min(100, Number(get("mask_opacity")));
  if (BOX_CHOICES.some((choice) => choice.value === get("boxes"))) state.boxes = get("boxes");
  if (/^\d+$/.test(get("box_opacity") || "")) state.box_opacity = Math.min(100, Number(get("box_opacity")));
  for (const key of ["min_boxes", "max_boxes"]) if (/^\d+$/.test(get(key) || "")) state[key] = get(key);
  if (/^\d+$/.test(get("open") || "") && get("open_run") !== null) {
    state.open = { index: Number(get("open")), group: get("open_run") };
  }
  if (get("history") !== null) state.history = get("history");
  if (get("view") === "dataset") state.view = "dataset";
  if (get("ds_runs")) state.ds_runs = splitNames(get("ds_runs")).slice(0, 2);
  if (/^\d+$/.test(get("ds_epoch") || "")) state.ds_epoch = Number(get("ds_epoch"));
  if (/^\d+$/.test(get("ds_sample") || "") && get("ds_sample_run") !== null) {
    state.ds_sample = { id: Number(get("ds_sample")), run: get("ds_sample_run") };
  }
  const cell = /^(\d+),(\d+)$/.exec(get("ds_cell") || "");
  if (cell && get("ds_cell_run") !== null) {
    state.ds_cell = { given: Number(cell[1]), predicted: Number(cell[2]), run: get("ds_cell_run") };
  }
  return state;
}

function decode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Parses a fragment the way TensorBoard does ("tab&key=value&..."). */
export function parseTensorBoardHash(hash) {
  const dict = {};
  for (const piece of hash.replace(/^#/, "").split("&")) {
    if (!piece) continue;
    const parts = piece.split("=");
    if (parts.length === 1) dict[TAB_KEY] = decode(parts[0]);
    else if (parts.length === 2) dict[decode(parts[0])] = decode(parts[1]);
  }
  return dict;
}

/** The top TensorBoard window when it is reachable (same origin), else null. */
function hostWindow() {
  try {
    if (window.parent === window) return null;
    void window.parent.location.hash; // throws when cross-origin
    return window.parent;
  } catch {
    return null;
  }
}

/** The state from the top window's URL, else from the iframe's own. */
export function readState() {
  const host = hostWindow();
  if (host) {
    const dict = parseTensorBoardHash(host.location.hash);
    const ours = {};
    for (const [key, value] of Object.entries(dict)) {
      if (key.startsWith(PREFIX)) ours[key.slice(PREFIX.length)] = value;
    }
    if (Object.keys(ours).length) return paramsToState(ours);
  }
  return paramsToState(Object.fromEntries(new URLSearchParams(location.hash.slice(1))));
}

/**
 * Calls `listener` when the URL's fragment changes under us (a link pasted into the
 * same tab, the browser's back button), while TensorBoard shows this plugin's tab.
 */
export function onUrlChange(listener) {
  const host = hostWindow();
  const target = host || window;
  target.addEventListener("hashchange", () => {
    if (host) {
      const tab = parseTensorBoardHash(host.location.hash)[TAB_KEY];
      if (tab !== undefined && tab !== PLUGIN_NAME) return;
    }
    listener();
  });
}

/** Writes the state into the iframe's fragment and the top window's. */
export function writeState(state) {
  const params = stateToParams(state);
  // Absolute URLs: a relative one would resolve against the page's <base href>.
  const own = new URL(location.href);
  own.hash = new URLSearchParams(params).toString();
  if (own.href !== location.href) history.replaceState(history.state, "", own.href);
  const host = hostWindow();
  if (!host) return;
  const pieces = host.location.hash.replace(/^#/, "").split("&").filter(Boolean);
  const tab = pieces.find((piece) => !piece.includes("="));
  if (tab !== undefined && decode(tab) !== PLUGIN_NAME) return; // another tab is showing
  const kept = pieces.filter((piece) => {
    const key = decode(piece.split("=")[0]);
    return piece.includes("=") && !key.startsWith(PREFIX);
  });
  const ours = params.map(
    ([key, value]) => encodeURIComponent(PREFIX + key) + "=" + encodeURIComponent(value),
  );
  const hash = "#" + [PLUGIN_NAME, ...kept, ...ours].join("&");
  if (host.location.hash === hash) return;
  const url = new URL(host.location.href);
  url.hash = hash;
  host.history.replaceState(host.history.state, "", url.toString());
}
