"""Builds the on-disk record of one captured batch (see docs/format.md).

Runs on the background writer thread: pixels to uint8, encoded images, per-sample
fields (labels, predictions, loss, flags, masks), and the record that
`tb_batch_images.contract` encodes. The training side only hands over numpy arrays
(`CapturedBatch`) and the facts its traced step learned (`SampleSelector`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tb_batch_images import contract
from tb_batch_images.capture.batch import CapturedBatch
from tb_batch_images.capture.selector import SampleSelector
from tb_batch_images.capture.specs import InputLayout
from tb_batch_images.contract import names
from tb_batch_images.host import boxes as box_utils
from tb_batch_images.host import masks, predictions
from tb_batch_images.host import pixels as pixel_utils

Warn = Callable[[str, str], None]


@dataclasses.dataclass
class RecordOptions:
    """What the logger was asked to show, as the record builder needs it."""

    selection: str
    class_names: list[str] | None
    filenames: list[str] | None
    max_image_size: int
    image_format: str
    value_range: tuple[float, float] | None
    to_pixels: Callable[[np.ndarray], np.ndarray] | None
    top_k: int
    backend: str
    preprocessing: str | None = None  # a keras.applications preset, undone for display
    spike_threshold: float = 6.0  # a spike's culprits: losses above mean + this * dev


@dataclasses.dataclass
class _Pictures:
    """A batch's pictures as uint8, encoded, with their flags and the range used."""

    encoded: list[bytes]
    shapes: list[list[int]]
    pixels: list[np.ndarray]  # the logged uint8 pictures, [h, w, c]
    flags: list[list[str]]
    value_range: tuple[float, float] | None
    preprocessing: str | None
    sizes: np.ndarray | None  # [n, 4] true and stored sizes (unknown when traced)


def build_elements(
    batch: CapturedBatch,
    sequence: int,
    dropped: dict[str, int],
    selector: SampleSelector,
    options: RecordOptions,
    task: str,
    from_logits: bool,
    warn: Warn,
) -> list[bytes]:
    """Record + encoded images (+ masks) for one batch: the elements of one summary."""
    layout = selector.layout
    pictures = _pictures(batch, layout, options, warn)
    output_shape = selector.output_shape
    mask_type = (
        selector.maps.mask_type
        if selector.maps is not None and batch.output_maps is not None
        else None
    )
    if output_shape is not None and len(output_shape) > 1:
        if mask_type is None:
            _warn_no_masks(selector, output_shape, warn)
        task = names.TASK_RAW  # a dense map (e.g. segmentation)
    detection = _detection(batch, selector, warn)
    if detection:
        task = names.TASK_DETECTION
    mask_images: list[bytes] = []
    samples = []
    for i in range(len(batch.positions)):
        sample = _sample(batch, i, pictures, selector, options, task, from_logits, warn)
        if mask_type is not None:
            _add_masks(sample, batch, i, selector, from_logits, mask_images)
        if detection:
            _add_boxes(sample, batch, i, selector, options, pictures)
        samples.append(sample)
    if detection:
        _check_box_format(batch, selector, pictures, warn)
    record = _header(batch, sequence, dropped, layout, options, pictures)
    if batch.mode == "train" and options.selection != "watchlist":
        record.update(_trigger_fields(batch, samples, options))
    record.update(task=_record_task(task, output_shape), samples=samples)
    record["num_classes"] = _num_classes(task, output_shape)
    record["samples_logged"] = len(samples)
    if selector.heads is not None:
        record["output"] = selector.heads.chosen_name
    if mask_type is not None:
        record["masks"] = mask_type
        record["mask_shape"] = [int(d) for d in batch.output_maps.shape[1:3]]
    if detection:
        capture = selector.boxes
        record["box_format"] = capture.box_format
        record["box_predictions"] = (
            capture.decoder.source if batch.predicted_boxes is not None else None
        )
        record["max_boxes"] = capture.max_boxes
        record["box_iou_threshold"] = box_utils.IOU_THRESHOLD
        record["num_classes"] = (
            len(options.class_names) if options.class_names else capture.num_classes
        )
    return [contract.encode_record(record), *pictures.encoded, *mask_images]


