// Segmentation masks (docs/format.md, `masks`): the label or predicted mask of a sample
// drawn over its picture ("classes", "binary"), or a dense output beside it ("values").
// A mask is a PNG of one grey value a pixel, read back through a canvas (same origin).

import { imageUrl } from "./api.js";
import { MASK_BINARY, MASK_CLASSES, MASK_TYPES, MASK_VALUES } from "./contract.js";
import { h } from "./dom.js";

export const MASK_CHOICES = [
  { value: "prediction", text: "Prediction" },
  { value: "label", text: "Label" },
  { value: "off", text: "Off" },
];
export const DEFAULT_MASK_OPACITY = 50;
const IGNORED = 255; // a mask pixel of no valid class

// 20 distinct colours (Sasha Trubetskoy's list); class i gets PALETTE[i % 20].
export const PALETTE = [
  [230, 25, 75],
  [60, 180, 75],
  [255, 225, 25],
  [0, 130, 200],
  [245, 130, 48],
  [145, 30, 180],
  [70, 240, 240],
  [240, 50, 230],
  [210, 245, 60],
  [250, 190, 212],
  [0, 128, 128],
  [220, 190, 255],
  [170, 110, 40],
  [255, 250, 200],
  [128, 0, 0],
  [170, 255, 195],
  [128, 128, 0],
  [255, 215, 180],
  [0, 0, 128],
  [128, 128, 128],
];

// matplotlib's viridis at 0, 0.1, ..., 1; linear in between.
const VIRIDIS = [
  [68, 1, 84],
  [72, 36, 117],
  [65, 68, 135],
  [53, 95, 141],
  [42, 120, 142],
  [33, 145, 140],
  [34, 168, 132],
  [68, 191, 112],
  [122, 209, 81],
  [189, 223, 38],
  [253, 231, 37],
];

export function classColour(index) {
  return PALETTE[((index % PALETTE.length) + PALETTE.length) % PALETTE.length];
}

export function colourHex([red, green, blue]) {
  return "#" + [red, green, blue].map((part) => part.toString(16).padStart(2, "0")).join("");
}

/** viridis(t) for t in [0, 1]: [r, g, b]. */
export function viridis(t) {
  const position = Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1);
  const low = Math.min(VIRIDIS.length - 2, Math.floor(position));
  const weight = position - low;
  return VIRIDIS[low].map((part, channel) => Math.round(part + (VIRIDIS[low + 1][channel] - part) * weight));
}

/** The batch's mask kind ("classes", "binary", "values"), or null. */
export function maskKind(batch) {
  return batch && MASK_TYPES.includes(batch.masks) ? batch.masks : null;
}

/** The image key of the mask `choice` ("label", "prediction") shows, or null. */
export function maskKey(sample, choice) {
  if (choice === "label") return sample.label_mask_image ?? null;
  if (choice === "prediction") return sample.prediction_mask_image ?? null;
  return null;
}

// RGBA of each grey value, per kind (values: viridis of g / 255).
const TABLES = new Map();

function colourTable(kind) {
  if (!TABLES.has(kind)) {
    const table = new Uint8ClampedArray(256 * 4);
    for (let grey = 0; grey < 256; grey++) {
      let rgba = null;
      if (kind === MASK_VALUES) rgba = [...viridis(grey / 255), 255];
      else if (kind === MASK_BINARY) rgba = grey === 1 ? [...classColour(1), 255] : null;
      else if (grey !== IGNORED) rgba = [...classColour(grey), 255];
      if (rgba) table.set(rgba, grey * 4);
    }
    TABLES.set(kind, table);
  }
  return TABLES.get(kind);
}

// Decoded masks by key (a key names immutable content): a few batches' worth.
const maskCache = new Map();
const MASK_CACHE_SIZE = 512;

