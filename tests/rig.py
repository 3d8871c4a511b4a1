"""The correspondence rig: data whose pixels say which sample they are.

Each 16x16x3 image encodes its sample id in rows 0-7 (row r is all ones where bit r of
the id is set), so a horizontal flip keeps the id readable. The dataset's `map` adds
the augmentation mark: row 8 set to 1, and row 9 half ones, half zeros, flipped at
random (so the logged image shows which way the model saw it). A `Recorder` layer at
the bottom of the model writes, in the graph, the ids and flip of every batch it trains
on: the ground truth the logged batches are checked against.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

SIZE = 16
CLASSES = 3
ID_BITS = 8
MARK_ROW = 8
FLIP_ROW = 9


def raw_image(sample_id: int) -> np.ndarray:
    image = np.zeros((SIZE, SIZE, 3), np.float32)
    for bit in range(ID_BITS):
        if (sample_id >> bit) & 1:
            image[bit, :, :] = 1.0
    image[FLIP_ROW, : SIZE // 2, :] = 1.0  # left half: unflipped
    return image


def label_of(sample_id: int) -> int:
    return sample_id % CLASSES


def filename_of(sample_id: int) -> str:
    return f"img_{sample_id}.png"


def augment(image: tf.Tensor, seed: int | None = None) -> tf.Tensor:
    """The map step: a random flip and the mark only present after the map."""
    image = tf.image.random_flip_left_right(image, seed=seed)
    row = tf.ones([1, SIZE, 3])
    return tf.concat([image[:MARK_ROW], row, image[MARK_ROW + 1 :]], axis=0)


def decode_id(image: np.ndarray) -> int:
    """The sample id encoded in an image (logged uint8 or float input)."""
    image = np.asarray(image, np.float32)
    scale = 255.0 if image.max() > 1.5 else 1.0
    bits = image[:ID_BITS, :, 0].mean(axis=1) / scale > 0.5
    return int(sum(int(b) << i for i, b in enumerate(bits)))


def has_mark(image: np.ndarray) -> bool:
    image = np.asarray(image, np.float32)
    scale = 255.0 if image.max() > 1.5 else 1.0
    return bool((image[MARK_ROW, :, 0] / scale > 0.5).all())


def is_flipped(image: np.ndarray) -> bool:
    image = np.asarray(image, np.float32)
    row = image[FLIP_ROW, :, 0]
    return bool(row[-1] > row[0])


def _graph_ids(images: tf.Tensor) -> tf.Tensor:
    bits = tf.cast(tf.reduce_mean(images[:, :ID_BITS, :, 0], axis=2) > 0.5, tf.int64)
    return tf.reduce_sum(bits * (2 ** tf.range(ID_BITS, dtype=tf.int64)), axis=1)


def _graph_flips(images: tf.Tensor) -> tf.Tensor:
    return tf.cast(images[:, FLIP_ROW, -1, 0] > images[:, FLIP_ROW, 0, 0], tf.int64)


class TFRecorder(keras.layers.Layer):
    """Records (in the graph) the ids and flips of every training batch (TensorFlow).

    Its variables are ON_READ / ONLY_FIRST_REPLICA, so under a MirroredStrategy it
    records replica 0's share, as the logger captures it.
    """

    def __init__(self, capacity: int = 256, max_batch: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.capacity, self.max_batch = capacity, max_batch

        def variable(shape):
            return tf.Variable(
                tf.fill(shape, tf.constant(-1, tf.int64)),
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )

        self._ids = variable([capacity, max_batch])
        self._flips = variable([capacity, max_batch])
        self._count = variable([])
        self._count.assign(0)

    def call(self, images, training=None):
        if training:
            images = tf.cast(images, tf.float32)
            if images.shape.rank == 3:
                images = images[..., tf.newaxis]
            pad = [[0, self.max_batch - tf.shape(images)[0]]]
            ids = tf.pad(_graph_ids(images), pad, constant_values=-1)
            flips = tf.pad(_graph_flips(images), pad, constant_values=-1)
            row = tf.reshape(self._count.read_value(), [1, 1])
            self._ids.assign(tf.tensor_scatter_nd_update(self._ids, row, ids[None]))
            self._flips.assign(
                tf.tensor_scatter_nd_update(self._flips, row, flips[None])
            )
            self._count.assign_add(1)
        return images

    def history(self) -> list[tuple[list[int], list[int]]]:
        """Per training step: (ids in batch order, flips)."""
        return _history(self._ids, self._flips, self._count)


class NeutralRecorder(keras.layers.Layer):
    """The same recorder in `keras.ops` and non-trainable weights: every backend.

    Under JAX the weights are part of the state the compiled step threads through;
    under PyTorch they are updated in place.
    """

    def __init__(self, capacity: int = 256, max_batch: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.capacity, self.max_batch = capacity, max_batch
        minus_one = keras.initializers.Constant(-1)
        self._ids = self.add_weight(
            shape=(capacity, max_batch),
            initializer=minus_one,
            dtype="int32",
            trainable=False,
            name="ids",
        )
        self._flips = self.add_weight(
            shape=(capacity, max_batch),
            initializer=minus_one,
            dtype="int32",
            trainable=False,
            name="flips",
        )
        self._count = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int32",
            trainable=False,
            name="count",
        )

    def call(self, images, training=None):
        ops = keras.ops
        images = ops.cast(images, "float32")
        if len(images.shape) == 3:
            images = ops.expand_dims(images, -1)
        if training:
            weights = ops.cast(2 ** ops.arange(ID_BITS), "int32")
            bits = ops.cast(ops.mean(images[:, :ID_BITS, :, 0], axis=2) > 0.5, "int32")
            ids = ops.sum(bits * weights, axis=1)
            flips = ops.cast(
                images[:, FLIP_ROW, -1, 0] > images[:, FLIP_ROW, 0, 0], "int32"
            )
            pad = self.max_batch - ops.shape(images)[0]
            ids = ops.pad(ids, [[0, pad]], constant_values=-1)
            flips = ops.pad(flips, [[0, pad]], constant_values=-1)
            row = ops.cast(self._count.value, "int32")
            start = ops.stack([row, ops.zeros((), "int32")])
            self._ids.assign(ops.slice_update(self._ids.value, start, ids[None]))
            self._flips.assign(ops.slice_update(self._flips.value, start, flips[None]))
            self._count.assign(self._count.value + 1)
        return images

    def history(self) -> list[tuple[list[int], list[int]]]:
        return _history(self._ids, self._flips, self._count)


def Recorder(capacity: int = 256, max_batch: int = 64) -> keras.layers.Layer:
    """The recorder for the running backend (TensorFlow's handles strategies)."""
    if keras.backend.backend() == "tensorflow":
        return TFRecorder(capacity, max_batch)
    return NeutralRecorder(capacity, max_batch)


def _history(ids_var, flips_var, count_var) -> list[tuple[list[int], list[int]]]:
    ids = np.asarray(keras.ops.convert_to_numpy(ids_var))
    flips = np.asarray(keras.ops.convert_to_numpy(flips_var))
    steps = int(np.asarray(keras.ops.convert_to_numpy(count_var)))
    return [
        ([int(v) for v in ids[s] if v >= 0], [int(v) for v in flips[s] if v >= 0])
        for s in range(steps)
    ]


def make_model(
    recorder: Recorder,
    output: str = "softmax",
    inputs: Any = None,
) -> keras.Model:
    """A tiny classifier with the recorder as its first layer."""
    image_input = keras.Input((SIZE, SIZE, 3), name="image")
    hidden = recorder(image_input)
    hidden = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(hidden)
    hidden = keras.layers.Flatten()(hidden)
    if output == "softmax":
        out = keras.layers.Dense(CLASSES, activation="softmax")(hidden)
    elif output == "logits":
        out = keras.layers.Dense(CLASSES)(hidden)
    elif output == "sigmoid":
        out = keras.layers.Dense(1, activation="sigmoid")(hidden)
    elif output == "multilabel":
        out = keras.layers.Dense(CLASSES, activation="sigmoid")(hidden)
    else:
        out = keras.layers.Dense(1)(hidden)
    return keras.Model(image_input, out)


def check_correspondence(
    batches: list,
    history: list[tuple[list[int], list[int]]],
    *,
    expect_mark: bool = True,
    loss_kind: str = "sparse",
    shift: int = 0,
) -> int:
    """Asserts every logged training sample is the one trained at its step.

    `shift` moves the attribution by that many steps: the negative control.
    Returns the number of samples checked.
    """
    checked = 0
    assert batches, "nothing was logged"
    for batch in batches:
        index = batch.step + shift
        assert 0 <= index < len(history), f"step {batch.step} was never trained"
        trained_ids, trained_flips = history[index]
        assert batch.batch_size == len(trained_ids), (
            f"step {batch.step}: logged batch_size {batch.batch_size}, "
            f"trained {len(trained_ids)}"
        )
        for sample in batch.samples:
            sample_id = decode_id(sample.image)
            assert sample.filename == filename_of(sample_id), (
                f"step {batch.step}: filename {sample.filename} under image of "
                f"sample {sample_id}"
            )
            assert trained_ids[sample.position] == sample_id, (
                f"step {batch.step} position {sample.position}: logged sample "
                f"{sample_id}, trained sample {trained_ids[sample.position]}"
            )
            if expect_mark:
                assert has_mark(sample.image), "augmentation mark missing"
                assert int(is_flipped(sample.image)) == trained_flips[sample.position]
            check_label_and_loss(sample, sample_id, loss_kind)
            checked += 1
    return checked


def check_label_and_loss(sample, sample_id: int, loss_kind: str) -> None:
    label = label_of(sample_id)
    if loss_kind in ("sparse", "categorical", "logits"):
        assert sample.label == label, f"label {sample.label} for sample {sample_id}"
        probabilities = {entry["class"]: entry["probability"] for entry in sample.top_k}
        assert sample.prediction == max(probabilities, key=probabilities.get)
        expected = -math.log(max(probabilities[label], 1e-7))
        assert sample.loss == pytest_approx(expected), (sample.loss, expected)
    elif loss_kind == "binary":
        assert sample.label == label % 2
        probabilities = {entry["class"]: entry["probability"] for entry in sample.top_k}
        expected = -math.log(max(probabilities[label % 2], 1e-7))
        assert sample.loss == pytest_approx(expected)
    elif loss_kind == "multilabel":
        assert sample.label == [label]


def pytest_approx(value: float):
    import pytest

    return pytest.approx(value, rel=2e-3, abs=2e-3)
