"""The compiled loss, read once: the task it implies, and its per-sample form.

The one place where the model's loss is interpreted: `task_from_loss` (how labels and
outputs read: classes, one sigmoid output, raw values), `per_sample_loss_fn` (the loss
of each sample, inside the step) and `classification_head` (whether the data map can
use a head).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras

from tb_batch_images.capture import keras_internals
from tb_batch_images.contract import names


def per_sample_loss_fn(loss: Any) -> Callable | None:
    """A function (y_true, y_pred) -> per-sample loss for a compiled loss, or None."""
    if isinstance(loss, dict):
        loss = next(iter(loss.values())) if len(loss) == 1 else None
    if isinstance(loss, (list, tuple)):
        loss = loss[0] if len(loss) == 1 else None
    if loss is None:
        return None
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        return loss.call  # unreduced, unlike __call__
    if not callable(loss):
        return None

    def per_sample(y_true, y_pred):
        # As compile() does for plain functions: match the ranks first.
        return loss(*_same_rank(y_true, y_pred))

    return per_sample


def _same_rank(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    """Keras's rule: when ranks differ by one and the larger ends in 1, match them."""
    ops = keras.ops
    true_rank, pred_rank = len(y_true.shape), len(y_pred.shape)
    if pred_rank == true_rank + 1 and y_pred.shape[-1] == 1:
        if true_rank == 1:
            return ops.expand_dims(y_true, -1), y_pred
        return y_true, ops.squeeze(y_pred, -1)
    if true_rank == pred_rank + 1 and y_true.shape[-1] == 1:
        if pred_rank == 1:
            return y_true, ops.expand_dims(y_pred, -1)
        return ops.squeeze(y_true, -1), y_pred
    return y_true, y_pred


def per_sample_losses(loss_fn: Callable | None, label: Any, output: Any) -> Any:
    """The per-sample loss [n] of one head, or None where it cannot be computed."""
    if loss_fn is None or label is None or output is None:
        return None
    ops = keras.ops
    try:
        values = ops.cast(loss_fn(label, output), "float32")
    except Exception:  # a loss we cannot call per sample: no loss shown
        return None
    rank = len(values.shape)
    if rank == 0:
        return None
    if rank > 1:
        values = ops.mean(values, axis=tuple(range(1, rank)))
    return values


def task_from_loss(loss: Any) -> tuple[str, bool]:
    """(task, from_logits) for a compiled loss: a string, function or Loss object.

    The task is one of `names.TASKS` but "multilabel" (that one is told by the output's
    width, on the host).
    """
    name = _loss_name(loss)
    from_logits = bool(keras_internals.loss_option(loss, "from_logits"))
    if "sparse_categorical" in name:
        return names.TASK_SPARSE_CATEGORICAL, from_logits
    if "categorical" in name:
        return names.TASK_CATEGORICAL, from_logits
    if "binary" in name:
        return names.TASK_BINARY, from_logits
    return names.TASK_RAW, from_logits


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


class HeadUnsupported(ValueError):
    """A model head the data map cannot use; the message says why."""


@dataclasses.dataclass(frozen=True)
class ClassifierHead:
    """A classification output the data map can read.

    `activation` is `"softmax"` (sparse or one-hot categorical cross-entropy over
    C > 1 outputs) or `"binary"` (binary cross-entropy over one output: 2 classes).
    """

    activation: str
    num_classes: int
    from_logits: bool


def classifier_head(model: keras.Model, heads: Any = None) -> ClassifierHead:
    """The model's classification head; HeadUnsupported saying why it has none.

    `heads` (`capture.heads.Heads`, for a model with several outputs): the head the
    gallery logs (`heads.chosen`, `output=`) is the one read.
    """
    if heads is not None:
        loss = heads.losses[heads.chosen]
        shape = _output_shape(model, heads.chosen_name, heads.chosen)
        where = f"the logged output {heads.chosen_name!r} (output=)"
        if shape is None:
            raise HeadUnsupported(f"the shape of {where} is unknown")
    else:
        loss = getattr(model, "loss", None)
        outputs = getattr(model, "outputs", None) or []
        if len(outputs) != 1:
            raise HeadUnsupported(
                "the model's outputs are unknown (a subclassed model without "
                "keras.Input); build it with keras.Input"
            )
        shape = tuple(outputs[0].shape)
        where = "the model's output"
    task, from_logits = task_from_loss(loss)
    width = shape[-1] if len(shape) == 2 else None
    if task in (names.TASK_SPARSE_CATEGORICAL, names.TASK_CATEGORICAL):
        if width is None or width < 2:
            raise HeadUnsupported(
                f"a categorical loss needs outputs of shape [batch, classes], "
                f"{where} has {list(shape)}"
            )
        return ClassifierHead("softmax", int(width), from_logits)
    if task == names.TASK_BINARY:
        if width != 1:
            raise HeadUnsupported(
                f"binary cross-entropy over {list(shape)} outputs is multi-label "
                f"({where}); the data map reads one sigmoid output or a softmax"
            )
        return ClassifierHead("binary", 2, from_logits)
    raise HeadUnsupported(
        f"the loss of {where} is not a classification cross-entropy "
        "(sparse_categorical_crossentropy, categorical_crossentropy, or "
        "binary_crossentropy over one output)"
    )


def _output_shape(model: keras.Model, name: str, index: int) -> tuple | None:
    """The declared shape of one output of a model with several."""
    structure = keras_internals.outputs_struct(model)
    if isinstance(structure, dict):
        tensor = structure.get(name)
    elif isinstance(structure, (list, tuple)) and index < len(structure):
        tensor = structure[index]
    else:
        tensor = None
    shape = getattr(tensor, "shape", None)
    return None if shape is None else tuple(shape)
