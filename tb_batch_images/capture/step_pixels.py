"""The picture of each chosen sample, inside the step: layout, statistics, size.

Written with `keras.ops` (one TensorFlow-only path for sizes unknown when traced):
channels last, per-picture statistics (finite min and max, any NaN, any Inf), and
downscaled to `max_image_size`, or fitted into it and padded when the size is
unknown when traced.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tb_batch_images.capture.specs import InputLayout, fitted_size


def pictures(
    layout: InputLayout, image: Any, samples: int, antialias: bool
) -> tuple[Any, Any, Any]:
    """The chosen samples' pictures: layout to [n, h, w, c], per-sample stats,
    downscaled if too large.

    Returns (images, stats, sizes): `sizes` is None, or with `dynamic_size` the
    [n, 4] int32 (true height, true width, stored height, stored width).
    """
    ops = keras.ops
    if not layout.dynamic_size and None in tuple(image.shape[1:]):
        # Unknown when traced, but fixed by the model's Input: say so statically.
        image = ops.reshape(image, (-1, *layout.input_shape))
    if layout.layout == "HW":
        image = ops.expand_dims(image, -1)
    elif layout.layout == "CHW":
        image = ops.transpose(image, (0, 2, 3, 1))
    as_float = ops.cast(image, "float32")
    stats = _pixel_stats(as_float)
    if layout.dynamic_size:
        images, sizes = _fitted(layout, image, as_float, samples, antialias)
        return images, stats, sizes
    stored_h, stored_w, _ = layout.stored_shape
    if list(image.shape[1:3]) != [stored_h, stored_w]:
        size = (stored_h, stored_w)
        return _resized(as_float, size, antialias), stats, None
    if layout.stored_dtype == "uint8":
        return image, stats, None
    return as_float, stats, None


def _fitted(
    layout: InputLayout, image: Any, as_float: Any, n: int, antialias: bool
) -> tuple[Any, Any]:
    """An image batch of unknown size, fitted into max_image_size.

    Traced with concrete shapes (JAX, PyTorch, and Keras 3.16's TensorFlow trainer,
    which traces per shape), the size is computed here and the fitted batch leaves
    the step at its own size; a backend with fixed capture buffers pads it in as it
    writes them (`padded_to`). A TensorFlow graph traced with an unknown height or
    width fits the batch in the graph and pads it into the fixed
    [max_image_size, max_image_size] of the capture buffers.
    """
    ops = keras.ops
    side = layout.stored_shape[0]
    uint8 = layout.stored_dtype == "uint8"
    height, width = image.shape[1], image.shape[2]
    if height is not None and width is not None:
        height, width = int(height), int(width)
        stored_h, stored_w = fitted_size(height, width, side)
        if (stored_h, stored_w) == (height, width):
            fitted = image if uint8 else as_float
        else:
            size = (stored_h, stored_w)
            fitted = _resized(as_float, size, antialias)
            if uint8:
                fitted = ops.cast(ops.clip(ops.round(fitted), 0, 255), "uint8")
        sizes = ops.convert_to_tensor(
            np.tile(np.asarray([[height, width, stored_h, stored_w]], "int32"), (n, 1))
        )
        return fitted, sizes
    return _fitted_in_graph(image, as_float, side, uint8, n, antialias)


def _flat(values: Any) -> Any:
    """[n, ...] -> [n, everything else]."""
    return keras.ops.reshape(values, (keras.ops.shape(values)[0], -1))


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
                # `any` over one axis: Keras before 3.15 reduced several axes of a
                # torch tensor wrongly (an IndexError).
                ops.cast(ops.any(_flat(ops.isnan(as_float)), axis=1), "float32"),
                ops.cast(ops.any(_flat(ops.isinf(as_float)), axis=1), "float32"),
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


def _fitted_in_graph(image, as_float, side: int, uint8: bool, n: int, antialias: bool):
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


def padded_to(images: Any, shape: Any) -> Any:
    """[n, h, w, c] images padded (bottom, right) to a buffer's [n, H, W, c] (the
    step's pictures are at most the buffer's size: `specs.fitted_size`)."""
    height, width = int(images.shape[1]), int(images.shape[2])
    if (height, width) == tuple(shape[1:3]):
        return images
    return keras.ops.pad(
        images, [[0, 0], [0, shape[1] - height], [0, shape[2] - width], [0, 0]]
    )
