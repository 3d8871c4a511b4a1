"""The backend-neutral capture core: which input is the image, which samples, what to copy.

Everything here is written with `keras.ops`, so the same code runs inside a TensorFlow
graph, a JAX trace or a PyTorch step. The per-backend adapters (`tb_batch_images.backends`)
decide only how the step is wrapped and how the chosen arrays leave it.

`SampleSelector.select` runs inside the training step, on the step's own tensors: the
batch `x` the model received, the labels `y` and the `y_pred` of the training forward
pass (so there is no second forward pass). It returns fixed-shape arrays for the
`samples` chosen samples: their positions in the batch, their pixels (channels last,
downscaled to `max_image_size`), per-sample pixel statistics, labels and outputs
(flattened, `VALUES_PER_SAMPLE` values), output statistics, the per-sample loss of the
compiled loss and the sample ids. For a model with several outputs (`Heads`), the
prediction and loss come from one head and every head's per-sample loss is kept
(`head_losses`). Images whose height and width are unknown when the step is traced
(a `tf.data` pipeline that decodes files without resizing, a model with
`Input((None, None, 3))`) are fitted into `max_image_size` and padded, with their
true and stored sizes beside them (`image_sizes`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tb_batch_images import format as fmt

# Values of labels and outputs kept per sample (flattened); min/max/mean cover the rest.
VALUES_PER_SAMPLE = 1024
SELECTIONS = ("first", "random", "highest_loss")
# Keys of `SampleSelector.select`'s result that hold one row per chosen sample.
PER_SAMPLE = (
    "positions",
    "images",
    "image_stats",
    "labels",
    "outputs",
    "output_stats",
    "losses",
    "sample_ids",
    "filenames",
    "head_losses",
    "image_sizes",
    "label_maps",
    "output_maps",
)
# Mask kinds of dense (per-pixel) labels and outputs (docs/format.md, "masks").
MASK_CLASSES, MASK_BINARY, MASK_VALUES = fmt.MASK_KINDS
_CLASS_TASKS = ("sparse_categorical", "categorical")


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
            if key not in fmt.METADATA_KEYS and _could_be_image(spec)
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
            f"the input ({_described(x_spec)}) is not an image batch; images "
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
    struct = getattr(model, "_inputs_struct", None)

    def shape(tensor: Any) -> Any:
        value = getattr(tensor, "shape", None)
        return None if value is None else tuple(value)

    if isinstance(x_spec, dict):
        keys = [key for key in x_spec if key not in fmt.METADATA_KEYS]
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
        has_sample_id=has and fmt.SAMPLE_ID_KEY in x_spec,
        has_filename=has and fmt.FILENAME_KEY in x_spec,
        dynamic_size=dynamic,
    )


def _is_channels_first(sample_shape: list[int | None], data_format: str) -> bool:
    first, last = sample_shape[0], sample_shape[-1]
    if data_format == "channels_first":
        return first in (1, 2, 3, 4)
    return first in (1, 3, 4) and last not in (1, 2, 3, 4)


def check_metadata_specs(x_spec: Any, jit_compile: bool) -> None:
    """Raises CaptureError for metadata the step cannot carry (specs of `x`)."""
    if not isinstance(x_spec, dict):
        return
    filename_spec = x_spec.get(fmt.FILENAME_KEY)
    if filename_spec is not None:
        if getattr(filename_spec, "dtype", None) != "string":
            raise CaptureError(
                f"x['{fmt.FILENAME_KEY}'] must hold strings; to pass integer ids "
                f"use x['{fmt.SAMPLE_ID_KEY}'] and BatchImageLogger(filenames=...)"
            )
        if jit_compile:
            raise CaptureError(
                f"string filenames cannot travel through an XLA-compiled train step "
                f"(jit_compile=True, the default on GPU). Put an integer "
                f"x['{fmt.SAMPLE_ID_KEY}'] (the index into your list of paths) in "
                f"the batch instead of x['{fmt.FILENAME_KEY}'], and pass the list as "
                f"BatchImageLogger(..., filenames=paths)"
            )
    sample_id_spec = x_spec.get(fmt.SAMPLE_ID_KEY)
    if sample_id_spec is not None and not (
        isinstance(sample_id_spec, ArraySpec) and sample_id_spec.is_integer
    ):
        raise CaptureError(
            f"x['{fmt.SAMPLE_ID_KEY}'] must hold integers "
            f"(got {_described(sample_id_spec)}); put "
            f"strings in x['{fmt.FILENAME_KEY}']"
        )


def _described(spec: Any) -> str:
    return spec.describe() if isinstance(spec, ArraySpec) else type(spec).__name__


def check_sample_weight_spec(sample_weight_spec: Any) -> None:
    """A third element of strings is filenames in the sample-weight slot."""
    leaves = map_specs(sample_weight_spec, lambda spec: spec)
    for spec in _leaves(leaves):
        if getattr(spec, "dtype", None) == "string":
            raise CaptureError(
                "the dataset yields (images, labels, filenames); Keras reads a third "
                "element as sample weights. Yield ({'image': images, 'filename': "
                "filenames}, labels) instead: BatchImageLogger strips 'filename' from "
                "x before the model sees it. Example: "
                "ds = ds.map(lambda img, label, name: ({'image': img, 'filename': "
                "name}, label))"
            )


def _leaves(structure: Any) -> list[Any]:
    if isinstance(structure, dict):
        return [leaf for value in structure.values() for leaf in _leaves(value)]
    if isinstance(structure, (tuple, list)):
        return [leaf for value in structure for leaf in _leaves(value)]
    return [] if structure is None else [structure]


def strip_metadata(x: Any, unwrap_single: bool) -> tuple[Any, dict[str, Any]]:
    """Removes metadata keys from a dict `x`; returns (x for the model, metadata)."""
    if not isinstance(x, dict) or not any(k in x for k in fmt.METADATA_KEYS):
        return x, {}
    metadata = {k: x[k] for k in fmt.METADATA_KEYS if k in x}
    rest = {k: v for k, v in x.items() if k not in fmt.METADATA_KEYS}
    if unwrap_single and len(rest) == 1:
        return next(iter(rest.values())), metadata
    return rest, metadata


def model_takes_single_tensor(model: keras.Model) -> bool:
    """Whether x with one key left after stripping metadata should be unwrapped."""
    if isinstance(model, keras.Sequential):
        return True
    inputs = getattr(model, "_inputs_struct", None)
    if inputs is None:
        return False
    return not isinstance(inputs, (dict, list, tuple))


# The metadata entry holding the source layer's output (never in the user's x).
SOURCE_IMAGE = "_tb_batch_images_source_image"


def select_image(x: Any, layout: InputLayout, metadata: dict | None = None) -> Any:
    """The image tensor: from `x`, or the source layer's output when there is one."""
    if layout.image_source is not None:
        return (metadata or {})[SOURCE_IMAGE]
    return x if layout.image_key is None else x[layout.image_key]


