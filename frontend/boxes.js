// Object detection (docs/format.md, "Boxes"): a sample's label and predicted boxes,
// drawn over its picture as SVG (xyxy pixels of the logged picture, so the overlay's
// viewBox is the picture's size), a legend of their classes, caption rows and the
// detail view's list of boxes. Label boxes are solid, predicted boxes dashed; both in
// their class's colour (masks.js's palette); a label box that fails a check is marked.

import { h } from "./dom.js";
import { formatNumber, formatPercent } from "./format.js";
import { classColour, colourHex } from "./masks.js";

export const BOX_CHOICES = [
  { value: "both", text: "Label and prediction" },
  { value: "label", text: "Label" },
  { value: "prediction", text: "Prediction" },
  { value: "off", text: "Off" },
];
export const DEFAULT_BOX_OPACITY = 90;

const SVG = "http://www.w3.org/2000/svg";

/** An SVG element with attributes (never markup). */
function svg(name, attributes = {}) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined) element.setAttribute(key, String(value));
  }
  return element;
}

/** Whether the batch is a detection batch (its samples may carry boxes). */
export function hasBoxes(batch) {
  return Boolean(batch && (batch.box_format || (batch.samples || []).some((sample) => sample.boxes)));
}

/** The sample's label and predicted boxes: [{side, index, box, cls, score, iou, flags}]. */
export function sampleBoxes(sample, choice = "both") {
  const field = sample.boxes;
  if (!field || choice === "off") return [];
  const found = [];
  const sides = choice === "both" ? ["label", "prediction"] : [choice];
  for (const side of sides) {
    const boxes = field[side] || [];
    boxes.forEach((box, index) => {
      found.push({
        side,
        index,
        box,
        cls: (field[`${side}_classes`] || [])[index] ?? null,
        score: side === "prediction" ? (field.prediction_scores || [])[index] ?? null : null,
        iou: (field[`${side}_iou`] || [])[index] ?? null,
        flags: side === "label" ? (field.label_flags || [])[index] || [] : [],
      });
    });
  }
  return found;
}

/** "3 · car" (or "3" without a name, "?" for no class). */
export function boxClassText(cls, classNames) {
  if (cls === null || cls === undefined) return "?";
  const name = Number.isInteger(cls) ? (classNames || [])[cls] : undefined;
  return name ? `${cls} · ${name}` : String(cls);
}

/**
 * The SVG overlay of a sample's boxes, or null (off, or none). `text`: the class (and
 * the score of a prediction) written above each label box and below each predicted
 * one, for the detail view, `fontSize` high (in the picture's pixels).
 */
export function boxOverlay(sample, batch, choice, { text = false, fontSize = null } = {}) {
  const [height, width] = sample.image_shape || [];
  const drawn = sampleBoxes(sample, choice);
  if (!sample.boxes || choice === "off" || !width || !height) return null;
  const overlay = svg("svg", {
    class: "box-overlay",
    viewBox: `0 0 ${width} ${height}`,
    preserveAspectRatio: "xMidYMid meet",
    "aria-hidden": "true",
    "data-boxes": choice,
    "data-count": drawn.length,
  });
  const textSize = fontSize || Math.max(3, Math.max(width, height) / 22);
  for (const item of drawn) {
    const [x1, y1, x2, y2] = item.box;
    const colour = colourHex(classColour(Number.isInteger(item.cls) ? item.cls : 0));
    const group = svg("g", {
      class: `box is-${item.side}` + (item.flags.length ? " is-flagged" : ""),
      "data-side": item.side,
      "data-index": item.index,
      "data-class": item.cls ?? "",
      "data-flags": item.flags.join(" "),
    });
    group.appendChild(
      svg("rect", {
        x: Math.min(x1, x2),
        y: Math.min(y1, y2),
        width: Math.max(Math.abs(x2 - x1), 0.01),
        height: Math.max(Math.abs(y2 - y1), 0.01),
        stroke: colour,
      }),
    );
    if (text) {
      // A label box's caption above it, a prediction's below it: a prediction on
      // its label box (the point of a good detector) keeps both readable.
      const below = item.side === "prediction";
      const label = svg("text", {
        x: Math.min(x1, x2) + textSize * 0.1,
        y: below ? Math.max(y1, y2) + textSize * 0.95 : Math.min(y1, y2) - textSize * 0.25,
        "font-size": textSize.toFixed(2),
        "stroke-width": (textSize * 0.12).toFixed(2),
        fill: colour,
      });
      let caption = boxClassText(item.cls, batch.class_names);
      if (item.side === "prediction" && item.score !== null) caption += ` ${formatPercent(item.score)}`;
      if (item.flags.length) caption += ` ⚠ ${item.flags.join(", ")}`;
      label.textContent = caption;
      group.appendChild(label);
    }
    const title = svg("title");
    title.textContent = describeBox(item, batch.class_names);
    group.appendChild(title);
    overlay.appendChild(group);
  }
  return overlay;
}

