"""Pictures from inside the model: the output of its leading preprocessing layers.

When a model starts with preprocessing layers (augmentation, `Rescaling`,
`Normalization`, ...), the gallery shows the last one's output, taken from the training
forward pass itself, and undoes `Rescaling`/`Normalization` for display.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tb_batch_images.capture import keras_internals


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
    if keras_internals.is_data_layer(layer):
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
