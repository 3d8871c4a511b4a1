// The controls: runs, mode, step navigation, sort and filters. Built once; update()
// syncs them with the state without stealing focus from what the user is typing in.

import { FLAGS, MODES } from "./contract.js";
import { h, replaceChildren } from "./dom.js";
import { plural } from "./format.js";
import { BOX_CHOICES } from "./boxes.js";
import { MASK_CHOICES } from "./masks.js";
import { groupLabel } from "./runs.js";
import { SORTS } from "./samples.js";
import { field, scrubber, toolbarGroup } from "./widgets.js";

function setOptions(select, options, value, anyText) {
  const wanted = [{ value: "", text: anyText }, ...options];
  if (value && !options.some((option) => option.value === value)) wanted.push({ value, text: value });
  const signature = JSON.stringify(wanted);
  if (select.dataset.signature !== signature) {
    replaceChildren(select, wanted.map((option) => h("option", { value: option.value, text: option.text })));
    select.dataset.signature = signature;
  }
  select.value = value;
}

export class Toolbar {
  /** onChange(patch) is called with a state patch; onStep(direction | {step}) to move. */
  constructor({ onChange, onStep }) {
    this.onChange = onChange;
    this.onStep = onStep;
    this.runList = h("div", { className: "run-list", attrs: { role: "group", "aria-label": "Runs" } });
    this.modeButtons = MODES.map((mode) =>
      h("button", {
        type: "button",
        className: "segment",
        text: mode === "train" ? "Train" : "Validation",
        dataset: { mode },
        attrs: { "aria-pressed": "false" },
        on: { click: () => this.onChange({ mode }) },
      }),
    );
    this.prevButton = h("button", { type: "button", className: "button", dataset: { control: "prev" }, text: "← Prev", title: "Previous logged step (← or [)", on: { click: () => this.onStep(-1) } });
    this.nextButton = h("button", { type: "button", className: "button", dataset: { control: "next" }, text: "Next →", title: "Next logged step (→ or ])", on: { click: () => this.onStep(1) } });
    this.latestButton = h("button", { type: "button", className: "button subtle", dataset: { control: "latest" }, text: "Latest", title: "Follow the latest step (End)", on: { click: () => this.onChange({ step: null, open: null }) } });
    this.stepInput = h("input", {
      type: "number",
      className: "step-input",
      dataset: { control: "step" },
      attrs: { "aria-label": "Step", inputmode: "numeric" },
      on: {
        input: () => {
          this.stepEdited = true;
        },
        change: () => this.commitStep(),
        keydown: (event) => {
          if (event.key === "Enter") {
            event.preventDefault();
            this.commitStep();
          }
        },
      },
    });
    this.scrubber = scrubber({
      control: "scrubber",
      label: "Logged steps",
      onMove: (index) => {
        this.stepLabel.textContent = this.describePosition(index);
      },
      onSettle: (index) => this.onStep({ index }),
    });
    this.stepLabel = h("span", { className: "step-label", attrs: { "aria-live": "polite" } });
    this.stepNote = h("span", { className: "step-note", attrs: { role: "status" } });

    this.sortSelect = h(
      "select",
      { dataset: { control: "sort" }, on: { change: () => this.onChange({ sort: this.sortSelect.value }) } },
      SORTS.map((sort) => h("option", { value: sort.value, text: sort.text })),
    );
    this.wrongBox = h("input", { type: "checkbox", dataset: { control: "wrong" }, on: { change: () => this.onChange({ wrong: this.wrongBox.checked, open: null }) } });
    this.labelSelect = h("select", { dataset: { control: "label" }, on: { change: () => this.onChange({ label: this.labelSelect.value, open: null }) } });
    this.predSelect = h("select", { dataset: { control: "pred" }, on: { change: () => this.onChange({ pred: this.predSelect.value, open: null }) } });
    this.flagSelect = h("select", { dataset: { control: "flag" }, on: { change: () => this.onChange({ flag: this.flagSelect.value, open: null }) } });
    this.queryInput = h("input", {
      type: "search",
      dataset: { control: "q" },
      placeholder: "part of a filename",
      attrs: { "aria-label": "Filename contains", spellcheck: "false", autocomplete: "off" },
      on: {
        input: () => {
          clearTimeout(this.queryTimer);
          this.queryTimer = setTimeout(() => this.onChange({ q: this.queryInput.value, open: null }), 150);
        },
      },
    });
    this.maxIouInput = h("input", {
      type: "number",
      className: "iou-input",
      dataset: { control: "max_iou" },
      min: "0",
      max: "1",
      step: "0.05",
      placeholder: "0–1",
      attrs: { "aria-label": "Mean IoU at most", inputmode: "decimal" },
      on: {
        input: () => {
          clearTimeout(this.iouTimer);
          this.iouTimer = setTimeout(() => this.onChange({ max_iou: this.maxIouInput.value, open: null }), 150);
        },
      },
    });
    this.masksSelect = h(
      "select",
      { dataset: { control: "masks" }, on: { change: () => this.onChange({ masks: this.masksSelect.value }) } },
      MASK_CHOICES.map((choice) => h("option", { value: choice.value, text: choice.text })),
    );
    this.opacitySlider = h("input", {
      type: "range",
      className: "opacity-slider",
      dataset: { control: "mask_opacity" },
      min: "0",
      max: "100",
      step: "1",
      attrs: { "aria-label": "Mask opacity" },
      on: { input: () => this.onChange({ mask_opacity: Number(this.opacitySlider.value) }) },
    });
    this.maskRow = h(
      "div",
      { className: "toolbar-row mask-row", hidden: true },
      field("Masks", this.masksSelect),
      field("Opacity", this.opacitySlider, "opacity-field"),
      field("Mean IoU at most", this.maxIouInput, "iou-field"),
    );
    this.boxesSelect = h(
      "select",
      { dataset: { control: "boxes" }, on: { change: () => this.onChange({ boxes: this.boxesSelect.value }) } },
      BOX_CHOICES.map((choice) => h("option", { value: choice.value, text: choice.text })),
    );
    this.boxOpacitySlider = h("input", {
      type: "range",
      className: "opacity-slider",
      dataset: { control: "box_opacity" },
      min: "0",
      max: "100",
      step: "1",
      attrs: { "aria-label": "Box opacity" },
      on: { input: () => this.onChange({ box_opacity: Number(this.boxOpacitySlider.value) }) },
    });
    const countInput = (key, label) => {
      const input = h("input", {
        type: "number",
        className: "count-input",
        dataset: { control: key },
        min: "0",
        step: "1",
        placeholder: "any",
        attrs: { "aria-label": label, inputmode: "numeric" },
        on: {
          input: () => {
            clearTimeout(this.countTimer);
            this.countTimer = setTimeout(() => this.onChange({ [key]: input.value.trim(), open: null }), 150);
          },
        },
      });
      return input;
    };
    this.minBoxesInput = countInput("min_boxes", "Label boxes at least");
    this.maxBoxesInput = countInput("max_boxes", "Label boxes at most");
    this.boxIouInput = h("input", {
      type: "number",
      className: "iou-input",
      dataset: { control: "box_max_iou" },
      min: "0",
      max: "1",
      step: "0.05",
      placeholder: "0–1",
      attrs: { "aria-label": "Box mean IoU at most", inputmode: "decimal" },
      on: {
        input: () => {
          clearTimeout(this.iouTimer);
          this.iouTimer = setTimeout(() => this.onChange({ max_iou: this.boxIouInput.value, open: null }), 150);
        },
      },
    });
    this.boxRow = h(
      "div",
      { className: "toolbar-row box-row", hidden: true },
      field("Boxes", this.boxesSelect),
      field("Opacity", this.boxOpacitySlider, "opacity-field"),
      field("Label boxes at least", this.minBoxesInput, "count-field"),
      field("at most", this.maxBoxesInput, "count-field"),
      field("Mean IoU at most", this.boxIouInput, "iou-field"),
    );
    this.clearButton = h("button", {
      type: "button",
      className: "button subtle",
      dataset: { control: "clear" },
      text: "Clear filters",
      on: { click: () => this.onChange({ wrong: false, label: "", pred: "", q: "", flag: "", max_iou: "", min_boxes: "", max_boxes: "", open: null }) },
    });

    this.element = h(
      "div",
      { className: "toolbar" },
      h(
        "div",
        { className: "toolbar-row" },
        toolbarGroup("Runs", "runs-group", this.runList),
        toolbarGroup("Mode", "", h("div", { className: "segmented", attrs: { role: "group", "aria-label": "Mode" } }, this.modeButtons)),
      ),
      h(
        "div",
        { className: "toolbar-row step-row" },
        this.prevButton,
        field("Step", this.stepInput, "step-field"),
        this.nextButton,
        this.scrubber,
        this.stepLabel,
        this.latestButton,
        this.stepNote,
      ),
      h(
        "div",
        { className: "toolbar-row filter-row" },
        field("Sort", this.sortSelect),
        h("label", { className: "field check" }, this.wrongBox, h("span", { text: "Misclassified only" })),
        field("Label", this.labelSelect),
        field("Predicted", this.predSelect),
        field("Filename", this.queryInput, "query-field"),
        field("Flag", this.flagSelect),
        this.clearButton,
      ),
      this.maskRow,
      this.boxRow,
    );
    this.steps = [];
  }

