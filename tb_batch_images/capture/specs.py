"""What the step's inputs are: array specs, where the picture is in `x`, how it is stored.

Runs when the capture is installed or first traced, never per step: from the specs of
`x` (a `tf.data` element spec, or the arrays of the first batch on JAX and PyTorch) and
the model's declared inputs it decides which input is the picture, its layout (HWC, CHW
or HW), and the shape and dtype it is stored at (`InputLayout`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras

from tb_batch_images.capture import keras_internals
from tb_batch_images.contract import names


class CaptureError(ValueError):
    """The data cannot be captured; the message says what to do instead."""


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    """Shape (None where unknown, batch first) and dtype name of one input array."""

    shape: tuple[int | None, ...]
    dtype: str

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_numeric(self) -> bool:
        return self.dtype == "bool" or self.dtype.startswith(
            ("float", "bfloat", "int", "uint")
        )

    @property
    def is_integer(self) -> bool:
        return self.dtype.startswith(("int", "uint"))

    def describe(self) -> str:
        return f"shape {list(self.shape)}, dtype {self.dtype}"


def spec_of(value: Any) -> ArraySpec | None:
    """The ArraySpec of a tensor or array of any backend; None for other values."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return None
    try:
        dims = tuple(None if d is None else int(d) for d in tuple(shape))
    except (TypeError, ValueError):  # a symbolic dimension
        dims = tuple(d if isinstance(d, int) else None for d in tuple(shape))
    name = getattr(dtype, "name", None)
    if name == "string" or str(dtype) in ("<dtype: 'string'>", "object"):
        return ArraySpec(dims, "string")
    try:
        name = keras.backend.standardize_dtype(dtype)
    except (TypeError, ValueError, AttributeError):
        name = str(name or dtype)
    return ArraySpec(dims, name)


def map_specs(structure: Any, to_spec: Callable[[Any], Any] = spec_of) -> Any:
    """`x` (a dict, tuple, list or one tensor) with each leaf replaced by its spec."""
    if isinstance(structure, dict):
        return {key: map_specs(value, to_spec) for key, value in structure.items()}
    if isinstance(structure, (tuple, list)):
        return type(structure)(map_specs(value, to_spec) for value in structure)
    return to_spec(structure)


@dataclasses.dataclass
class InputLayout:
    """Where the image is in `x` and how one sample is laid out."""

    image_key: Any  # dict key or tuple index, None when x is the image tensor
    layout: str  # "HWC", "CHW" or "HW"
    input_shape: list[int | None]  # one sample, as the model receives it
    input_dtype: str
    # [h, w, c] after layout change and downscaling; with `dynamic_size`, the
    # [max_image_size, max_image_size, c] the fitted images are padded to.
    stored_shape: list[int]
    stored_dtype: str  # "uint8" or "float32"
    has_sample_id: bool
    has_filename: bool
    # Height and width unknown when the step is traced: each batch is fitted into
    # max_image_size (and padded where buffers have a fixed shape), sizes beside it.
    dynamic_size: bool = False
    # Set when the picture is a layer's output inside the model (see ImageSource).
    image_source: str | None = None
    source_input_dtype: str | None = None  # dtype of x's image, for the range choice
    undo: Callable | None = None  # to x's units for display; set on the host


