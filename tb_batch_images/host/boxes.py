"""Object detection on the host: boxes to the logged picture's pixels, checked, matched.

Runs on the background writer thread with the boxes `tb_batch_images.capture.boxes`
copied out of the step, in the format they came in. Each box is converted to xyxy in
the pixels of the picture as the model received it (the "frame"), checked there, and
stored in the pixels of the logged picture (after `max_image_size` scaling), rounded
to 1/100 pixel (docs/format.md, "Boxes").

Checks of a label box (`names.BOX_CHECKS`): zero or negative area; entirely outside
the picture; cut by its border (partly outside); tiny (a side under `TINY_PIXELS`
pixels of the frame); a label that is no class (not a whole number, or not an index of
`class_names`); an exact duplicate of an earlier box of the sample; on an empty region
(no edge in the logged pixels of the box and a one-pixel ring around it: no two
neighbouring pixels differ by more than `EMPTY_SPREAD` levels). With predicted
boxes, label and prediction are matched greedily by IoU within a class (`IOU_THRESHOLD`):
each label box's IoU is its match's, the sample's mean IoU the mean over its label
boxes (0 for a missed one); missed label boxes and spurious predictions are counted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tb_batch_images.contract import names

IOU_THRESHOLD = 0.5  # a prediction matches a label box of its class at this IoU
TINY_PIXELS = 3.0  # a box with a side under this (model input pixels) is tiny
EMPTY_SPREAD = 2  # uint8 levels: neighbours that differ no more are alike
CUT_TOLERANCE = 0.5  # frame pixels a box may pass the border before it is cut


def to_xyxy(boxes: np.ndarray, box_format: str, height: float, width: float):
    """[..., 4] boxes in `box_format` -> xyxy pixels of a `height` x `width` picture,
    as `keras.utils.bounding_boxes.convert_format` converts them."""
    boxes = np.asarray(boxes, np.float64)
    a, b, c, d = (boxes[..., i] for i in range(4))
    relative = box_format.startswith("rel_")
    kind = box_format.removeprefix("rel_")
    if kind == "xyxy":
        x1, y1, x2, y2 = a, b, c, d
    elif kind == "yxyx":
        y1, x1, y2, x2 = a, b, c, d
    elif kind == "xywh":
        x1, y1, x2, y2 = a, b, a + c, b + d
    elif kind == "center_xywh":
        x1, y1, x2, y2 = a - c / 2, b - d / 2, a + c / 2, b + d / 2
    elif kind == "center_yxhw":
        x1, y1, x2, y2 = b - d / 2, a - c / 2, b + d / 2, a + c / 2
    else:
        raise ValueError(f"unknown bounding box format {box_format!r}")
    converted = np.stack([x1, y1, x2, y2], axis=-1)
    if relative:
        converted = converted * np.asarray([width, height, width, height])
    return converted


def kept(boxes: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The boxes that are no padding (class >= 0, finite), in their order."""
    valid = np.isfinite(classes) & (classes >= 0)
    return boxes[valid], classes[valid]


