"""Per-pixel outputs (segmentation, depth): the label and output maps of the chosen samples.

Inside the step, a dense output `[n, oh, ow, C]` that is the picture's size or a fixed
scale of it is read as a map (classes, one sigmoid channel or values, by the loss's
task) and resized to the logged picture's size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

from tb_batch_images.capture.specs import InputLayout
from tb_batch_images.contract import names

CLASS_TASKS = (names.TASK_SPARSE_CATEGORICAL, names.TASK_CATEGORICAL)


@dataclasses.dataclass(frozen=True)
class MapFacts:
    """What the traced step learned of its maps, for reading them on the host."""

    mask_type: str  # names.MASK_TYPES
    classes: int  # output channels (the classes of a "classes" map)
    has_label_map: bool


def dense_maps(
    layout: InputLayout, task: str | None, label: Any, output: Any
) -> tuple[Any, Any, MapFacts] | str | None:
    """(label map or None, output map, facts): [n, h, w] float32 maps at the stored
    picture's size, when the output is a per-pixel map of the picture. None when the
    output is no map; a string saying why when it is map-shaped but cannot be read.

    An output [n, oh, ow, C] (or [n, oh, ow]; channels first under that data
    format) is a map when oh x ow is the picture's size or a fixed integer scale
    of it. How it is read depends on the loss's task:
    - classification with C > 1 ("classes"): the argmax class per pixel; a label
      [n, oh, ow] or [n, oh, ow, 1] is the class, a one-hot [n, oh, ow, C] its
      argmax;
    - binary with C = 1 ("binary"): the output's value (thresholded on the host);
    - any other loss ("values"): the value (C > 1: the largest channel's).
    Maps are resized (nearest neighbour) to the logged picture's size.
    """
    ops = keras.ops
    shape = tuple(output.shape[1:])
    if task is None or layout.dynamic_size:
        return None
    if len(shape) not in (2, 3) or None in shape:
        return None
    if len(shape) == 2:
        output = ops.expand_dims(output, -1)
    elif keras.config.image_data_format() == "channels_first":
        output = ops.transpose(output, (0, 2, 3, 1))
    out_h, out_w, channels = (int(d) for d in output.shape[1:])
    height, width = _picture_size(layout)
    if not _same_scale(out_h, out_w, height, width):
        return (
            f"the output's per-pixel shape {[out_h, out_w]} is no fixed scale of "
            f"the picture's {[height, width]}"
        )
    if task in CLASS_TASKS and channels > 1:
        mask_type = names.MASK_CLASSES
        output_map = ops.cast(ops.argmax(output, axis=-1), "float32")
    elif task == names.TASK_BINARY and channels == 1:
        mask_type = names.MASK_BINARY
        output_map = ops.cast(output[..., 0], "float32")
    elif task not in CLASS_TASKS and task != names.TASK_BINARY:
        mask_type = names.MASK_VALUES
        output_map = ops.max(ops.cast(output, "float32"), axis=-1)
    else:
        return (
            f"a {task} loss on {channels} output channel(s) per pixel is neither "
            "a class map (several channels) nor a binary one (one channel)"
        )
    label_map = None
    if label is not None:
        label_map = _label_map(label, mask_type, out_h, out_w, channels)
    stored = tuple(layout.stored_shape[:2])
    return (
        None if label_map is None else _resized_map(label_map, stored),
        _resized_map(output_map, stored),
        MapFacts(mask_type, channels, label_map is not None),
    )


def _label_map(label, mask_type: str, out_h: int, out_w: int, channels: int) -> Any:
    """The label as an [n, oh, ow] map of the output's mask_type, or None if it is not."""
    ops = keras.ops
    shape = tuple(label.shape[1:])
    if keras.config.image_data_format() == "channels_first" and len(shape) == 3:
        label = ops.transpose(label, (0, 2, 3, 1))
        shape = tuple(label.shape[1:])
    if shape == (out_h, out_w):
        return ops.cast(label, "float32")
    if shape == (out_h, out_w, 1):
        return ops.cast(label[..., 0], "float32")
    if shape == (out_h, out_w, channels):
        if mask_type == names.MASK_CLASSES:
            return ops.cast(ops.argmax(label, axis=-1), "float32")
        return ops.max(ops.cast(label, "float32"), axis=-1)
    return None


def _picture_size(layout: InputLayout) -> tuple[int, int]:
    """Height and width of one picture as the model received it (0: unknown)."""
    shape = layout.input_shape
    height, width = shape[1:3] if layout.layout == "CHW" else shape[0:2]
    return int(height or 0), int(width or 0)


def _same_scale(map_h: int, map_w: int, height: int, width: int) -> bool:
    """Whether a map is the picture's size, or one integer multiple or fraction of it."""
    if not (map_h and map_w and height and width) or map_h * width != map_w * height:
        return False
    return map_h % height == 0 or height % map_h == 0


def _resized_map(values: Any, size: tuple[int, int]) -> Any:
    """[n, h, w] -> [n, *size], nearest neighbour (classes stay classes)."""
    if tuple(values.shape[1:3]) == size:
        return values
    resized = keras.ops.image.resize(
        keras.ops.expand_dims(values, -1),
        size,
        interpolation="nearest",
        data_format="channels_last",
    )
    return resized[..., 0]
