"""Builds the on-disk record of one captured batch (see docs/format.md).

Runs on the background writer thread: pixels to uint8, encoded images, per-sample
fields (labels, predictions, loss, flags), and the record that `tb_batch_images.format`
encodes. The training side only hands over numpy arrays (`CapturedBatch`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from tb_batch_images import format as fmt
from tb_batch_images import masks, predictions
from tb_batch_images import pixels as pixel_utils
from tb_batch_images.core import SampleSelector
from tb_batch_images.writer import CapturedBatch


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


def build_elements(
    batch: CapturedBatch,
    sequence: int,
    dropped: dict[str, int],
    selector: SampleSelector,
    options: RecordOptions,
    task: str,
    from_logits: bool,
    warn: Callable[[str, str], None],
) -> list[bytes]:
    """Record + encoded images for one batch: the elements of one summary."""
    layout = selector.layout
    undo, value_range, preprocessing = _undo_for_display(layout, options, warn)
    sizes = batch.image_sizes if layout.dynamic_size else None
    images_in = batch.images if sizes is None else _padding_filled(batch.images, sizes)
    pixels, flags, used_range = pixel_utils.to_uint8(
        images_in,
        batch.image_stats,
        (layout.source_input_dtype or layout.input_dtype)
        if layout.undo is not None
        else layout.input_dtype,
        value_range,
        options.to_pixels,
        undo,
    )
    if used_range is None and options.to_pixels is None:
        warn(
            "rescaled",
            "the input values match no known range ([0, 1], [-1, 1], [0, 255]); "
            "images are stretched per sample and flagged 'rescaled'. Pass "
            "to_pixels= (e.g. undo mean/std normalisation) or value_range=.",
        )
    images: list[bytes] = []
    samples = []
    output_shape = selector.output_shape
    label_shape = selector.label_shape
    mask_kind = selector.mask_kind if batch.output_maps is not None else None
    if output_shape is not None and len(output_shape) > 1:
        if mask_kind is None:
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
        task = predictions.RAW  # a dense map (e.g. segmentation)
    mask_images: list[bytes] = []
    heads = selector.heads
    head_losses = batch.head_losses if heads is not None else None
    for i in range(len(batch.positions)):
        picture = pixels[i]
        if sizes is not None:  # fitted into a padded buffer: the stored part
            picture = picture[: int(sizes[i][2]), : int(sizes[i][3])]
        encoded, shape = pixel_utils.encode(
            picture, options.max_image_size, options.image_format
        )
        images.append(encoded)
        fields, label_flags = predictions.describe_sample(
            task,
            from_logits,
            _sample_values(batch.labels, i, label_shape),
            _sample_values(batch.outputs, i, output_shape),
            None if batch.output_stats is None else batch.output_stats[i],
            output_shape,
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
            "flags": flags[i] + label_flags,
            "image_shape": shape,
        }
        if mask_kind is not None:
            mask_fields, label_png, prediction_png = masks.describe(
                mask_kind,
                None if batch.label_maps is None else batch.label_maps[i],
                batch.output_maps[i],
                selector.mask_classes,
                from_logits,
            )
            sample.update(mask_fields, label=None, prediction=None)
            for field, png in (
                ("label_mask", label_png),
                ("prediction_mask", prediction_png),
            ):
                if png is not None:
                    sample[field] = len(batch.positions) + len(mask_images)
                    mask_images.append(png)
        if head_losses is not None:
            sample["head_losses"] = {
                name: predictions.finite_or_none(head_losses[i][j])
                for j, name in enumerate(heads.names)
            }
        if sizes is not None:
            sample["input_size"] = [int(sizes[i][0]), int(sizes[i][1])]
        if batch.devices is not None:
            sample["device"] = int(batch.devices[i])
        if batch.processes is not None:
            sample["process"] = int(batch.processes[i])
        samples.append(sample)
    num_classes = None
    if output_shape and task != predictions.RAW:
        num_classes = int(np.prod(output_shape))
        if task == predictions.BINARY and num_classes > 1:
            task = predictions.MULTILABEL
        elif task == predictions.BINARY:
            num_classes = 2
    record = {
        "mode": batch.mode,
        "step": batch.step,
        "epoch": batch.epoch,
        "batch": batch.batch,
        "wall_time": batch.wall_time,
        "sequence": sequence,
        "batch_size": batch.batch_size,
        "samples_logged": len(samples),
        "selection": options.selection,
        "replica": batch.replica,
        "num_replicas": batch.num_replicas,
        "backend": options.backend,
        "task": task,
        "class_names": options.class_names,
        "num_classes": num_classes,
        "image_key": None if layout.image_key is None else str(layout.image_key),
        "image_source": layout.image_source,
        "input_shape": _input_shape(layout, sizes),
        "input_dtype": layout.input_dtype,
        "input_layout": layout.layout,
        "value_range": list(used_range) if used_range else None,
        "preprocessing": preprocessing,
        "image_format": options.image_format,
        "dropped": dropped,
        "samples": samples,
    }
    if heads is not None:
        record["output"] = heads.chosen_name
    if mask_kind is not None:
        record["masks"] = mask_kind
        record["mask_shape"] = [int(d) for d in batch.output_maps.shape[1:3]]
    return [fmt.encode_record(record), *images, *mask_images]


def _padding_filled(images: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The padding of fitted images set to a pixel of each, out of every statistic."""
    images = np.array(images)
    for i, (_, _, height, width) in enumerate(sizes):
        images[i, height:, :] = images[i, 0, 0]
        images[i, :height, width:] = images[i, 0, 0]
    return images


def _input_shape(layout, sizes: np.ndarray | None) -> list[int]:
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
    layout, options: RecordOptions, warn: Callable[[str, str], None]
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