# -- pictures from inside the model: leading preprocessing layers ---------------------
@dataclasses.dataclass
class ImageSource:
    """The layer whose output is logged, and the preprocessing chain up to it."""

    layer: Any
    chain: list[Any]  # the leading preprocessing layers, nested blocks flattened

    @property
    def name(self) -> str:
        return self.layer.name


def is_preprocessing_layer(layer: Any) -> bool:
    """A Keras preprocessing layer, or a Sequential/functional block made only of them."""
    from keras.src.layers.preprocessing.data_layer import DataLayer

    if isinstance(layer, DataLayer):
        return True
    if isinstance(layer, keras.Model):
        inner = [
            sub for sub in layer.layers if not isinstance(sub, keras.layers.InputLayer)
        ]
        return bool(inner) and all(is_preprocessing_layer(sub) for sub in inner)
    return False


def _flatten_chain(layers: list[Any]) -> list[Any]:
    flat = []
    for layer in layers:
        if isinstance(layer, keras.Model):
            flat += _flatten_chain(
                [s for s in layer.layers if not isinstance(s, keras.layers.InputLayer)]
            )
        else:
            flat.append(layer)
    return flat


def find_image_source(model: keras.Model, image_layer: Any) -> ImageSource | None:
    """The layer whose output the gallery shows, or None to show `x`.

    `image_layer=None`: the last of the model's leading preprocessing layers (in the
    model's layer order), if it starts with any. A string names the layer (raises
    ValueError listing the model's layers when none has that name). `False`: `x`.
    """
    if image_layer is False:
        return None
    layers = [
        layer
        for layer in getattr(model, "layers", [])
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    if image_layer is not None:
        names = [layer.name for layer in layers]
        if image_layer not in names:
            raise ValueError(
                f"image_layer={image_layer!r} names no layer of the model; its layers "
                f"are {names}"
            )
        index = names.index(image_layer)
        leading = [
            layer for layer in layers[: index + 1] if is_preprocessing_layer(layer)
        ]
        return ImageSource(layers[index], _flatten_chain(leading))
    leading = []
    for layer in layers:
        if not is_preprocessing_layer(layer):
            break
        leading.append(layer)
    if not leading or len(leading) == len(layers):
        return None
    return ImageSource(leading[-1], _flatten_chain(leading))


def undo_value_layers(chain: list[Any]) -> Callable[[np.ndarray], np.ndarray] | None:
    """A host function undoing the chain's Rescaling/Normalization layers, or None.

    Geometric layers (flips, rotations, crops, resizing) commute with these per-channel
    affine maps, so undoing them from the chain's output gives the augmented picture in
    the units of `x`. Random colour layers are part of the picture and stay.
    """
    steps = []
    for layer in chain:
        if isinstance(layer, keras.layers.Rescaling):
            scale = np.asarray(layer.scale, np.float32).reshape(-1)
            offset = np.asarray(layer.offset, np.float32).reshape(-1)
            steps.append((1.0 / scale, -offset / scale))
        elif isinstance(layer, keras.layers.Normalization):
            mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), np.float32)
            variance = np.asarray(
                keras.ops.convert_to_numpy(layer.variance), np.float32
            )
            std = np.maximum(np.sqrt(variance), keras.config.epsilon()).reshape(-1)
            mean = mean.reshape(-1)
            if getattr(layer, "invert", False):
                steps.append((1.0 / std, -mean / std))
            else:
                steps.append((std, mean))
    if not steps:
        return None

    def undo(values: np.ndarray) -> np.ndarray:
        for scale, offset in reversed(steps):  # y = x * a + b: x from the last layer
            values = values * scale + offset
        return values

    return undo


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


