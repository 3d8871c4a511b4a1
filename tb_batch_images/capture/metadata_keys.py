"""The metadata keys of `x` (`sample_id`, `filename`): checked, and stripped before the model.

The logger's step wrapper takes the metadata out of `x` on every step and hands it to
the capture beside the model's own tensors (`strip_metadata`). Metadata the step cannot
carry is an error the user must fix, raised with what to do (`check_metadata_specs`,
`check_sample_weight_spec`).
"""

from __future__ import annotations

from typing import Any

import keras

from tb_batch_images.capture import keras_internals
from tb_batch_images.capture.specs import (
    ArraySpec,
    CaptureError,
    InputLayout,
    describe_spec,
    find_image,
    leaves_of,
    map_specs,
)
from tb_batch_images.contract import names


def check_metadata_specs(x_spec: Any, jit_compile: bool) -> None:
    """Raises CaptureError for metadata the step cannot carry (specs of `x`)."""
    if not isinstance(x_spec, dict):
        return
    filename_spec = x_spec.get(names.FILENAME_KEY)
    if filename_spec is not None:
        if getattr(filename_spec, "dtype", None) != "string":
            raise CaptureError(
                f"x['{names.FILENAME_KEY}'] must hold strings; to pass integer ids "
                f"use x['{names.SAMPLE_ID_KEY}'] and BatchImageLogger(filenames=...)"
            )
        if jit_compile:
            raise CaptureError(
                f"string filenames cannot travel through an XLA-compiled train step "
                f"(jit_compile=True, the default on GPU). Put an integer "
                f"x['{names.SAMPLE_ID_KEY}'] (the index into your list of paths) in "
                f"the batch instead of x['{names.FILENAME_KEY}'], and pass the list as "
                f"BatchImageLogger(..., filenames=paths)"
            )
    sample_id_spec = x_spec.get(names.SAMPLE_ID_KEY)
    if sample_id_spec is not None and not (
        isinstance(sample_id_spec, ArraySpec) and sample_id_spec.is_integer
    ):
        raise CaptureError(
            f"x['{names.SAMPLE_ID_KEY}'] must hold integers "
            f"(got {describe_spec(sample_id_spec)}); put "
            f"strings in x['{names.FILENAME_KEY}']"
        )


def check_sample_weight_spec(sample_weight_spec: Any) -> None:
    """A third element of strings is filenames in the sample-weight slot."""
    structure = map_specs(sample_weight_spec, lambda spec: spec)
    for spec in leaves_of(structure):
        if getattr(spec, "dtype", None) == "string":
            raise CaptureError(
                "the dataset yields (images, labels, filenames); Keras reads a third "
                "element as sample weights. Yield ({'image': images, 'filename': "
                "filenames}, labels) instead: BatchImageLogger strips 'filename' from "
                "x before the model sees it. Example: "
                "ds = ds.map(lambda img, label, name: ({'image': img, 'filename': "
                "name}, label))"
            )


def strip_metadata(x: Any, unwrap_single: bool) -> tuple[Any, dict[str, Any]]:
    """Removes metadata keys from a dict `x`; returns (x for the model, metadata)."""
    if not isinstance(x, dict) or not any(k in x for k in names.METADATA_KEYS):
        return x, {}
    metadata = {k: x[k] for k in names.METADATA_KEYS if k in x}
    rest = {k: v for k, v in x.items() if k not in names.METADATA_KEYS}
    if unwrap_single and len(rest) == 1:
        return next(iter(rest.values())), metadata
    return rest, metadata


def model_takes_single_tensor(model: keras.Model) -> bool:
    """Whether x with one key left after stripping metadata should be unwrapped."""
    if isinstance(model, keras.Sequential):
        return True
    inputs = keras_internals.inputs_struct(model)
    if inputs is None:
        return False
    return not isinstance(inputs, (dict, list, tuple))


def declares_metadata_inputs(model: keras.Model) -> bool:
    """Whether the model itself takes an input named `sample_id` or `filename`
    (then the logger leaves its x alone)."""
    declared = {getattr(t, "name", None) for t in getattr(model, "inputs", None) or []}
    structure = keras_internals.inputs_struct(model)
    if isinstance(structure, dict):
        declared |= set(structure)
    return bool(declared & set(names.METADATA_KEYS))


def without_metadata(model: keras.Model, data: Any) -> Any:
    """A batch `(x, y, sample_weight)` with the metadata keys taken out of `x`, as
    the model takes it (unchanged when there are none, or the model declares them)."""
    try:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    except Exception:
        return data
    if not isinstance(x, dict) or not any(k in x for k in names.METADATA_KEYS):
        return data
    if declares_metadata_inputs(model):
        return data
    model_x, _ = strip_metadata(x, model_takes_single_tensor(model))
    return keras.utils.pack_x_y_sample_weight(model_x, y, sample_weight)


# Marks a step that takes the metadata keys out of x (see `keep_stripping`).
STRIPPER = "tb_batch_images_strips_metadata"
STEPS = ("train_step", "test_step", "predict_step")


def keep_stripping(model: keras.Model) -> None:
    """Leaves the model's steps taking `sample_id`/`filename` out of `x` for good.

    Once a model has met the logger, `model.evaluate(val_ds)` and
    `model.predict(val_ds)` on the same batches (keras.io's habit after `fit`) work
    as in `fit`, on every backend: its train, test and predict steps are wrapped
    (as instance attributes) to strip the keys, and Keras rebuilds the functions
    that were built from other steps.
    """
    for name in STEPS:
        step = getattr(model, name, None)
        if step is None or getattr(step, STRIPPER, False):
            continue
        setattr(model, name, _stripping(model, step))
    if getattr(model, "predict_function", None) is not None:
        model.predict_function = None  # built before: rebuilt from the new step


def _stripping(model: keras.Model, step: Any) -> Any:
    def stripping_step(*args):
        *state, data = args  # JAX: (state, data); TensorFlow, torch: (data,)
        return step(*state, without_metadata(model, data))

    setattr(stripping_step, STRIPPER, True)
    return stripping_step


# The metadata entry holding the source layer's output (never in the user's x).
SOURCE_IMAGE = "_tb_batch_images_source_image"


def picture_in(x: Any, layout: InputLayout, image_key: Any = None) -> Any:
    """The picture in the `x` a step received, for a layout made from the model's
    declared inputs: a model with one input may be fed a dict holding it (Keras
    takes the input by its name), so the picture is found in `x` itself."""
    if isinstance(x, (dict, list, tuple)) and (
        layout.image_key is None or not _holds(x, layout.image_key)
    ):
        key, _ = find_image(map_specs(x), image_key)
        return x[key]
    return select_image(x, layout)


def _holds(x: Any, key: Any) -> bool:
    if isinstance(x, dict):
        return key in x
    return isinstance(key, int) and 0 <= key < len(x)


def select_image(x: Any, layout: InputLayout, metadata: dict | None = None) -> Any:
    """The image tensor: from `x`, or the source layer's output when there is one."""
    if layout.image_source is not None:
        return (metadata or {})[SOURCE_IMAGE]
    return x if layout.image_key is None else x[layout.image_key]


def first_leaf(value: Any) -> Any:
    found = leaves_of(value)
    return found[0] if found else None