def iou_matrix(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """[len(first), len(second)] IoU of xyxy boxes (0 where a box has no area)."""
    if not len(first) or not len(second):
        return np.zeros((len(first), len(second)))
    a = first[:, None, :]
    b = second[None, :, :]
    width = np.clip(
        np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None
    )
    height = np.clip(
        np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None
    )
    inter = width * height
    area_a = _area(first)[:, None]
    area_b = _area(second)[None, :]
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(iou)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(
        boxes[:, 3] - boxes[:, 1], 0, None
    )


def match(
    label: np.ndarray,
    label_classes: np.ndarray,
    prediction: np.ndarray,
    prediction_classes: np.ndarray,
    threshold: float = IOU_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching by IoU within a class: (label_iou, prediction_iou), NaN where a
    box has no match at `threshold`."""
    iou = iou_matrix(label, prediction)
    same = label_classes[:, None] == prediction_classes[None, :]
    iou = np.where(same, iou, 0.0)
    label_iou = np.full(len(label), np.nan)
    prediction_iou = np.full(len(prediction), np.nan)
    if iou.size:
        order = np.argsort(-iou, axis=None, kind="stable")
        for flat in order:
            i, j = divmod(int(flat), iou.shape[1])
            value = iou[i, j]
            if value < threshold:
                break
            if np.isnan(label_iou[i]) and np.isnan(prediction_iou[j]):
                label_iou[i] = prediction_iou[j] = value
    return label_iou, prediction_iou


def checks(
    boxes: np.ndarray,
    raw: np.ndarray,
    classes: np.ndarray,
    frame: tuple[float, float],
    pixels: np.ndarray | None,
    num_classes: int | None,
) -> list[list[str]]:
    """The checks each label box fails (`names.BOX_CHECKS`, in that order).

    `boxes`: [K, 4] xyxy in frame pixels; `raw`: as they came (for exact
    duplicates); `pixels`: the logged uint8 picture. Vectorised over the boxes.
    """
    height, width = frame
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    finite = np.all(np.isfinite(boxes), axis=1)
    box_width, box_height = x2 - x1, y2 - y1
    with np.errstate(invalid="ignore"):
        positive = (box_width > 0) & (box_height > 0)
        tiny = positive & (np.minimum(box_width, box_height) < TINY_PIXELS)
        inside_x = np.minimum(x2, width) - np.maximum(x1, 0.0)
        inside_y = np.minimum(y2, height) - np.maximum(y1, 0.0)
        outside = ~finite | (positive & ((inside_x <= 0) | (inside_y <= 0)))
        cut = ~outside & (
            (x1 < -CUT_TOLERANCE)
            | (y1 < -CUT_TOLERANCE)
            | (x2 > width + CUT_TOLERANCE)
            | (y2 > height + CUT_TOLERANCE)
        )
        whole = np.isfinite(classes) & (classes == np.round(classes)) & (classes >= 0)
    if num_classes is not None:
        whole &= classes < num_classes
    duplicate = np.zeros(len(boxes), bool)
    if len(boxes):
        keys = np.column_stack([classes, np.asarray(raw, np.float64).reshape(-1, 4)])
        _, first = np.unique(keys, axis=0, return_index=True)
        duplicate[:] = True
        duplicate[first] = False
    empty = np.zeros(len(boxes), bool)
    if pixels is not None and len(boxes):
        candidates = positive & ~outside
        scale = (pixels.shape[0] / height, pixels.shape[1] / width)
        empty[candidates] = _empty(boxes[candidates], scale, pixels)
    table = np.stack([~positive, outside, cut, tiny, ~whole, duplicate, empty], axis=1)
    return [[names.BOX_CHECKS[j] for j in np.flatnonzero(row)] for row in table]


def _empty(boxes: np.ndarray, scale: tuple[float, float], pixels: np.ndarray):
    """Per box: whether its logged pixels and a one-pixel ring around it hold no
    edge, no two neighbouring pixels that differ by more than `EMPTY_SPREAD` levels
    in a channel (a box on plain background: nothing there to detect). Edge counts
    come from two summed-area tables, so every box costs a few lookups."""
    height, width = pixels.shape[:2]
    values = pixels.astype(np.int16)
    across = np.zeros((height, max(width - 1, 0)), bool)
    down = np.zeros((max(height - 1, 0), width), bool)
    for channel in range(values.shape[-1]):
        plane = values[..., channel]
        across |= np.abs(plane[:, 1:] - plane[:, :-1]) > EMPTY_SPREAD
        down |= np.abs(plane[1:] - plane[:-1]) > EMPTY_SPREAD
    across_table, down_table = _summed(across), _summed(down)
    left = np.clip(np.floor(boxes[:, 0] * scale[1]).astype(int) - 1, 0, width)
    top = np.clip(np.floor(boxes[:, 1] * scale[0]).astype(int) - 1, 0, height)
    right = np.clip(np.ceil(boxes[:, 2] * scale[1]).astype(int) + 1, 0, width)
    bottom = np.clip(np.ceil(boxes[:, 3] * scale[0]).astype(int) + 1, 0, height)
    big_enough = (right - left >= 2) & (bottom - top >= 2)
    right_edge = np.maximum(right - 1, left)
    bottom_edge = np.maximum(bottom - 1, top)
    edges = _area_sum(across_table, top, left, bottom, right_edge) + _area_sum(
        down_table, top, left, bottom_edge, right
    )
    return big_enough & (edges == 0)


def _summed(mask: np.ndarray) -> np.ndarray:
    """A summed-area table: [h + 1, w + 1], row 0 and column 0 zero."""
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    table[1:, 1:] = mask.cumsum(axis=0).cumsum(axis=1)
    return table


def _area_sum(table, top, left, bottom, right) -> np.ndarray:
    return (
        table[bottom, right]
        - table[top, right]
        - table[bottom, left]
        + table[top, left]
    )


def describe(
    raw: np.ndarray,
    classes: np.ndarray,
    count: int,
    box_format: str,
    frame: tuple[float, float],
    stored: tuple[int, int],
    pixels: np.ndarray | None,
    num_classes: int | None,
    prediction: tuple[np.ndarray, np.ndarray, np.ndarray, int, str] | None,
) -> tuple[dict[str, Any], list[str]]:
    """One sample's `boxes` field and the sample flags its boxes give.

    `raw`, `classes`: the captured label boxes ([max_boxes, 4], [max_boxes]);
    `count`: how many it had before the cut; `frame`: (height, width) of the picture
    the boxes refer to; `stored`: (height, width) of the logged picture;
    `prediction`: (boxes, classes, scores, count, format) or None.
    """
    frame_h, frame_w = float(frame[0]) or 1.0, float(frame[1]) or 1.0
    scale = (stored[0] / frame_h, stored[1] / frame_w)
    raw_kept, classes_kept = kept(raw, classes)
    label = to_xyxy(raw_kept, box_format, frame_h, frame_w).reshape(-1, 4)
    box_flags = checks(
        label, raw_kept, classes_kept, (frame_h, frame_w), pixels, num_classes
    )
    field: dict[str, Any] = {
        "count": int(count),
        "label": _stored(label, scale),
        "label_classes": _class_values(classes_kept),
        "label_flags": box_flags,
    }
    flags = [
        f"box_{check}"
        for check in names.BOX_CHECKS
        if any(check in box for box in box_flags)
    ]
    if count > len(raw_kept):
        flags.append(names.FLAG_BOXES_CAPPED)
    if prediction is not None:
        boxes, predicted_classes, scores, predicted_count, predicted_format = prediction
        valid = np.isfinite(predicted_classes) & (predicted_classes >= 0)
        predicted = to_xyxy(boxes[valid], predicted_format, frame_h, frame_w).reshape(
            -1, 4
        )
        predicted_classes = predicted_classes[valid]
        label_iou, prediction_iou = match(
            label, classes_kept, predicted, predicted_classes
        )
        missed = int(np.sum(np.isnan(label_iou)))
        spurious = int(np.sum(np.isnan(prediction_iou)))
        field.update(
            prediction_count=int(predicted_count),
            prediction=_stored(predicted, scale),
            prediction_classes=_class_values(predicted_classes),
            prediction_scores=_scores(scores[valid]),
            prediction_iou=_scores(prediction_iou),
            label_iou=_scores(label_iou),
            mean_iou=(
                float(np.mean(np.nan_to_num(label_iou))) if len(label_iou) else None
            ),
            missed=missed,
            spurious=spurious,
        )
        if missed:
            flags.append(names.FLAG_BOX_MISSED)
        if spurious:
            flags.append(names.FLAG_BOX_SPURIOUS)
    return field, flags


def _stored(boxes: np.ndarray, scale: tuple[float, float]) -> list[list[float]]:
    """xyxy frame pixels -> logged picture pixels, rounded (non-finite: 0)."""
    stored = boxes * np.asarray([scale[1], scale[0], scale[1], scale[0]])
    stored = np.where(np.isfinite(stored), stored, 0.0)
    return np.round(stored, 2).tolist()


def _class_values(values: np.ndarray) -> list[int | float | None]:
    """Classes for JSON: whole numbers as ints, others as they are, NaN as null."""
    return [
        None if v != v or v in (np.inf, -np.inf) else int(v) if v == int(v) else v
        for v in np.asarray(values, np.float64).tolist()
    ]


def _scores(values: np.ndarray) -> list[float | None]:
    """Numbers in [0, 1] for JSON (non-finite: null)."""
    values = np.asarray(values, np.float64)
    clipped = np.clip(np.where(np.isfinite(values), values, np.nan), 0.0, 1.0)
    return [None if v != v else v for v in clipped.tolist()]


# -- the format's fit --------------------------------------------------------------
def format_problem(
    raw: list[np.ndarray], box_format: str, frames: list[tuple[float, float]]
) -> str | None:
    """Why the label boxes of a batch do not fit `box_format`, naming the format
    they fit, or None when they fit (or there are too few to tell).

    `raw`: each sample's label boxes as they came (padding dropped); `frames`: each
    sample's (height, width).
    """
    if sum(len(boxes) for boxes in raw) == 0:
        return None
    given = _fit(raw, box_format, frames)
    if given["fits"] >= 0.5:
        return None
    scores = {fmt: _fit(raw, fmt, frames)["fits"] for fmt in names.BOX_FORMATS}
    best = max(
        names.BOX_FORMATS, key=lambda fmt: (scores[fmt], _closeness(fmt, box_format))
    )
    values = np.concatenate([boxes.reshape(-1) for boxes in raw])
    if given["outside"] == 1.0:
        what = "every box lies outside its picture"
    elif not box_format.startswith("rel_") and np.all(np.abs(values) <= 1.0):
        what = "every value is between 0 and 1, as relative coordinates are"
    elif box_format.startswith("rel_") and np.any(np.abs(values) > 1.5):
        what = "values reach beyond 1, as pixel coordinates do"
    else:
        what = f"{1 - given['fits']:.0%} of the boxes have no area or lie outside"
    if scores[best] >= 0.9 and best != box_format:
        advice = f"they fit {best!r}: pass bounding_box_format={best!r}"
    else:
        advice = "no format fits them all: check how the boxes are made"
    return (
        f"the boxes in y do not fit the pictures as bounding_box_format="
        f"{box_format!r} ({what}); {advice}. Boxes are drawn as given and flagged"
    )


def _fit(raw, box_format, frames) -> dict[str, float]:
    fits = outside = total = 0
    for boxes, (height, width) in zip(raw, frames, strict=True):
        if not len(boxes):
            continue
        xyxy = to_xyxy(boxes, box_format, height, width)
        tolerance_x, tolerance_y = max(1.0, 0.01 * width), max(1.0, 0.01 * height)
        # At least a pixel each way: relative values read as pixels are not boxes.
        positive = (xyxy[:, 2] - xyxy[:, 0] >= 1) & (xyxy[:, 3] - xyxy[:, 1] >= 1)
        within = (
            (xyxy[:, 0] >= -tolerance_x)
            & (xyxy[:, 1] >= -tolerance_y)
            & (xyxy[:, 2] <= width + tolerance_x)
            & (xyxy[:, 3] <= height + tolerance_y)
        )
        beyond = (
            (xyxy[:, 2] <= 0)
            | (xyxy[:, 3] <= 0)
            | (xyxy[:, 0] >= width)
            | (xyxy[:, 1] >= height)
        )
        fits += int(np.sum(positive & within))
        outside += int(np.sum(beyond))
        total += len(boxes)
    return {"fits": fits / total, "outside": outside / total}


def _closeness(candidate: str, given: str) -> int:
    """Ties go to the format nearest the given one: the same letters, rel_ toggled."""
    if candidate.removeprefix("rel_") == given.removeprefix("rel_"):
        return 2
    return 1 if candidate.startswith("rel_") == given.startswith("rel_") else 0