  /** Goes to the typed step, once per edit (Enter and the later blur both commit). */
  commitStep() {
    if (!this.stepEdited) return;
    this.stepEdited = false;
    const step = Number.parseInt(this.stepInput.value, 10);
    if (Number.isFinite(step)) this.onStep({ step });
  }

  describePosition(index) {
    if (!this.steps.length) return "no steps";
    return `step ${this.steps[index]} · ${index + 1} of ${plural(this.steps.length, "step")}`;
  }

  /**
   * model: {state, groups (Map), steps (sorted union), stepIndex, following, note,
   *         classOptions, flagOptions, hasMasks (a shown batch has masks)}
   */
  update({ state, groups, steps, stepIndex, following, note, classOptions, flagOptions, hasMasks = false, hasBoxes = false }) {
    const signature = JSON.stringify([...groups.keys()]);
    if (this.runList.dataset.signature !== signature) {
      replaceChildren(
        this.runList,
        [...groups.values()].map((group) => {
          const box = h("input", {
            type: "checkbox",
            value: group.name,
            on: {
              change: () => {
                const chosen = [...this.runList.querySelectorAll("input:checked")].map((input) => input.value);
                this.onChange({ runs: chosen, open: null });
              },
            },
          });
          return h("label", { className: "run-chip", title: group.name, dataset: { group: group.name } }, box, h("span", { className: "run-name", text: groupLabel(group.name) }));
        }),
      );
      this.runList.dataset.signature = signature;
    }
    for (const chip of this.runList.children) {
      const box = chip.querySelector("input");
      box.checked = state.runs.includes(box.value);
      chip.classList.toggle("is-checked", box.checked);
    }
    const selected = state.runs.map((name) => groups.get(name)).filter(Boolean);
    for (const button of this.modeButtons) {
      const mode = button.dataset.mode;
      const available = selected.some((group) => group.modes[mode]);
      button.setAttribute("aria-pressed", String(state.mode === mode));
      button.classList.toggle("is-unavailable", !available);
      button.title = available ? "" : `No selected run has ${mode} batches`;
    }

    this.steps = steps;
    const hasSteps = steps.length > 0;
    this.prevButton.disabled = !hasSteps || stepIndex <= 0;
    this.nextButton.disabled = !hasSteps || stepIndex >= steps.length - 1;
    this.latestButton.disabled = !hasSteps || following;
    this.latestButton.classList.toggle("is-following", following);
    this.latestButton.textContent = following ? "Following latest" : "Latest";
    this.stepInput.disabled = !hasSteps;
    this.scrubber.disabled = steps.length < 2;
    if (hasSteps) {
      this.stepInput.min = String(steps[0]);
      this.stepInput.max = String(steps[steps.length - 1]);
      // While the user types a step, leave it; once committed, show where we are.
      if (document.activeElement !== this.stepInput || !this.stepEdited) {
        this.stepInput.value = String(steps[stepIndex]);
      }
      this.scrubber.max = String(steps.length - 1);
      this.scrubber.value = String(stepIndex);
      this.stepLabel.textContent = this.describePosition(stepIndex);
    } else {
      this.stepInput.value = "";
      this.scrubber.max = "0";
      this.stepLabel.textContent = "no steps";
    }
    this.stepNote.textContent = note || "";

    // Sorts that need masks (or boxes) are offered only where a shown batch has them.
    const has = { masks: hasMasks, boxes: hasBoxes, masks_or_boxes: hasMasks || hasBoxes };
    for (const option of this.sortSelect.options) {
      const sort = SORTS.find((item) => item.value === option.value);
      const applies = !sort || !sort.needs || Boolean(has[sort.needs]);
      option.hidden = option.disabled = !applies && option.value !== state.sort;
    }
    this.sortSelect.value = state.sort;
    this.wrongBox.checked = state.wrong;
    setOptions(this.labelSelect, classOptions, state.label, "any");
    setOptions(this.predSelect, classOptions, state.pred, "any");
    setOptions(this.flagSelect, flagOptions.length ? flagOptions : FLAGS.map((flag) => ({ value: flag, text: flag })), state.flag, "any");
    if (document.activeElement !== this.queryInput) this.queryInput.value = state.q;
    this.maskRow.hidden = !(hasMasks || state.max_iou);
    this.masksSelect.value = state.masks;
    this.opacitySlider.value = String(state.mask_opacity);
    this.opacitySlider.disabled = state.masks === "off";
    if (document.activeElement !== this.maxIouInput) this.maxIouInput.value = state.max_iou;
    this.boxRow.hidden = !(hasBoxes || state.min_boxes || state.max_boxes);
    if (hasBoxes && !hasMasks) this.maskRow.hidden = true; // the box row has its own IoU filter
    this.boxesSelect.value = state.boxes;
    this.boxOpacitySlider.value = String(state.box_opacity);
    this.boxOpacitySlider.disabled = state.boxes === "off";
    if (document.activeElement !== this.boxIouInput) this.boxIouInput.value = state.max_iou;
    if (document.activeElement !== this.minBoxesInput) this.minBoxesInput.value = state.min_boxes;
    if (document.activeElement !== this.maxBoxesInput) this.maxBoxesInput.value = state.max_boxes;
    this.clearButton.disabled = !(state.wrong || state.label || state.pred || state.q || state.flag || state.max_iou || state.min_boxes || state.max_boxes);
  }
}