# -- models with several outputs ---------------------------------------------------
@dataclasses.dataclass
class Heads:
    """The outputs (heads) of a model with several, in the model's own order.

    `chosen` gives the logged prediction and loss; `losses` are the compiled loss of
    each head (for reading its outputs as classes), `loss_fns` their per-sample form.
    """

    names: list[str]
    chosen: int
    losses: list[Any]
    loss_fns: list[Callable | None]

    @property
    def chosen_name(self) -> str:
        return self.names[self.chosen]

    def pick(self, structure: Any, index: int) -> Any:
        """Head `index`'s entry of `y` or `y_pred` (a dict, list or tuple), or None."""
        if isinstance(structure, dict):
            return structure.get(self.names[index])
        if isinstance(structure, (list, tuple)):
            return structure[index] if index < len(structure) else None
        return None


def output_names(model: keras.Model) -> list[str] | None:
    """The model's outputs in its own order (None: one output, or not known).

    A dict of outputs keeps the order it was written in (its keys are the names the
    compiled loss and `y` use); a list keeps its order (names: `model.output_names`).
    Keras flattens a dict in sorted key order, which is not the model's order.
    """
    structure = getattr(model, "_outputs_struct", None)
    if isinstance(structure, dict):
        names = [str(key) for key in structure]
    elif isinstance(structure, (list, tuple)):
        names = [str(name) for name in getattr(model, "output_names", None) or []]
        if len(names) != len(structure):
            names = [f"output_{i}" for i in range(len(structure))]
    else:
        return None
    return names if len(names) > 1 else None