def _pictures(
    batch: CapturedBatch, layout: InputLayout, options: RecordOptions, warn: Warn
) -> _Pictures:
    """The captured values turned to uint8 pictures for display, and encoded."""
    undo, value_range, preprocessing = _undo_for_display(layout, options, warn)
    sizes = batch.image_sizes if layout.dynamic_size else None
    images_in = batch.images if sizes is None else _padding_filled(batch.images, sizes)
    input_dtype = (
        (layout.source_input_dtype or layout.input_dtype)
        if layout.undo is not None
        else layout.input_dtype
    )
    pixels, flags, used_range = pixel_utils.to_uint8(
        images_in, batch.image_stats, input_dtype, value_range, options.to_pixels, undo
    )
    if used_range is None and options.to_pixels is None:
        warn(
            "rescaled",
            "the input values match no known range ([0, 1], [-1, 1], [0, 255]); "
            "images are stretched per sample and flagged 'rescaled'. Pass "
            "to_pixels= (e.g. undo mean/std normalisation) or value_range=.",
        )
    encoded, shapes, kept = [], [], []
    for i, picture in enumerate(pixels):
        if sizes is not None:  # fitted into a padded buffer: the stored part
            picture = picture[: int(sizes[i][2]), : int(sizes[i][3])]
        data, shape = pixel_utils.encode(
            picture, options.max_image_size, options.image_format
        )
        encoded.append(data)
        shapes.append(shape)
        kept.append(picture)
    return _Pictures(encoded, shapes, kept, flags, used_range, preprocessing, sizes)


def _sample(
    batch: CapturedBatch,
    i: int,
    pictures: _Pictures,
    selector: SampleSelector,
    options: RecordOptions,
    task: str,
    from_logits: bool,
    warn: Warn,
) -> dict[str, Any]:
    """One sample's fields: where it was, what it is, what the model said."""
    fields, label_flags = predictions.describe_sample(
        task,
        from_logits,
        _sample_values(batch.labels, i, selector.label_shape),
        _sample_values(batch.outputs, i, selector.output_shape),
        None if batch.output_stats is None else batch.output_stats[i],
        selector.output_shape,
        options.class_names,
        options.top_k,
    )
    sample_id = None if batch.sample_ids is None else int(batch.sample_ids[i])
    sample = {
        "position": int(batch.positions[i]),
        "batch": int(
            batch.batch if batch.sample_batches is None else batch.sample_batches[i]
        ),
        "sample_id": sample_id,
        "filename": _filename(batch, i, sample_id, options.filenames, warn),
        **fields,
        "loss": (
            None
            if batch.losses is None
            else predictions.finite_or_none(batch.losses[i])
        ),
        "flags": pictures.flags[i] + label_flags + _non_finite_flags(batch, i),
        "image_shape": pictures.shapes[i],
    }
    heads = selector.heads
    if heads is not None and batch.head_losses is not None:
        sample["head_losses"] = {
            name: predictions.finite_or_none(batch.head_losses[i][j])
            for j, name in enumerate(heads.names)
        }
    if pictures.sizes is not None:
        sample["input_size"] = [int(pictures.sizes[i][0]), int(pictures.sizes[i][1])]
    if batch.devices is not None:
        sample["device"] = int(batch.devices[i])
    if batch.processes is not None:
        sample["process"] = int(batch.processes[i])
    return sample


def _non_finite_flags(batch: CapturedBatch, i: int) -> list[str]:
    """`loss_non_finite`, `prediction_non_finite`: the sample's loss or any of its
    outputs (the kept values, and the min/max/mean of all) is NaN or Inf."""
    flags = []
    if batch.losses is not None and not np.isfinite(batch.losses[i]):
        flags.append(names.FLAG_LOSS_NON_FINITE)
    outputs_bad = batch.outputs is not None and not np.all(
        np.isfinite(batch.outputs[i])
    )
    if batch.output_stats is not None and not np.all(
        np.isfinite(batch.output_stats[i])
    ):
        outputs_bad = True
    if outputs_bad:
        flags.append(names.FLAG_PREDICTION_NON_FINITE)
    return flags


def _add_masks(
    sample: dict[str, Any],
    batch: CapturedBatch,
    i: int,
    selector: SampleSelector,
    from_logits: bool,
    mask_images: list[bytes],
) -> None:
    """A dense output's masks and scores; the mask PNGs go after the pictures."""
    mask_fields, label_png, prediction_png = masks.describe(
        selector.maps.mask_type,
        None if batch.label_maps is None else batch.label_maps[i],
        batch.output_maps[i],
        selector.maps.classes,
        from_logits,
    )
    sample.update(mask_fields, label=None, prediction=None)
    for field, png in (("label_mask", label_png), ("prediction_mask", prediction_png)):
        if png is not None:
            sample[field] = len(batch.positions) + len(mask_images)
            mask_images.append(png)


