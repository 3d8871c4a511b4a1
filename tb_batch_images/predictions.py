"""Reading labels and model outputs as classes, probabilities or raw values.

The task is derived once from the compiled loss (`task_from_loss`); per-sample
interpretation (`describe_sample`) runs on the background writer thread.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tb_batch_images import format as fmt

RAW_VALUES_KEPT = 64

SPARSE_CATEGORICAL = "sparse_categorical"
CATEGORICAL = "categorical"
BINARY = "binary"  # one sigmoid output; multi-column sigmoid becomes "multilabel"
MULTILABEL = "multilabel"
RAW = "raw"


def task_from_loss(loss: Any) -> tuple[str, bool]:
    """(task, from_logits) for a compiled loss: a string, function or Loss object."""
    name = _loss_name(loss)
    from_logits = bool(_loss_option(loss, "from_logits"))
    if "sparse_categorical" in name:
        return SPARSE_CATEGORICAL, from_logits
    if "categorical" in name:
        return CATEGORICAL, from_logits
    if "binary" in name:
        return BINARY, from_logits
    return RAW, from_logits


def _loss_name(loss: Any) -> str:
    if isinstance(loss, str):
        return loss.lower()
    for attribute in ("fn", "__name__", "name"):
        value = getattr(loss, attribute, None)
        if isinstance(value, str):
            return value.lower()
        if callable(value) and hasattr(value, "__name__"):
            return value.__name__.lower()
    return type(loss).__name__.lower()


def _loss_option(loss: Any, option: str) -> Any:
    kwargs = getattr(loss, "_fn_kwargs", None)
    if isinstance(kwargs, dict) and option in kwargs:
        return kwargs[option]
    return getattr(loss, option, None)


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = values - np.max(values)
    exp = np.exp(shifted)
    return exp / exp.sum()


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def finite_or_none(value: float) -> float | None:
    """A float for JSON, or None for NaN/Inf (JSON has no such numbers)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _name(class_names: list[str] | None, index: int) -> str | None:
    if class_names is not None and 0 <= index < len(class_names):
        return class_names[index]
    return None


def describe_sample(
    task: str,
    from_logits: bool,
    label: np.ndarray | None,
    output: np.ndarray | None,
    output_stats: np.ndarray | None,
    output_shape: list[int] | None,
    class_names: list[str] | None,
    top_k: int,
) -> tuple[dict[str, Any], list[str]]:
    """The label/prediction fields of one sample's record, and its flags.

    `label` and `output` are the sample's flattened (possibly truncated) values.
    """
    fields: dict[str, Any] = {
        "label": None,
        "label_name": None,
        "prediction": None,
        "prediction_name": None,
        "confidence": None,
        "correct": None,
        "top_k": [],
        "output_summary": None,
    }
    flags: list[str] = []
    if output is None or output.size == 0:
        if label is not None and label.size:
            fields["label"] = _raw_list(label)
        return fields, flags

    num_outputs = output.size
    if task == BINARY and num_outputs > 1:
        task = MULTILABEL
    if task in (SPARSE_CATEGORICAL, CATEGORICAL) and num_outputs > 1:
        probabilities = _softmax(output) if from_logits else output
        order = np.argsort(-probabilities, kind="stable")
        predicted = int(order[0])
        fields["top_k"] = [
            {
                "class": int(i),
                "name": _name(class_names, int(i)),
                "probability": finite_or_none(probabilities[i]),
            }
            for i in order[:top_k]
        ]
        fields["prediction"] = predicted
        fields["prediction_name"] = _name(class_names, predicted)
        fields["confidence"] = finite_or_none(probabilities[predicted])
        if label is not None and label.size:
            if task == SPARSE_CATEGORICAL:
                value = float(label[0])
                true_class = int(value) if math.isfinite(value) else -1
                if not math.isfinite(value) or value != true_class:
                    true_class = -1
            else:
                true_class = int(np.argmax(label))
            fields["label"] = true_class
            fields["label_name"] = _name(class_names, true_class)
            out_of_range = not 0 <= true_class < num_outputs or (
                class_names is not None and true_class >= len(class_names)
            )
            if out_of_range:
                flags.append(fmt.FLAG_LABEL_OUT_OF_RANGE)
            fields["correct"] = predicted == true_class
        return fields, flags

    if task in (BINARY, MULTILABEL):
        probabilities = _sigmoid(output) if from_logits else output
        if task == BINARY:
            p_one = float(probabilities[0])
            predicted = int(p_one >= 0.5)
            fields["prediction"] = predicted
            fields["prediction_name"] = _name(class_names, predicted)
            fields["confidence"] = finite_or_none(p_one if predicted else 1.0 - p_one)
            fields["top_k"] = [
                {
                    "class": c,
                    "name": _name(class_names, c),
                    "probability": finite_or_none(p),
                }
                for c, p in sorted(
                    ((1, p_one), (0, 1.0 - p_one)), key=lambda item: -item[1]
                )
            ][:top_k]
            if label is not None and label.size:
                value = float(label[0])
                true_class = int(round(value)) if math.isfinite(value) else -1
                if true_class not in (0, 1):
                    flags.append(fmt.FLAG_LABEL_OUT_OF_RANGE)
                fields["label"] = true_class
                fields["label_name"] = _name(class_names, true_class)
                fields["correct"] = predicted == true_class
            return fields, flags
        order = np.argsort(-probabilities, kind="stable")
        predicted_set = [int(i) for i in np.flatnonzero(probabilities >= 0.5)]
        fields["prediction"] = predicted_set
        fields["prediction_name"] = (
            ", ".join(n for n in (_name(class_names, i) for i in predicted_set) if n)
            or None
        )
        fields["confidence"] = finite_or_none(probabilities[order[0]])
        fields["top_k"] = [
            {
                "class": int(i),
                "name": _name(class_names, int(i)),
                "probability": finite_or_none(probabilities[i]),
            }
            for i in order[:top_k]
        ]
        if label is not None and label.size:
            true_set = [int(i) for i in np.flatnonzero(label[:num_outputs] >= 0.5)]
            fields["label"] = true_set
            fields["label_name"] = (
                ", ".join(n for n in (_name(class_names, i) for i in true_set) if n)
                or None
            )
            fields["correct"] = true_set == predicted_set
        return fields, flags

    # Regression, dense maps, anything else: raw values and a summary.
    fields["prediction"] = _raw_list(output)
    if label is not None and label.size:
        fields["label"] = _raw_list(label)
    if output_stats is not None:
        fields["output_summary"] = {
            "shape": output_shape,
            "min": finite_or_none(output_stats[0]),
            "max": finite_or_none(output_stats[1]),
            "mean": finite_or_none(output_stats[2]),
        }
    return fields, flags


def _raw_list(values: np.ndarray) -> list[float | None]:
    return [finite_or_none(v) for v in values[:RAW_VALUES_KEPT]]