function describeBox(item, classNames) {
  const parts = [`${item.side} box ${item.index}`, `class ${boxClassText(item.cls, classNames)}`];
  if (item.score !== null) parts.push(`score ${formatPercent(item.score)}`);
  if (item.iou !== null) parts.push(`IoU ${formatPercent(item.iou)}`);
  if (item.flags.length) parts.push(item.flags.join(", "));
  return parts.join(" · ");
}

/** The classes of the shown boxes of `samples`: [{index, name}], ascending. */
export function boxLegendClasses(batch, samples, choice) {
  const seen = new Set();
  for (const sample of samples) {
    for (const item of sampleBoxes(sample, choice)) if (Number.isInteger(item.cls) && item.cls >= 0) seen.add(item.cls);
  }
  const names = batch.class_names || [];
  return [...seen].sort((a, b) => a - b).map((index) => ({ index, name: names[index] ?? String(index) }));
}

/** A legend of the boxes' classes and line styles, or null when none are drawn. */
export function renderBoxLegend(batch, samples, choice) {
  if (!hasBoxes(batch) || choice === "off") return null;
  const classes = boxLegendClasses(batch, samples, choice);
  const styles = [];
  if (choice !== "prediction") styles.push(["label", "label (solid)"]);
  if (choice !== "label" && batch.box_predictions) styles.push(["prediction", "prediction (dashed)"]);
  return h(
    "ul",
    { className: "box-legend", attrs: { "aria-label": "Box classes" } },
    styles.map(([side, text]) => h("li", { className: "legend-item legend-style", dataset: { side } }, h("span", { className: `line-swatch is-${side}`, attrs: { "aria-hidden": "true" } }), h("span", { className: "legend-name", text }))),
    classes.map(({ index, name }) => {
      const colour = colourHex(classColour(index));
      const swatch = h("span", { className: "swatch", dataset: { colour }, attrs: { "aria-hidden": "true" } });
      swatch.style.backgroundColor = colour;
      return h("li", { className: "legend-item", dataset: { class: String(index) }, title: `class ${index}` }, swatch, h("span", { className: "legend-name", text: name }));
    }),
  );
}

/** The count of a sample's label boxes (in y, before the cut), or null. */
export function boxCount(sample) {
  const field = sample.boxes;
  if (!field) return null;
  return Number.isInteger(field.count) ? field.count : (field.label || []).length;
}

/** A sample's mean IoU: its masks' or, for detection, its boxes'; null without. */
export function sampleMeanIou(sample) {
  if (Number.isFinite(sample.mean_iou)) return sample.mean_iou;
  const value = sample.boxes ? sample.boxes.mean_iou : null;
  return Number.isFinite(value) ? value : null;
}

/** The class keys ("3") of a sample's label or predicted boxes. */
export function boxClassKeys(sample, side) {
  const classes = (sample.boxes && sample.boxes[`${side}_classes`]) || [];
  return [...new Set(classes.filter(Number.isInteger).map(String))];
}

/** The text of a caption's boxes row: "3 · 2 pred · IoU 71%" (label boxes first). */
export function boxSummary(sample) {
  const field = sample.boxes;
  if (!field) return "—";
  const parts = [String(boxCount(sample))];
  if (Array.isArray(field.prediction)) parts.push(`${field.prediction.length} pred`);
  if (Number.isFinite(field.mean_iou)) parts.push(`IoU ${formatPercent(field.mean_iou)}`);
  return parts.join(" · ");
}

/** The detail view's table of boxes: one row per box, label boxes first. */
export function renderBoxTable(sample, batch) {
  const rows = sampleBoxes(sample, "both");
  if (!rows.length) return sample.boxes ? h("p", { className: "box-none", text: "No boxes." }) : null;
  const header = ["", "box", "class", "score", "IoU", "x1, y1, x2, y2", "checks"];
  return h(
    "table",
    { className: "box-table" },
    h("thead", {}, h("tr", {}, header.map((text) => h("th", { text })))),
    h(
      "tbody",
      {},
      rows.map((item) => {
        const colour = colourHex(classColour(Number.isInteger(item.cls) ? item.cls : 0));
        const swatch = h("span", { className: `line-swatch is-${item.side}`, attrs: { "aria-hidden": "true" } });
        swatch.style.borderColor = colour;
        return h(
          "tr",
          { className: `box-row is-${item.side}` + (item.flags.length ? " is-flagged" : ""), dataset: { side: item.side, index: String(item.index) } },
          h("td", {}, swatch),
          h("td", { text: `${item.side} ${item.index}` }),
          h("td", { text: boxClassText(item.cls, batch.class_names) }),
          h("td", { text: item.score === null ? "—" : formatPercent(item.score) }),
          h("td", { text: item.iou === null ? "—" : formatPercent(item.iou) }),
          h("td", { className: "mono", text: item.box.map((value) => formatNumber(value)).join(", ") }),
          h("td", { text: item.flags.join(", ") || (item.side === "label" ? "ok" : "") }),
        );
      }),
    ),
  );
}