def _trigger_fields(
    batch: CapturedBatch, samples: list[dict[str, Any]], options: RecordOptions
) -> dict[str, Any]:
    """Why the batch was logged (`trigger`), the step's loss and its running
    statistics, and on a triggered step each sample's `culprit` (docs/format.md)."""
    code = batch.trigger_code
    trigger = (
        names.TRIGGER_CODES[code]
        if 0 < code < len(names.TRIGGER_CODES)
        else names.TRIGGER_SCHEDULE
    )
    fields: dict[str, Any] = {"trigger": trigger}
    if batch.flight is None:
        return fields
    _, loss, mean, deviation, non_finite = (float(v) for v in batch.flight[:5])
    fields.update(
        batch_loss=predictions.finite_or_none(loss),
        batch_loss_finite=bool(np.isfinite(loss)),
        loss_mean=predictions.finite_or_none(mean),
        loss_deviation=predictions.finite_or_none(deviation),
        non_finite_samples=int(non_finite) if np.isfinite(non_finite) else 0,
    )
    if trigger == names.TRIGGER_SCHEDULE:
        return fields
    spread = max(deviation, 0.1 * abs(mean))
    line = mean + options.spike_threshold * spread
    for i, sample in enumerate(samples):
        flags = sample.get("flags") or []
        if trigger == names.TRIGGER_NON_FINITE:
            culprit = any(
                flag in flags
                for flag in (names.FLAG_NAN, names.FLAG_INF, names.FLAG_LOSS_NON_FINITE)
            )
        else:
            value = None if batch.losses is None else float(batch.losses[i])
            culprit = value is not None and np.isfinite(value) and value > line
        sample["culprit"] = bool(culprit)
    return fields


def _detection(batch: CapturedBatch, selector: SampleSelector, warn: Warn) -> bool:
    """Whether the batch has boxes to log; says once why boxes in y are not logged,
    and why there are no predicted boxes."""
    capture = selector.boxes
    if capture is None:
        if selector.unread_boxes is not None:
            warn(
                "boxes_unread",
                f"y holds bounding boxes ({selector.unread_boxes}) but "
                "BatchImageLogger was given no bounding_box_format, so the boxes are "
                "not logged. Pass the format your boxes are in, the one Keras's "
                "layers take, e.g. BatchImageLogger(..., bounding_box_format='xyxy') "
                f"(one of {', '.join(names.BOX_FORMATS)})",
            )
        return False
    if batch.boxes is None:
        if capture.no_boxes_reason is not None:
            warn(
                "no_boxes",
                f"bounding_box_format={capture.box_format!r} was given but "
                f"{capture.no_boxes_reason}; no boxes are logged",
            )
        return False
    if batch.predicted_boxes is None and capture.no_predictions_reason is not None:
        warn(
            "no_box_predictions",
            f"the label boxes are logged, predicted boxes are not: "
            f"{capture.no_predictions_reason}",
        )
    return True


def _frame(batch: CapturedBatch, i: int, layout: InputLayout) -> tuple[float, float]:
    """(height, width) of sample i's picture as the model received it (or as the
    source layer gave it): the picture its boxes are in."""
    if layout.dynamic_size and batch.image_sizes is not None:
        return float(batch.image_sizes[i][0]), float(batch.image_sizes[i][1])
    shape = layout.input_shape
    height, width = shape[1:3] if layout.layout == "CHW" else shape[0:2]
    return float(height or 0), float(width or 0)


def _add_boxes(
    sample: dict[str, Any],
    batch: CapturedBatch,
    i: int,
    selector: SampleSelector,
    options: RecordOptions,
    pictures: _Pictures,
) -> None:
    """A detection sample's `boxes`, their checks as sample flags; no label values."""
    capture = selector.boxes
    prediction = None
    if batch.predicted_boxes is not None:
        prediction = (
            batch.predicted_boxes[i],
            batch.predicted_box_classes[i],
            batch.predicted_box_scores[i],
            int(batch.predicted_box_counts[i]),
            capture.prediction_format,
        )
    num_classes = (
        len(options.class_names)
        if options.class_names is not None
        else capture.num_classes
    )
    field, flags = box_utils.describe(
        batch.boxes[i],
        batch.box_classes[i],
        int(batch.box_counts[i]),
        capture.box_format,
        _frame(batch, i, selector.layout),
        tuple(pictures.shapes[i][:2]),
        pictures.pixels[i],
        num_classes,
        prediction,
    )
    sample["boxes"] = field
    sample["flags"] = sample["flags"] + flags


def _check_box_format(
    batch: CapturedBatch, selector: SampleSelector, pictures: _Pictures, warn: Warn
) -> None:
    """One warning when the batch's boxes do not fit the format they were given in."""
    raw = [
        box_utils.kept(batch.boxes[i], batch.box_classes[i])[0]
        for i in range(len(batch.positions))
    ]
    frames = [_frame(batch, i, selector.layout) for i in range(len(raw))]
    problem = box_utils.format_problem(raw, selector.boxes.box_format, frames)
    if problem is not None:
        warn("box_format", problem)


