"""Labels and model outputs of one sample, read as classes, probabilities or values.

Runs on the background writer thread, once per logged sample. The task comes from the
compiled loss (`tb_batch_images.capture.losses.task_from_loss`); `describe_sample`
gives the sample's label and prediction fields of the record (docs/format.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tb_batch_images import contract
from tb_batch_images.contract import names

RAW_VALUES_KEPT = contract.limits.MAX_RAW_VALUES


def finite_or_none(value: float) -> float | None:
    """A float for JSON, or None for NaN/Inf (JSON has no such numbers)."""
    value = float(value)
    return value if math.isfinite(value) else None


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
    has_label = label is not None and label.size > 0
    if output is None or output.size == 0:
        if has_label:
            fields["label"] = _raw_list(label)
        return fields, flags
    names_of = _Names(class_names)
    num_outputs = output.size
    if task == names.TASK_BINARY and num_outputs > 1:
        task = names.TASK_MULTILABEL
    categorical = (names.TASK_SPARSE_CATEGORICAL, names.TASK_CATEGORICAL)
    if task in categorical and num_outputs > 1:
        probabilities = _softmax(output) if from_logits else output
        _classes(
            fields,
            flags,
            task,
            probabilities,
            label if has_label else None,
            names_of,
            top_k,
        )
    elif task == names.TASK_BINARY:
        probabilities = _sigmoid(output) if from_logits else output
        _binary(
            fields,
            flags,
            float(probabilities[0]),
            label if has_label else None,
            names_of,
            top_k,
        )
    elif task == names.TASK_MULTILABEL:
        probabilities = _sigmoid(output) if from_logits else output
        _multilabel(
            fields, probabilities, label if has_label else None, names_of, top_k
        )
    else:  # regression, dense maps, anything else: raw values and a summary
        _raw(fields, output, label if has_label else None, output_stats, output_shape)
        return fields, flags
    if not np.all(np.isfinite(output)):
        # A NaN or Inf output is no class: no prediction (the record's sample has
        # the `prediction_non_finite` flag; the gallery shows "NaN").
        fields.update(
            prediction=None,
            prediction_name=None,
            confidence=None,
            correct=None,
            top_k=[],
        )
    return fields, flags


class _Names:
    """Class id -> its name in `class_names`, or None."""

    def __init__(self, class_names: list[str] | None):
        self.class_names = class_names

    def __call__(self, index: int) -> str | None:
        names_ = self.class_names
        if names_ is not None and 0 <= index < len(names_):
            return names_[index]
        return None

    def joined(self, indices: list[int]) -> str | None:
        return ", ".join(n for n in map(self, indices) if n) or None

    def count(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)


def _top_k(probabilities: np.ndarray, order: Any, names_of: _Names, k: int) -> list:
    return [
        {
            "class": int(i),
            "name": names_of(int(i)),
            "probability": finite_or_none(probabilities[i]),
        }
        for i in order[:k]
    ]


def _classes(fields, flags, task, probabilities, label, names_of, top_k) -> None:
    """One class of several (softmax): the argmax, its probability, the top k."""
    order = np.argsort(-probabilities, kind="stable")
    predicted = int(order[0])
    fields["top_k"] = _top_k(probabilities, order, names_of, top_k)
    fields["prediction"] = predicted
    fields["prediction_name"] = names_of(predicted)
    fields["confidence"] = finite_or_none(probabilities[predicted])
    if label is None:
        return
    if task == names.TASK_SPARSE_CATEGORICAL:
        value = float(label[0])
        true_class = int(value) if math.isfinite(value) else -1
        if not math.isfinite(value) or value != true_class:
            true_class = -1
    else:
        true_class = int(np.argmax(label))
    fields["label"] = true_class
    fields["label_name"] = names_of(true_class)
    known = names_of.count()
    if not 0 <= true_class < probabilities.size or (
        known is not None and true_class >= known
    ):
        flags.append(names.FLAG_LABEL_OUT_OF_RANGE)
    fields["correct"] = predicted == true_class


def _binary(fields, flags, p_one: float, label, names_of, top_k) -> None:
    """One sigmoid output: class 1 at probability >= 0.5."""
    predicted = int(p_one >= 0.5)
    fields["prediction"] = predicted
    fields["prediction_name"] = names_of(predicted)
    fields["confidence"] = finite_or_none(p_one if predicted else 1.0 - p_one)
    ranked = sorted(((1, p_one), (0, 1.0 - p_one)), key=lambda item: -item[1])
    fields["top_k"] = [
        {"class": c, "name": names_of(c), "probability": finite_or_none(p)}
        for c, p in ranked
    ][:top_k]
    if label is None:
        return
    value = float(label[0])
    true_class = int(round(value)) if math.isfinite(value) else -1
    if true_class not in (0, 1):
        flags.append(names.FLAG_LABEL_OUT_OF_RANGE)
    fields["label"] = true_class
    fields["label_name"] = names_of(true_class)
    fields["correct"] = predicted == true_class


def _multilabel(fields, probabilities, label, names_of, top_k) -> None:
    """Several sigmoid outputs: the set of classes at probability >= 0.5."""
    order = np.argsort(-probabilities, kind="stable")
    predicted_set = [int(i) for i in np.flatnonzero(probabilities >= 0.5)]
    fields["prediction"] = predicted_set
    fields["prediction_name"] = names_of.joined(predicted_set)
    fields["confidence"] = finite_or_none(probabilities[order[0]])
    fields["top_k"] = _top_k(probabilities, order, names_of, top_k)
    if label is None:
        return
    true_set = [int(i) for i in np.flatnonzero(label[: probabilities.size] >= 0.5)]
    fields["label"] = true_set
    fields["label_name"] = names_of.joined(true_set)
    fields["correct"] = true_set == predicted_set


def _raw(fields, output, label, output_stats, output_shape) -> None:
    fields["prediction"] = _raw_list(output)
    if label is not None:
        fields["label"] = _raw_list(label)
    if output_stats is not None:
        fields["output_summary"] = {
            "shape": output_shape,
            "min": finite_or_none(output_stats[0]),
            "max": finite_or_none(output_stats[1]),
            "mean": finite_or_none(output_stats[2]),
        }


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = values - np.max(values)
    exp = np.exp(shifted)
    return exp / exp.sum()


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def _raw_list(values: np.ndarray) -> list[float | None]:
    return [finite_or_none(v) for v in values[:RAW_VALUES_KEPT]]