def find_image(x_spec: Any, image_key: Any) -> tuple[Any, ArraySpec]:
    """(key, spec) of the image input in the specs of `x`.

    Raises CaptureError when no input can be an image.
    """
    if isinstance(x_spec, dict):
        if image_key is not None:
            if image_key not in x_spec:
                raise CaptureError(
                    f"image_key={image_key!r} is not a key of the input dict "
                    f"(keys: {sorted(map(str, x_spec))})"
                )
            return image_key, x_spec[image_key]
        candidates = [
            key
            for key, spec in x_spec.items()
            if key not in names.METADATA_KEYS and _could_be_image(spec)
        ]
        for preferred in ("image", "images", "img", "pixels", "input"):
            if preferred in candidates:
                return preferred, x_spec[preferred]
        if len(candidates) == 1:
            return candidates[0], x_spec[candidates[0]]
        if not candidates:
            raise CaptureError(
                f"no input in the x dict looks like an image batch (keys: "
                f"{sorted(map(str, x_spec))}); images are [batch, height, width, "
                f"channels] or [batch, height, width] numeric tensors"
            )
        raise CaptureError(
            f"several inputs could be the image ({sorted(map(str, candidates))}); "
            f"pass image_key= to BatchImageLogger"
        )
    if isinstance(x_spec, (tuple, list)):
        index = image_key if isinstance(image_key, int) else None
        if index is None:
            candidates = [i for i, s in enumerate(x_spec) if _could_be_image(s)]
            if len(candidates) != 1:
                raise CaptureError(
                    "the model has several inputs; pass image_key=<index> "
                    "to BatchImageLogger"
                )
            index = candidates[0]
        return index, x_spec[index]
    if not _could_be_image(x_spec):
        raise CaptureError(
            f"the input ({describe_spec(x_spec)}) is not an image batch; images "
            f"are [batch, height, width, channels] or [batch, height, width] numbers"
        )
    return None, x_spec


def _could_be_image(spec: Any) -> bool:
    """[batch, h, w], [batch, h, w, c] or [batch, c, h, w] numbers.

    Height and width may be unknown (None) when the channels are known: a pipeline
    that decodes files without resizing, or a model with `Input((None, None, 3))`.
    """
    if not isinstance(spec, ArraySpec) or not spec.is_numeric:
        return False
    if spec.rank not in (3, 4):
        return False
    dims = spec.shape[1:]
    if None not in dims:
        return True
    if spec.rank == 3:  # [batch, None, None]: no channels to tell an image by
        return False
    first, _, last = dims
    return last in _CHANNELS or (last is None and first in _CHANNELS)


_CHANNELS = (1, 2, 3, 4)


_SPATIAL = {"HWC": (1, 2), "CHW": (2, 3), "HW": (1, 2)}  # axes of one batch


def model_input_shapes(model: keras.Model, x_spec: Any) -> Any:
    """The shapes the model declares for the inputs in `x_spec`, structured alike.

    None where the model declares nothing (a subclassed model) or the structures do
    not match; entries are tuples with None for unknown dimensions.
    """
    try:
        inputs = list(getattr(model, "inputs", None) or [])
    except (AttributeError, ValueError):  # a model without known inputs
        return None
    struct = keras_internals.inputs_struct(model)

    def shape(tensor: Any) -> Any:
        value = getattr(tensor, "shape", None)
        return None if value is None else tuple(value)

    if isinstance(x_spec, dict):
        keys = [key for key in x_spec if key not in names.METADATA_KEYS]
        if isinstance(struct, dict):
            return {key: shape(struct[key]) for key in keys if key in struct}
        if len(keys) == 1 and len(inputs) == 1:
            return {keys[0]: shape(inputs[0])}
        return None
    if isinstance(x_spec, (tuple, list)):
        if len(inputs) == len(x_spec):
            return type(x_spec)(shape(t) for t in inputs)
        return None
    return shape(inputs[0]) if len(inputs) == 1 else None


def with_model_shapes(x_spec: Any, model_shapes: Any, concrete: bool) -> Any:
    """The specs of `x` completed (or generalised) by the model's declared inputs.

    `concrete=False` (a `tf.data` element spec): a dimension the data leaves unknown
    takes the model's (its `Input` fixes the size the data must have).
    `concrete=True` (the arrays of one batch, JAX and PyTorch): a height or width the
    model leaves unknown becomes unknown, since later batches may differ.
    """
    if model_shapes is None:
        return x_spec
    if isinstance(x_spec, dict) and isinstance(model_shapes, dict):
        return {
            key: _with_model_shape(spec, model_shapes.get(key), concrete)
            for key, spec in x_spec.items()
        }
    if isinstance(x_spec, (tuple, list)) and isinstance(model_shapes, (tuple, list)):
        return type(x_spec)(
            _with_model_shape(spec, shape, concrete)
            for spec, shape in zip(x_spec, model_shapes, strict=False)
        )
    return _with_model_shape(x_spec, model_shapes, concrete)