def find_heads(model: keras.Model, output: str | None) -> Heads | None:
    """The heads of a model with several outputs, the logged one chosen; else None.

    `output=None`: the one head whose compiled loss is a classification loss, else
    the first head in the model's order. A name: that head (raises ValueError listing
    the heads when no head has that name).
    """
    from tb_batch_images import predictions

    names = output_names(model)
    if names is None:
        if output is not None:
            single = [str(n) for n in getattr(model, "output_names", None) or []]
            if single and output not in single:
                raise ValueError(
                    f"output={output!r} names no output of the model; it has one "
                    f"output, {single[0]!r} (leave output= unset)"
                )
        return None
    loss = getattr(model, "loss", None)
    if isinstance(loss, dict):
        losses = [loss.get(name) for name in names]
    elif isinstance(loss, (list, tuple)) and len(loss) == len(names):
        losses = list(loss)
    else:  # one loss for every output, as compile() applies it
        losses = [loss] * len(names)
    if output is not None:
        if output not in names:
            raise ValueError(
                f"output={output!r} names no output of the model; its outputs are "
                f"{names}"
            )
        chosen = names.index(output)
    else:
        classifying = [
            i
            for i, head_loss in enumerate(losses)
            if head_loss is not None
            and predictions.task_from_loss(head_loss)[0] != predictions.RAW
        ]
        chosen = classifying[0] if len(classifying) == 1 else 0
    return Heads(
        names=names,
        chosen=chosen,
        losses=losses,
        loss_fns=[per_sample_loss_fn(head_loss) for head_loss in losses],
    )


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


def first_leaf(value: Any) -> Any:
    leaves = _leaves(value)
    return leaves[0] if leaves else None


def _flatten_padded(values: Any, count: int) -> tuple[Any, list[int | None]]:
    """[count, ...] -> ([count, VALUES_PER_SAMPLE] float32, per-sample shape)."""
    ops = keras.ops
    values = ops.cast(values, "float32")
    sample_shape = [None if d is None else int(d) for d in values.shape[1:]]
    flat = ops.reshape(values, (count, -1))
    # Padding with a full row of zeros, then cutting, works for any (even unknown) size.
    padded = ops.concatenate(
        [flat, ops.zeros((count, VALUES_PER_SAMPLE), "float32")], axis=1
    )
    return padded[:, :VALUES_PER_SAMPLE], sample_shape


