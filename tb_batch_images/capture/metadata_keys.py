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


# The metadata entry holding the source layer's output (never in the user's x).
SOURCE_IMAGE = "_tb_batch_images_source_image"


def select_image(x: Any, layout: InputLayout, metadata: dict | None = None) -> Any:
    """The image tensor: from `x`, or the source layer's output when there is one."""
    if layout.image_source is not None:
        return (metadata or {})[SOURCE_IMAGE]
    return x if layout.image_key is None else x[layout.image_key]


def first_leaf(value: Any) -> Any:
    found = leaves_of(value)
    return found[0] if found else None