def _with_model_shape(spec: Any, shape: Any, concrete: bool) -> Any:
    if not isinstance(spec, ArraySpec) or not isinstance(shape, tuple):
        return spec
    if len(shape) != spec.rank or spec.rank not in (3, 4):
        return spec
    dims = list(spec.shape)
    if not concrete:
        for axis in range(1, spec.rank):
            if dims[axis] is None and isinstance(shape[axis], int):
                dims[axis] = shape[axis]
        return dataclasses.replace(spec, shape=tuple(dims))
    if None not in dims[1:] and _could_be_image(spec):
        layout = _layout_of(
            [int(d) for d in dims[1:]], keras.config.image_data_format()
        )
        general = list(dims)
        for axis in _SPATIAL[layout]:
            if shape[axis] is None:
                general[axis] = None
        widened = dataclasses.replace(spec, shape=tuple(general))
        if _could_be_image(widened):
            return widened
    return spec


def _layout_of(sample_shape: list[int | None], data_format: str) -> str:
    if len(sample_shape) == 2:
        return "HW"
    return "CHW" if _is_channels_first(sample_shape, data_format) else "HWC"


def unknown_size(spec: Any) -> Any:
    """`spec` with its height and width unknown (a source layer of a dynamic input)."""
    if not isinstance(spec, ArraySpec) or not _could_be_image(spec):
        return spec
    if spec.rank != 4 or None in spec.shape[1:]:
        return spec
    layout = _layout_of(list(spec.shape[1:]), keras.config.image_data_format())
    dims = list(spec.shape)
    for axis in _SPATIAL[layout]:
        dims[axis] = None
    return dataclasses.replace(spec, shape=tuple(dims))


def fitted_size(height: int, width: int, max_image_size: int) -> tuple[int, int]:
    """(h, w) of an image of that size downscaled to fit max_image_size (never up)."""
    scale = min(1.0, max_image_size / max(height, width, 1))
    return max(1, round(height * scale)), max(1, round(width * scale))


def layout_for(
    x_spec: Any,
    image_key: Any,
    max_image_size: int,
    data_format: str,
) -> InputLayout:
    """Decides how to capture the image input described by `x_spec` (ArraySpecs)."""
    key, spec = find_image(x_spec, image_key)
    sample_shape = [None if d is None else int(d) for d in spec.shape[1:]]
    layout = _layout_of(sample_shape, data_format)
    if layout == "HW":
        height, width, channels = sample_shape[0], sample_shape[1], 1
    elif layout == "CHW":
        channels, height, width = sample_shape
    else:
        height, width, channels = sample_shape
    dynamic = height is None or width is None
    if dynamic:
        # Fitted into max_image_size per batch, in the step; a uint8 input stays
        # uint8 (resized values are rounded back), which keeps the buffers small.
        stored_h = stored_w = max_image_size
        stored_dtype = "uint8" if spec.dtype == "uint8" else "float32"
    else:
        stored_h, stored_w = fitted_size(height, width, max_image_size)
        downscaled = (stored_h, stored_w) != (height, width)
        stored_dtype = (
            "uint8" if spec.dtype == "uint8" and not downscaled else "float32"
        )
    has = isinstance(x_spec, dict)
    return InputLayout(
        image_key=key,
        layout=layout,
        input_shape=sample_shape,
        input_dtype=spec.dtype,
        stored_shape=[stored_h, stored_w, channels],
        stored_dtype=stored_dtype,
        has_sample_id=has and names.SAMPLE_ID_KEY in x_spec,
        has_filename=has and names.FILENAME_KEY in x_spec,
        dynamic_size=dynamic,
    )


def _is_channels_first(sample_shape: list[int | None], data_format: str) -> bool:
    first, last = sample_shape[0], sample_shape[-1]
    if data_format == "channels_first":
        return first in (1, 2, 3, 4)
    return first in (1, 3, 4) and last not in (1, 2, 3, 4)


def describe_spec(spec: Any) -> str:
    return spec.describe() if isinstance(spec, ArraySpec) else type(spec).__name__


def leaves_of(structure: Any) -> list[Any]:
    if isinstance(structure, dict):
        return [leaf for value in structure.values() for leaf in leaves_of(value)]
    if isinstance(structure, (tuple, list)):
        return [leaf for value in structure for leaf in leaves_of(value)]
    return [] if structure is None else [structure]