class SampleSelector:
    """Chooses and copies the logged samples of a batch, inside the step.

    `select` is traced once per compiled step (or runs eagerly); the static facts it
    learns (`label_shape`, `output_shape`, `has_loss`) are what the host needs to read
    the flattened arrays back.
    """

    def __init__(
        self,
        layout: InputLayout,
        samples: int,
        selection: str,
        loss_fn: Callable | None,
        heads: Heads | None = None,
        task: str | None = None,
    ):
        self.layout = layout
        # The task read from the loss (tb_batch_images.predictions): how dense maps
        # are read (classes, one sigmoid channel, or values). None: no maps kept.
        self.task = task
        self.samples = samples
        self.selection = selection
        self.heads = heads
        self.loss_fn = loss_fn if heads is None else heads.loss_fns[heads.chosen]
        self.label_shape: list[int | None] | None = None
        self.output_shape: list[int | None] | None = None
        self.has_loss = False
        self.has_head_losses = False
        # Dense maps (set when traced): their kind (MASK_*), whether the label is one
        # too, the classes of a "classes" output, and why a map-shaped output got none.
        self.mask_kind: str | None = None
        self.has_label_map = False
        self.mask_classes: int | None = None
        self.no_mask_reason: str | None = None
        # Antialiased downscaling; XLA has no kernel for it (TensorFlow's
        # ScaleAndTranslate), so the TensorFlow adapter turns it off under XLA.
        self.antialias = True

    def select(self, image: Any, metadata: dict, y: Any, y_pred: Any) -> dict:
        """The chosen samples of one batch, as fixed-shape arrays (see module doc)."""
        ops = keras.ops
        n = self.samples
        batch = ops.shape(image)[0]
        label, output = self._label_output(y, y_pred)
        full_loss = None
        if self.selection == "highest_loss":
            full_loss = self._loss(label, output)
            if full_loss is not None:
                ranked = ops.where(ops.isnan(full_loss), np.inf, full_loss)
                order = ops.argsort(-ranked)
            else:
                order = ops.arange(batch)
        elif self.selection == "random":
            order = ops.argsort(_pseudo_random(image, batch))
        else:
            order = ops.arange(batch)
        index = ops.take(order, ops.minimum(ops.arange(n), batch - 1), axis=0)
        return self.take(image, metadata, y, y_pred, index, full_loss)

    def take(
        self,
        image: Any,
        metadata: dict,
        y: Any,
        y_pred: Any,
        index: Any,
        full_loss: Any = None,
    ) -> dict:
        """The samples at `index` (`[samples]` positions in the batch), as `select`.

        Also used by the watchlist (`tb_batch_images.watchlist`), which chooses its
        positions by sample id. `full_loss`: the whole batch's per-sample loss, if
        `select` computed it already.
        """
        ops = keras.ops
        n = self.samples
        batch = ops.shape(image)[0]
        heads = self.heads
        label, output = self._label_output(y, y_pred)
        count = ops.minimum(n, batch)
        result = {
            "count": ops.cast(count, "int32"),
            "batch_size": ops.cast(batch, "int32"),
            "positions": ops.cast(index, "int32"),
        }
        result["images"], result["image_stats"], sizes = self._pixels(
            ops.take(image, index, axis=0)
        )
        if sizes is not None:
            result["image_sizes"] = sizes
        if label is not None:
            result["labels"], self.label_shape = _flatten_padded(
                ops.take(label, index, axis=0), n
            )
        if output is not None:
            chosen_output = ops.cast(ops.take(output, index, axis=0), "float32")
            result["outputs"], self.output_shape = _flatten_padded(chosen_output, n)
            flat = ops.reshape(chosen_output, (n, -1))
            result["output_stats"] = ops.stack(
                [ops.min(flat, axis=1), ops.max(flat, axis=1), ops.mean(flat, axis=1)],
                axis=1,
            )
            chosen_label = None if label is None else ops.take(label, index, axis=0)
            maps = self._dense_maps(chosen_label, chosen_output)
            if maps is not None:
                result["output_maps"] = maps[1]
                if maps[0] is not None:
                    result["label_maps"] = maps[0]
        if full_loss is not None:
            result["losses"] = ops.take(full_loss, index, axis=0)
        elif label is not None and output is not None:
            chosen_loss = self._loss(
                ops.take(label, index, axis=0), ops.take(output, index, axis=0)
            )
            if chosen_loss is not None:
                result["losses"] = chosen_loss
        if heads is not None:
            head_losses = self._head_losses(heads, index, y, y_pred, result)
            if head_losses is not None:
                result["head_losses"] = head_losses
        if fmt.SAMPLE_ID_KEY in metadata:
            ids = ops.reshape(metadata[fmt.SAMPLE_ID_KEY], (-1,))
            result["sample_ids"] = ops.cast(ops.take(ids, index, axis=0), "int32")
        return result

    def _label_output(self, y: Any, y_pred: Any) -> tuple[Any, Any]:
        """The label and output of the logged head (the only one, or `heads.chosen`)."""
        if self.heads is None:
            return first_leaf(y), first_leaf(y_pred)
        chosen = self.heads.chosen
        return self.heads.pick(y, chosen), self.heads.pick(y_pred, chosen)

    def _loss(self, label: Any, output: Any) -> Any:
        values = _per_sample(self.loss_fn, label, output)
        if values is not None:
            self.has_loss = True
        return values

    def _head_losses(self, heads: Heads, index: Any, y: Any, y_pred: Any, result):
        """[n, heads]: every head's per-sample loss of the chosen samples (NaN: none)."""
        ops = keras.ops
        columns, any_loss = [], False
        for i, loss_fn in enumerate(heads.loss_fns):
            values = result.get("losses") if i == heads.chosen else None
            label, output = heads.pick(y, i), heads.pick(y_pred, i)
            if values is None and label is not None and output is not None:
                values = _per_sample(
                    loss_fn,
                    ops.take(label, index, axis=0),
                    ops.take(output, index, axis=0),
                )
            if values is None:
                values = ops.full((self.samples,), np.nan, "float32")
            else:
                any_loss = True
            columns.append(ops.reshape(values, (self.samples,)))
        if not any_loss:
            return None
        self.has_head_losses = True
        return ops.stack(columns, axis=1)

    def _dense_maps(self, label: Any, output: Any) -> tuple[Any, Any] | None:
        """(label map or None, output map), [n, h, w] float32 at the stored picture's
        size, when the output is a per-pixel map of the picture; else None.

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
        layout = self.layout
        shape = tuple(output.shape[1:])
        if self.task is None or layout.dynamic_size:
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
            self.no_mask_reason = (
                f"the output's per-pixel shape {[out_h, out_w]} is no fixed scale of "
                f"the picture's {[height, width]}"
            )
            return None
        task = self.task
        if task in _CLASS_TASKS and channels > 1:
            kind = MASK_CLASSES
            output_map = ops.cast(ops.argmax(output, axis=-1), "float32")
        elif task == "binary" and channels == 1:
            kind = MASK_BINARY
            output_map = ops.cast(output[..., 0], "float32")
        elif task not in _CLASS_TASKS and task != "binary":
            kind = MASK_VALUES
            output_map = ops.max(ops.cast(output, "float32"), axis=-1)
        else:
            self.no_mask_reason = (
                f"a {task} loss on {channels} output channel(s) per pixel is neither "
                "a class map (several channels) nor a binary one (one channel)"
            )
            return None
        label_map = None
        if label is not None:
            label_map = self._label_map(label, kind, out_h, out_w, channels)
        self.mask_kind, self.mask_classes = kind, channels
        self.has_label_map = label_map is not None
        stored = tuple(layout.stored_shape[:2])
        return (
            None if label_map is None else _resized_map(label_map, stored),
            _resized_map(output_map, stored),
        )

    @staticmethod
    def _label_map(label, kind: str, out_h: int, out_w: int, channels: int) -> Any:
        """The label as an [n, oh, ow] map of the output's kind, or None if it is not."""
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
            if kind == MASK_CLASSES:
                return ops.cast(ops.argmax(label, axis=-1), "float32")
            return ops.max(ops.cast(label, "float32"), axis=-1)
        return None

    def _pixels(self, image: Any) -> tuple[Any, Any, Any]:
        """Layout to [n, h, w, c], per-sample stats, downscale if too large.

        Returns (images, stats, sizes): `sizes` is None, or with `dynamic_size` the
        [n, 4] int32 (true height, true width, stored height, stored width).
        """
        ops = keras.ops
        layout = self.layout
        if not layout.dynamic_size and None in tuple(image.shape[1:]):
            # Unknown when traced, but fixed by the model's Input: say so statically.
            image = ops.reshape(image, (-1, *layout.input_shape))
        if self.layout.layout == "HW":
            image = ops.expand_dims(image, -1)
        elif self.layout.layout == "CHW":
            image = ops.transpose(image, (0, 2, 3, 1))
        as_float = ops.cast(image, "float32")
        stats = _pixel_stats(as_float)
        if layout.dynamic_size:
            images, sizes = self._fitted(image, as_float)
            return images, stats, sizes
        stored_h, stored_w, _ = self.layout.stored_shape
        if list(image.shape[1:3]) != [stored_h, stored_w]:
            size = (stored_h, stored_w)
            return _resized(as_float, size, self.antialias), stats, None
        if self.layout.stored_dtype == "uint8":
            return image, stats, None
        return as_float, stats, None

    def _fitted(self, image: Any, as_float: Any) -> tuple[Any, Any]:
        """An image batch of unknown size, fitted into max_image_size.

        JAX and PyTorch trace with concrete shapes: the size is computed here, and the
        fitted batch leaves the step at its own size. Only a TensorFlow graph has an
        unknown height or width: the batch is fitted in the graph and padded into the
        fixed [max_image_size, max_image_size] of the capture buffers.
        """
        ops = keras.ops
        n = self.samples
        side = self.layout.stored_shape[0]
        uint8 = self.layout.stored_dtype == "uint8"
        height, width = image.shape[1], image.shape[2]
        if height is not None and width is not None:
            height, width = int(height), int(width)
            stored_h, stored_w = fitted_size(height, width, side)
            if (stored_h, stored_w) == (height, width):
                fitted = image if uint8 else as_float
            else:
                size = (stored_h, stored_w)
                fitted = _resized(as_float, size, self.antialias)
                if uint8:
                    fitted = ops.cast(ops.clip(ops.round(fitted), 0, 255), "uint8")
            sizes = ops.convert_to_tensor(
                np.tile(
                    np.asarray([[height, width, stored_h, stored_w]], "int32"), (n, 1)
                )
            )
            return fitted, sizes
        return _fitted_in_graph(image, as_float, side, uint8, n, self.antialias)


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