def _warn_no_masks(selector: SampleSelector, output_shape: list, warn: Warn) -> None:
    warn(
        "no_masks",
        f"the output ({list(output_shape)} per sample) is shown as raw "
        "values, not as a mask: "
        + (
            selector.no_mask_reason
            or "masks need an output map [height, width, channels] of the "
            "picture's size or a fixed scale of it"
        ),
    )


def _header(
    batch: CapturedBatch,
    sequence: int,
    dropped: dict[str, int],
    layout: InputLayout,
    options: RecordOptions,
    pictures: _Pictures,
) -> dict[str, Any]:
    """The batch's own fields of the record (docs/format.md, "Batch record")."""
    return {
        "mode": batch.mode,
        "step": batch.step,
        "epoch": batch.epoch,
        "batch": batch.batch,
        "wall_time": batch.wall_time,
        "sequence": sequence,
        "batch_size": batch.batch_size,
        "samples_logged": 0,
        "selection": options.selection,
        "replica": batch.replica,
        "num_replicas": batch.num_replicas,
        "backend": options.backend,
        "task": None,
        "class_names": options.class_names,
        "num_classes": None,
        "image_key": None if layout.image_key is None else str(layout.image_key),
        "image_source": layout.image_source,
        "input_shape": _input_shape(layout, pictures.sizes),
        "input_dtype": layout.input_dtype,
        "input_layout": layout.layout,
        "value_range": list(pictures.value_range) if pictures.value_range else None,
        "preprocessing": pictures.preprocessing,
        "image_format": options.image_format,
        "dropped": dropped,
    }


def _record_task(task: str, output_shape: list | None) -> str:
    """The record's task: several sigmoid outputs are "multilabel"."""
    if task == names.TASK_BINARY and output_shape and int(np.prod(output_shape)) > 1:
        return names.TASK_MULTILABEL
    return task


def _num_classes(task: str, output_shape: list | None) -> int | None:
    if not output_shape or task == names.TASK_RAW:
        return None
    num_classes = int(np.prod(output_shape))
    if task == names.TASK_BINARY and num_classes == 1:
        return 2
    return num_classes


def _padding_filled(images: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The padding of fitted images set to a pixel of each, out of every statistic."""
    images = np.array(images)
    for i, (_, _, height, width) in enumerate(sizes):
        images[i, height:, :] = images[i, 0, 0]
        images[i, :height, width:] = images[i, 0, 0]
    return images


def _input_shape(layout: InputLayout, sizes: np.ndarray | None) -> list[int]:
    """One sample's shape as the model received it (sizes unknown when traced:
    the first logged sample's)."""
    if sizes is None or not len(sizes):
        return [int(d) for d in layout.input_shape if d is not None]
    height, width = int(sizes[0][0]), int(sizes[0][1])
    channels = layout.stored_shape[2]
    if layout.layout == "CHW":
        return [channels, height, width]
    return [height, width, channels]


def _undo_for_display(
    layout: InputLayout, options: RecordOptions, warn: Warn
) -> tuple[Callable | None, tuple[float, float] | None, str | None]:
    """(undo, value range, preset applied) for turning the captured values to pixels.

    First the source layers' Rescaling/Normalization (back to `x`'s units), then a
    keras.applications preset (back to RGB 0..255).
    """
    layers_undo = layout.undo
    preset = options.preprocessing
    if preset is None:
        return layers_undo, options.value_range, None
    dtype = layout.source_input_dtype if layers_undo else layout.input_dtype
    problem = pixel_utils.preprocessing_problem(
        preset, dtype or layout.input_dtype, layout.stored_shape[2]
    )
    if problem is not None:
        warn("preprocessing", problem)
        return layers_undo, options.value_range, None
    preset_undo = pixel_utils.undo_preprocessing(preset)
    if layers_undo is None:
        return preset_undo, (0.0, 255.0), preset
    return (lambda v: preset_undo(layers_undo(v))), (0.0, 255.0), preset


def _filename(
    batch: CapturedBatch,
    i: int,
    sample_id: int | None,
    filenames: Sequence[str] | None,
    warn: Callable[[str, str], None],
) -> str | None:
    if batch.filenames is not None:
        return batch.filenames[i]
    if sample_id is not None and filenames is not None:
        if 0 <= sample_id < len(filenames):
            return str(filenames[sample_id])
        warn(
            "sample_id_range",
            f"sample_id {sample_id} is outside filenames (len {len(filenames)})",
        )
    return None


def _sample_values(
    values: np.ndarray | None, i: int, shape: list[int | None] | None
) -> np.ndarray | None:
    if values is None or shape is None:
        return None
    if None in shape:
        return values[i]
    size = int(np.prod(shape)) if shape else 1
    return values[i][: min(size, values.shape[1])]
