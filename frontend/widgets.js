// Small pieces of DOM that several views share: a sample's verdict, flags and picture,
// caption rows, labelled fields, close buttons, message boxes, the scrubber. Each
// function builds and returns nodes (dom.js's h); none fetches or holds state.

import { imageUrl } from "./api.js";
import { h } from "./dom.js";
import { FLAG_HELP } from "./format.js";
import { boxOverlay } from "./boxes.js";
import { maskCanvas, maskKind } from "./masks.js";

const SMALL_IMAGE = 96; // images this small are scaled up with hard pixel edges

/** Right / wrong / unknown, with a glyph and a word so colour is never the only cue. */
export function verdictOf(sample) {
  if (sample.correct === true) return { kind: "right", glyph: "✓", text: "right" };
  if (sample.correct === false) return { kind: "wrong", glyph: "✗", text: "wrong" };
  return null;
}

/** " is-right", " is-wrong" or "": the class suffix of an item with a verdict. */
export function verdictClass(sample) {
  const verdict = verdictOf(sample);
  return verdict ? ` is-${verdict.kind}` : "";
}

export function verdictBadge(sample, extraClass = "") {
  const verdict = verdictOf(sample);
  if (!verdict) return null;
  return h(
    "span",
    { className: `verdict verdict-${verdict.kind} ${extraClass}`.trim(), dataset: { verdict: verdict.kind } },
    h("span", { className: "glyph", text: verdict.glyph, attrs: { "aria-hidden": "true" } }),
    h("span", { className: "verdict-text", text: verdict.text }),
  );
}

export function flagBadges(flags) {
  if (!flags || !flags.length) return null;
  return h(
    "span",
    { className: "flags" },
    flags.map((flag) =>
      h("span", { className: "flag", text: flag, title: FLAG_HELP[flag] || flag, dataset: { flag } }),
    ),
  );
}

/**
 * "picture lost" in place of a picture: the step has no image for this sample (its
 * pack file is missing or damaged, docs/format.md), or the image did not load.
 */
export function lostPicture(why = "") {
  return h("div", {
    className: "picture-lost",
    text: "picture lost",
    title: why || "the logged picture could not be read",
    attrs: { role: "img", "aria-label": "picture lost" },
  });
}

/**
 * An <img> for a logged image: lazy, sized by its logged shape, pixelated when small;
 * "picture lost" when the sample has none or it fails to load (one tile, not the page).
 */
export function sampleImage(sample, { alt = "", lazy = true } = {}) {
  if (!sample.image) return lostPicture(sample.lost ? "this step's pack file could not be read" : "");
  const [height, width] = sample.image_shape || [];
  const image = h("img", {
    alt,
    decoding: "async",
    attrs: { loading: lazy ? "lazy" : "eager", width, height, draggable: "false" },
  });
  if (Math.max(height || 0, width || 0) <= SMALL_IMAGE) image.classList.add("pixelated");
  image.addEventListener("error", () => image.replaceWith(lostPicture("the picture did not load")), { once: true });
  image.src = imageUrl(sample.image);
  return image;
}

/**
 * The picture with its mask: a `mask-overlay` canvas over it (classes, binary) or a
 * `value-map` canvas beside it (values); the picture alone without masks or when off.
 * `boxes` ("both", "label", "prediction", "off"): the sample's boxes in a `box-overlay`
 * SVG over it (`boxOptions`: boxes.js's boxOverlay options).
 * Returns [nodes, kind drawn or null].
 */
export function pictureWithMask(sample, batch, choice, image, boxes = "off", boxOptions = {}) {
  const canvas = choice === "off" ? null : maskCanvas(sample, batch, choice);
  const overlay = boxOverlay(sample, batch, boxes, boxOptions);
  if (!canvas) return [overlay ? [image, overlay] : [image], null];
  if (image.classList.contains("pixelated")) canvas.classList.add("pixelated");
  return [overlay ? [image, canvas, overlay] : [image, canvas], maskKind(batch)];
}

/** A caption row: its key, then its value node (and anything after it). */
export function captionRow(key, valueNode, extra) {
  return h("div", { className: "cap-row" }, h("span", { className: "cap-key", text: key }), valueNode, extra);
}

/** A caption row whose value is plain text. */
export function captionText(key, value) {
  return captionRow(key, h("span", { className: "cap-value", text: value }));
}

/** A control with its label above it. */
export function field(labelText, control, className = "") {
  return h("label", { className: `field ${className}`.trim() }, h("span", { className: "field-label", text: labelText }), control);
}

/** A group of a toolbar: a label, then its controls. */
export function toolbarGroup(labelText, className, ...controls) {
  return h("div", { className: `toolbar-group ${className}`.trim() }, h("span", { className: "field-label", text: labelText }), controls);
}

/** The ✕ button of a panel or dialog (Escape does the same). */
export function closeButton(label, onClose) {
  return h("button", { className: "icon-button", type: "button", text: "✕", title: "Close (Escape)", attrs: { "aria-label": label }, on: { click: onClose } });
}

/** A small message in place of content; kind: "error", "loading" or none. */
export function messageBox(text, kind = null) {
  return h(
    "div",
    { className: "state-box small" + (kind === "error" ? " error" : "") },
    h("p", { className: kind === "loading" ? "loading-text" : null, text }),
  );
}

/**
 * A range input over positions 0..max (the caller sets `max` and `value`):
 * `onMove(index)` on every movement, `onSettle(index)` once it rests for `delay` ms.
 */
export function scrubber({ control, label, onMove = () => {}, onSettle, delay = 60 }) {
  let timer = null;
  const input = h("input", {
    type: "range",
    className: "scrubber",
    dataset: { control },
    min: "0",
    max: "0",
    step: "1",
    attrs: { "aria-label": label },
    on: {
      input: () => {
        clearTimeout(timer);
        const index = Number(input.value);
        onMove(index);
        timer = setTimeout(() => onSettle(index), delay);
      },
    },
  });
  return input;
}