def _pixel_stats(as_float: Any) -> Any:
    """[n, 4]: per picture the min and max of its finite values, any NaN, any Inf."""
    ops = keras.ops
    axes = (1, 2, 3)

    def masked():
        finite = ops.isfinite(as_float)
        return ops.stack(
            [
                ops.min(ops.where(finite, as_float, np.inf), axis=axes),
                ops.max(ops.where(finite, as_float, -np.inf), axis=axes),
                ops.cast(ops.any(ops.isnan(as_float), axis=axes), "float32"),
                ops.cast(ops.any(ops.isinf(as_float), axis=axes), "float32"),
            ],
            axis=1,
        )

    if keras.backend.backend() != "tensorflow":
        return masked()  # XLA (JAX) fuses these passes; torch would sync on a cond
    # A TensorFlow graph on the CPU runs each op as its own pass over the pictures,
    # and a select is the slowest of them. A finite sum means every value is finite
    # (a NaN or an Inf makes the sum non-finite), so the common batch needs three
    # reductions; any other takes the masked passes.
    total = ops.sum(as_float, axis=axes)

    def plain():
        zeros = ops.zeros_like(total)
        low, high = ops.min(as_float, axis=axes), ops.max(as_float, axis=axes)
        return ops.stack([low, high, zeros, zeros], axis=1)

    return ops.cond(ops.all(ops.isfinite(total)), plain, masked)


