"""Segmentation and dense maps on the host: masks as PNGs, pixel accuracy, mean IoU.

Runs on the background writer thread with the [h, w] float maps that
`tb_batch_images.capture.dense_maps` copied out of the step (already at the logged
picture's size). The encoding is in docs/format.md ("masks"): one 8-bit grey PNG per
map, a class index per pixel ("classes", "binary"; `IGNORED` where the label is no
valid class), or the value quantised to 0..255 between the sample's range ("values").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tb_batch_images.contract import limits, names
from tb_batch_images.host import pixels as pixel_utils

IGNORED = 255  # a label pixel that is no valid class (and classes >= 255)
MAX_MASK_CLASSES = limits.MAX_MASK_CLASSES  # `mask_classes` items kept


def describe(
    mask_type: str,
    label_map: np.ndarray | None,
    output_map: np.ndarray,
    classes: int,
    from_logits: bool,
) -> tuple[dict[str, Any], bytes | None, bytes]:
    """(sample fields, label mask PNG or None, prediction mask PNG) of one sample."""
    if mask_type == names.MASK_VALUES:
        fields: dict[str, Any] = {"prediction_range": _range(output_map)}
        label_png = None
        if label_map is not None:
            fields["label_range"] = _range(label_map)
            label_png = pixel_utils.encode_png(_quantised(label_map))
        return fields, label_png, pixel_utils.encode_png(_quantised(output_map))
    if mask_type == names.MASK_BINARY:
        threshold = 0.0 if from_logits else 0.5
        prediction = (output_map > threshold).astype(np.int64)
        label = None
        if label_map is not None:
            label = np.where(np.isfinite(label_map), label_map > 0.5, -1).astype(
                np.int64
            )
        classes = 2
    elif mask_type == names.MASK_CLASSES:
        prediction = np.nan_to_num(output_map).astype(np.int64)
        label = None if label_map is None else _class_indices(label_map, classes)
    else:
        raise ValueError(f"unknown mask type {mask_type!r}")
    fields = scores(label, prediction, classes)
    label_png = None if label is None else pixel_utils.encode_png(_as_mask(label))
    return fields, label_png, pixel_utils.encode_png(_as_mask(prediction))


def scores(
    label: np.ndarray | None, prediction: np.ndarray, classes: int
) -> dict[str, Any]:
    """`pixel_accuracy`, `mean_iou` and `mask_classes` of one sample's class maps.

    `label` < 0 marks pixels without a valid class: left out of both scores. Mean
    IoU is over the classes present in the label or the prediction (of the counted
    pixels), each intersection / union.
    """
    if label is None:
        present = np.unique(prediction)
        return {
            "pixel_accuracy": None,
            "mean_iou": None,
            "mask_classes": present[:MAX_MASK_CLASSES].tolist(),
        }
    valid = label >= 0
    label_valid, prediction_valid = label[valid], prediction[valid]
    present = np.union1d(np.unique(label_valid), np.unique(prediction))
    if not label_valid.size:
        return {
            "pixel_accuracy": None,
            "mean_iou": None,
            "mask_classes": present[:MAX_MASK_CLASSES].tolist(),
        }
    size = max(classes, int(present.max()) + 1)
    # Confusion matrix of the counted pixels: rows label, columns prediction.
    confusion = np.bincount(
        label_valid * size + prediction_valid, minlength=size * size
    ).reshape(size, size)
    intersection = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - intersection
    counted = union > 0
    return {
        "pixel_accuracy": float(intersection.sum() / label_valid.size),
        "mean_iou": float(np.mean(intersection[counted] / union[counted])),
        "mask_classes": present[:MAX_MASK_CLASSES].tolist(),
    }


def _class_indices(label_map: np.ndarray, classes: int) -> np.ndarray:
    """Label classes as int64; -1 where not a valid class index."""
    finite = np.isfinite(label_map)
    values = np.where(finite, label_map, -1.0)
    valid = finite & (values == np.round(values)) & (values >= 0) & (values < classes)
    return np.where(valid, values, -1).astype(np.int64)


def _as_mask(classes: np.ndarray) -> np.ndarray:
    """Class indices to the uint8 mask: IGNORED for none (< 0) and for >= 255."""
    return np.where((classes < 0) | (classes >= IGNORED), IGNORED, classes).astype(
        np.uint8
    )


def _range(values: np.ndarray) -> list[float] | None:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return None
    return [float(finite.min()), float(finite.max())]


def _quantised(values: np.ndarray) -> np.ndarray:
    """Values to 0..255 between their finite min and max (non-finite: 0)."""
    span = _range(values)
    if span is None:
        return np.zeros(values.shape, np.uint8)
    low, high = span
    scaled = (np.nan_to_num(values, nan=low, posinf=high, neginf=low) - low) / (
        (high - low) or 1.0
    )
    return np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)
