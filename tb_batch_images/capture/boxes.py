"""Object detection inside the step: the boxes of the chosen samples, label and predicted.

Keras 3's detection data (`keras.layers.RandomFlip(..., bounding_box_format=...)` and
the other box-aware preprocessing layers, KerasHub's object detectors) carries the boxes
of a batch in `y` as `{"boxes": [B, M, 4], "labels": [B, M]}`, padded with label -1
(KerasCV's `"classes"` key too; under TensorFlow a RaggedTensor, padded by the
TensorFlow adapter before it gets here). After Keras's box-aware augmentation the
padding slots hold garbage boxes and the labels are float32: padding is told by the
label (< 0), never by the box.

`BoxCapture.take` copies, for the chosen samples, at most `max_boxes` label boxes (in
the order `y` holds them) and their count before the cut, with `keras.ops` at fixed
shapes; and, where the model carries a decoder (KerasHub's `decode_predictions`) or the
user gave `decode_predictions=`, the predicted boxes of the same forward pass: the
`max_boxes` best by score. Boxes stay in the format they came in; the host converts
them to the logged picture's pixels (`tb_batch_images.host.boxes`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras

from tb_batch_images.contract import names

MAX_BOXES = 100  # label boxes, and predicted boxes, kept per logged sample

# The keys of y that hold the labels of the boxes: Keras 3 / KerasHub, KerasCV.
_LABEL_KEYS = ("labels", "classes")
# Keys a decoder's output may use for the scores: KerasHub, KerasCV, others.
_SCORE_KEYS = ("confidence", "scores")


@dataclasses.dataclass(frozen=True)
class Decoder:
    """Turns the chosen samples' `y_pred` into boxes: `decode(y_pred, images)`.

    `decode` returns `{"boxes": [n, K, 4], "labels" (or "classes"): [n, K],
    "confidence" (or "scores"): [n, K]}` in `box_format`, relative to `images`;
    padding has a label < 0. `source` is one of `names.BOX_PREDICTION_SOURCES`.
    """

    decode: Callable[[Any, Any], Any]
    box_format: str
    source: str


def model_decoder(model: keras.Model) -> Decoder | None:
    """The decoder a detector carries (KerasHub's `ObjectDetector`s), or None."""
    decode = getattr(model, "decode_predictions", None)
    box_format = getattr(model, "bounding_box_format", None)
    if not callable(decode) or getattr(model, "prediction_decoder", None) is None:
        return None
    if box_format not in names.BOX_FORMATS:
        return None
    return Decoder(decode, box_format, names.BOX_PREDICTIONS_MODEL)


def model_box_format(model: keras.Model) -> str | None:
    """The box format a detector declares (`model.bounding_box_format`), or None."""
    box_format = getattr(model, "bounding_box_format", None)
    return box_format if box_format in names.BOX_FORMATS else None


def model_num_classes(model: keras.Model) -> int | None:
    """A detector's declared number of classes (KerasHub's `num_classes`), or None."""
    value = getattr(model, "num_classes", None)
    return value if isinstance(value, int) and value > 0 else None


def find_boxes(y: Any) -> tuple[Any, Any] | None:
    """(boxes [B, M, 4], labels [B, M]) of a detection `y`, or None.

    `y` is `{"boxes", "labels"}` (or `"classes"`), or a dict holding such a dict as
    `"bounding_boxes"` (the dict Keras's preprocessing layers take).
    """
    if not isinstance(y, dict):
        return None
    if "boxes" not in y and isinstance(y.get("bounding_boxes"), dict):
        return find_boxes(y["bounding_boxes"])
    boxes = y.get("boxes")
    labels = next((y[key] for key in _LABEL_KEYS if key in y), None)
    if boxes is None or labels is None:
        return None
    box_shape, label_shape = _shape(boxes), _shape(labels)
    if box_shape is None or label_shape is None:
        return None
    if len(box_shape) != 3 or box_shape[-1] != 4 or len(label_shape) != 2:
        return None
    return boxes, labels


def _shape(value: Any) -> tuple | None:
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(shape)


class BoxCapture:
    """What of a detection batch the step copies; its facts are set when traced."""

    def __init__(
        self,
        box_format: str,
        decoder: Decoder | None,
        max_boxes: int = MAX_BOXES,
        num_classes: int | None = None,
    ):
        self.box_format = box_format
        self.decoder = decoder
        self.max_boxes = max_boxes
        self.num_classes = num_classes  # a detector's own `num_classes`, if any
        # Set when traced: whether y held boxes, whether predictions were decoded,
        # and why not (the host says it once).
        self.has_labels = False
        self.has_predictions = False
        self.no_boxes_reason: str | None = None
        self.no_predictions_reason: str | None = None

    @property
    def prediction_format(self) -> str | None:
        return None if self.decoder is None else self.decoder.box_format

    def take(self, y: Any, y_pred: Any, images: Any, index: Any) -> dict[str, Any]:
        """The chosen samples' boxes (`index`: [n] positions; `images`: their
        pictures as the model received them, for a decoder)."""
        ops = keras.ops
        result: dict[str, Any] = {}
        found = find_boxes(y)
        if found is None:
            self.no_boxes_reason = (
                "y holds no boxes as Keras writes them ({'boxes': [batch, boxes, 4], "
                "'labels': [batch, boxes]}, padded with label -1)"
            )
            return result
        boxes, labels = (ops.take(value, index, axis=0) for value in found)
        kept = _kept(boxes, labels, None, self.max_boxes)
        result["boxes"], result["box_classes"], _, result["box_counts"] = kept
        self.has_labels = True
        if self.decoder is None:
            self.no_predictions_reason = (
                "the model carries no box decoder (KerasHub's object detectors do); "
                "pass decode_predictions= to BatchImageLogger to log predicted boxes"
            )
            return result
        try:
            predicted = self._predicted(y_pred, images, index)
        except Exception as error:  # at trace time: ground truth only
            self.no_predictions_reason = (
                f"decoding the predicted boxes failed inside the step "
                f"({type(error).__name__}: {_first_line(error)})"
            )
            return result
        if isinstance(predicted, str):
            self.no_predictions_reason = predicted
            return result
        (
            result["predicted_boxes"],
            result["predicted_box_classes"],
            result["predicted_box_scores"],
            result["predicted_box_counts"],
        ) = predicted
        self.has_predictions = True
        return result

    def _predicted(self, y_pred: Any, images: Any, index: Any) -> Any:
        ops = keras.ops
        chosen = keras.tree.map_structure(
            lambda value: ops.take(value, index, axis=0), y_pred
        )
        decoded = self.decoder.decode(chosen, images)
        if not isinstance(decoded, dict) or "boxes" not in decoded:
            return (
                "decode_predictions returned no dict with 'boxes' (and 'labels' or "
                "'classes', 'confidence' or 'scores')"
            )
        boxes = decoded["boxes"]
        labels = next((decoded[k] for k in _LABEL_KEYS if k in decoded), None)
        scores = next((decoded[k] for k in _SCORE_KEYS if k in decoded), None)
        if labels is None:
            labels = ops.zeros(ops.shape(boxes)[:2], "float32")
        return _kept(boxes, labels, scores, self.max_boxes)


def _kept(boxes: Any, labels: Any, scores: Any, cap: int) -> tuple:
    """At most `cap` boxes per sample, padding (label < 0) last, as fixed shapes.

    Without scores the boxes keep their order; with scores the best come first.
    Returns (boxes [n, cap, 4], labels [n, cap] (-1: none), scores [n, cap] or None,
    counts [n]: the boxes that were not padding, before the cut).
    """
    ops = keras.ops
    boxes = ops.cast(boxes, "float32")
    labels = ops.cast(labels, "float32")
    n = boxes.shape[0]
    # `cap` slots of padding after the boxes: at least `cap` to choose from.
    boxes = ops.concatenate([boxes, ops.zeros((n, cap, 4), "float32")], axis=1)
    labels = ops.concatenate([labels, ops.full((n, cap), -1.0, "float32")], axis=1)
    valid = ops.logical_and(ops.isfinite(labels), labels >= 0)
    slots = ops.shape(labels)[1]
    positions = ops.cast(ops.arange(slots), "float32")
    if scores is None:
        # Valid boxes first, in the order y holds them.
        key = ops.where(valid, -positions, -positions - 1e9)
        kept_scores = None
    else:
        scores = ops.cast(scores, "float32")
        scores = ops.concatenate([scores, ops.zeros((n, cap), "float32")], axis=1)
        finite = ops.where(ops.isfinite(scores), scores, -1e9)
        key = ops.where(valid, finite, -2e9 - positions)
    _, order = ops.top_k(key, cap)
    kept_labels = ops.take_along_axis(labels, order, axis=1)
    kept_valid = ops.take_along_axis(valid, order, axis=1)
    kept_boxes = ops.take_along_axis(boxes, ops.expand_dims(order, -1), axis=1)
    if scores is not None:
        kept_scores = ops.take_along_axis(scores, order, axis=1)
    counts = ops.sum(ops.cast(valid, "int32"), axis=1)
    return (
        ops.where(ops.expand_dims(kept_valid, -1), kept_boxes, 0.0),
        ops.where(kept_valid, kept_labels, -1.0),
        kept_scores,
        counts,
    )


def describe_structure(y: Any) -> str:
    """`y`'s structure for a message: {'boxes': [None, 5, 4], 'labels': [None, 5]}."""
    found = find_boxes(y)
    if found is None:
        return "a dict with 'boxes'"
    boxes, labels = found
    key = "labels" if "labels" in (y.get("bounding_boxes", y) or {}) else "classes"
    return (
        f"{{'boxes': {list(_shape(boxes))}, '{key}': {list(_shape(labels))}}}"
    ).replace("None", "batch")


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else ""