def _resized(as_float: Any, size: tuple[Any, Any], antialias: bool) -> Any:
    """Bilinear resize, NaN and Inf counted as 0 (they are flagged in the stats)."""
    return keras.ops.image.resize(
        keras.ops.where(keras.ops.isfinite(as_float), as_float, 0.0),
        size,
        interpolation="bilinear",
        antialias=antialias,
        data_format="channels_last",
    )


def _fitted_in_graph(
    image, as_float, side: int, uint8: bool, n: int, antialias: bool
):
    """TensorFlow graph, size unknown when traced: fit, pad to [side, side], sizes."""
    import tensorflow as tf  # only a TensorFlow graph has sizes unknown when traced

    shape = tf.shape(image)
    height, width = shape[1], shape[2]
    scale = tf.minimum(1.0, side / tf.cast(tf.maximum(height, width), tf.float32))

    def scaled(length):
        stored = tf.round(tf.cast(length, tf.float32) * scale)
        return tf.maximum(1, tf.cast(stored, tf.int32))

    stored_h, stored_w = scaled(height), scaled(width)
    stored_dtype = tf.uint8 if uint8 else tf.float32

    def resize():
        values = tf.image.resize(
            tf.where(tf.math.is_finite(as_float), as_float, 0.0),
            [stored_h, stored_w],
            antialias=antialias,
        )
        if uint8:
            return tf.cast(tf.clip_by_value(tf.round(values), 0, 255), tf.uint8)
        return values

    def keep():
        return tf.cast(image, stored_dtype) if uint8 else as_float

    needs_resize = tf.logical_or(
        tf.not_equal(stored_h, height), tf.not_equal(stored_w, width)
    )
    fitted = tf.cond(needs_resize, resize, keep)
    padded = tf.image.pad_to_bounding_box(fitted, 0, 0, side, side)
    padded = tf.reshape(padded, [n, side, side, image.shape[-1]])
    row = tf.stack([height, width, stored_h, stored_w])
    return padded, tf.tile(tf.cast(row, tf.int32)[tf.newaxis], [n, 1])


def _per_sample(loss_fn: Callable | None, label: Any, output: Any) -> Any:
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


def _pseudo_random(image: Any, batch: Any) -> Any:
    """One pseudo-random key per sample, derived from the batch itself.

    No random state: the same code runs in a TensorFlow graph, a JAX trace (where a
    stateful random op would leak a tracer) and a PyTorch step, and every batch gets
    a different order.
    """
    ops = keras.ops
    salt = ops.mean(ops.nan_to_num(ops.cast(image, "float32"), posinf=0.0, neginf=0.0))
    positions = ops.cast(ops.arange(batch), "float32") + 1.0
    noise = ops.sin(positions * 12.9898 + salt * 78.233) * 43758.5453
    return noise - ops.floor(noise)