/** The grey values of a mask PNG: Promise<{width, height, grey: Uint8Array}>. */
export function loadMask(key) {
  if (!maskCache.has(key)) {
    const pending = (async () => {
      const image = new Image();
      image.src = imageUrl(key);
      await image.decode();
      const width = image.naturalWidth;
      const height = image.naturalHeight;
      const scratch = document.createElement("canvas");
      scratch.width = width;
      scratch.height = height;
      const context = scratch.getContext("2d", { willReadFrequently: true });
      context.drawImage(image, 0, 0);
      const rgba = context.getImageData(0, 0, width, height).data;
      const grey = new Uint8Array(width * height);
      for (let i = 0; i < grey.length; i++) grey[i] = rgba[i * 4];
      return { width, height, grey };
    })();
    pending.catch(() => maskCache.delete(key));
    maskCache.set(key, pending);
    while (maskCache.size > MASK_CACHE_SIZE) maskCache.delete(maskCache.keys().next().value);
  }
  return maskCache.get(key);
}

function drawMask(canvas, mask, kind) {
  canvas.width = mask.width;
  canvas.height = mask.height;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(mask.width, mask.height);
  const table = colourTable(kind);
  for (let i = 0; i < mask.grey.length; i++) {
    const offset = mask.grey[i] * 4;
    pixels.data[i * 4] = table[offset];
    pixels.data[i * 4 + 1] = table[offset + 1];
    pixels.data[i * 4 + 2] = table[offset + 2];
    pixels.data[i * 4 + 3] = table[offset + 3];
  }
  context.putImageData(pixels, 0, 0);
}

/**
 * The canvas of a sample's mask, or null (masks off, or none): `mask-overlay` (over the
 * picture) for classes and binary masks, `value-map` (beside it) for values. It is drawn
 * when the mask arrives; `data-state` says `loading`, `drawn` or `error`.
 */
export function maskCanvas(sample, batch, choice) {
  const kind = maskKind(batch);
  const key = maskKey(sample, choice);
  if (!kind || !key) return null;
  const [height, width] = batch.mask_shape || sample.image_shape || [];
  const canvas = h("canvas", {
    className: kind === MASK_VALUES ? "value-map" : "mask-overlay",
    dataset: { mask: choice, kind, state: "loading" },
    attrs: {
      width: width || 1,
      height: height || 1,
      role: kind === MASK_VALUES ? "img" : null,
      "aria-label": kind === MASK_VALUES ? `${choice} map` : null,
      "aria-hidden": kind === MASK_VALUES ? null : "true",
    },
  });
  loadMask(key).then(
    (mask) => {
      drawMask(canvas, mask, kind);
      canvas.dataset.state = "drawn";
    },
    () => {
      canvas.dataset.state = "error";
      canvas.title = `the ${choice} mask could not be loaded`;
    },
  );
  return canvas;
}

/** The [lo, hi] value range of the mask `choice` shows ("values"), or null. */
export function maskRange(sample, choice) {
  const range = choice === "label" ? sample.label_range : choice === "prediction" ? sample.prediction_range : null;
  return Array.isArray(range) && range.length === 2 ? range : null;
}

/** The classes a legend lists for `samples`: [{index, name}], ascending. */
export function legendClasses(batch, samples) {
  const kind = maskKind(batch);
  const names = batch.class_names || [];
  if (kind === MASK_BINARY) return [{ index: 1, name: names[1] ?? "foreground" }];
  if (kind !== MASK_CLASSES) return [];
  const seen = new Set();
  for (const sample of samples) {
    for (const index of sample.mask_classes || []) if (Number.isInteger(index) && index !== IGNORED) seen.add(index);
  }
  return [...seen].sort((a, b) => a - b).map((index) => ({ index, name: names[index] ?? String(index) }));
}

/** A legend of the classes drawn (swatch and name), or null when there are none. */
export function renderLegend(batch, samples, choice) {
  const classes = legendClasses(batch, samples);
  if (!classes.length || choice === "off") return null;
  return h(
    "ul",
    { className: "mask-legend", attrs: { "aria-label": "Mask classes" } },
    classes.map(({ index, name }) => {
      const colour = colourHex(classColour(index));
      const swatch = h("span", { className: "swatch", dataset: { colour }, attrs: { "aria-hidden": "true" } });
      swatch.style.backgroundColor = colour;
      return h("li", { className: "legend-item", dataset: { class: String(index) }, title: `class ${index}` }, swatch, h("span", { className: "legend-name", text: name }));
    }),
  );
}
