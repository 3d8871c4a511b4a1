"""Augmentation and preprocessing layers inside the model: the logged picture is the
one the first learning layer received, from the same forward pass.

A probe layer right after the preprocessing layers records (in `keras.ops`, as
non-trainable weights: every backend) the full tensor it receives at every training
step; every logged picture must equal the probe's record at its step and position,
undone from Rescaling/Normalization. The negative control compares with the
un-augmented `x`. The rig test (tests/fixtures/rig.py) checks flips, ids, filenames and labels
with `RandomFlip` inside the model, and that logging `x` instead fails the check.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tb_batch_images import BatchImageLogger, read_batches
from tests.capture.test_capture_correspondence import NO_TORCH_SPE, SAMPLES, tf_data
from tests.fixtures import rig

SIZE = 16
COUNT = 32
BATCH = 8
EPOCHS = 2
STEPS = EPOCHS * COUNT // BATCH


class ImageProbe(keras.layers.Layer):
    """Records every training batch it receives, whole, one row per step."""

    def __init__(self, steps: int = STEPS, batch: int = BATCH, **kwargs):
        super().__init__(**kwargs)
        self.images = self.add_weight(
            shape=(steps, batch, SIZE, SIZE, 3),
            initializer="zeros",
            trainable=False,
            name="images",
        )
        self.count = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False, name="count"
        )

    def call(self, images, training=None):
        if training:
            ops = keras.ops
            row = ops.cast(self.count.value, "int32")
            zero = ops.zeros((), "int32")
            start = ops.stack([row, zero, zero, zero, zero])
            value = ops.cast(images, "float32")[None]
            self.images.assign(ops.slice_update(self.images.value, start, value))
            self.count.assign(self.count.value + 1)
        return images

    def recorded(self) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(self.images))


def _pictures() -> np.ndarray:
    """Asymmetric 0..255 pictures: any flip or rotation changes them."""
    rng = np.random.default_rng(0)
    images = np.zeros((COUNT, SIZE, SIZE, 3), np.float32)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    for i in range(COUNT):
        colour = rng.integers(60, 255, size=3)
        images[i] = colour * ((xs + 2 * ys) / (3 * SIZE))[..., None]
        images[i, 2:5, 2:9] = 255.0  # a mark in one corner
    return images


PREPROCESSING = {
    # keras.io's image classification from scratch: an augmentation block, then
    # Rescaling, as separate layers of a functional model.
    "augment_then_rescale": lambda: [
        keras.Sequential(
            [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)],
            name="data_augmentation",
        ),
        keras.layers.Rescaling(1.0 / 255, name="rescaling"),
    ],
    "flip_then_normalize": lambda: [
        keras.layers.RandomFlip("horizontal_and_vertical"),
        keras.layers.Normalization(
            mean=[120.0, 110.0, 100.0],
            variance=[3600.0, 2500.0, 1600.0],
            name="normalization",
        ),
    ],
}
UNDO = {
    "augment_then_rescale": lambda v: v * 255.0,
    "flip_then_normalize": lambda v: (
        v * np.sqrt([3600.0, 2500.0, 1600.0]) + np.array([120.0, 110.0, 100.0])
    ),
}


def _model(kind: str, probe: ImageProbe) -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    hidden = inputs
    for layer in PREPROCESSING[kind]():
        hidden = layer(hidden)
    hidden = probe(hidden)
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(hidden)
    hidden = keras.layers.Flatten()(hidden)
    outputs = keras.layers.Dense(3, activation="softmax")(hidden)
    return keras.Model(inputs, outputs)


def _fit(tmp_path, kind: str, **logger_kwargs):
    keras.utils.set_random_seed(2)
    images = _pictures()
    ids = np.arange(COUNT)
    probe = ImageProbe()
    model = _model(kind, probe)
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=False)
    logger = BatchImageLogger(
        str(tmp_path / "logs"),
        every_n_steps=1,
        samples_per_batch=BATCH,
        max_queue=1000,
        log_validation=False,
        **logger_kwargs,
    )
    model.fit(
        {"image": images, "sample_id": ids},
        ids % 3,
        batch_size=BATCH,
        epochs=EPOCHS,
        shuffle=True,
        verbose=0,
        callbacks=[logger],
    )
    return list(read_batches(str(tmp_path / "logs"))), probe.recorded(), images


@pytest.mark.parametrize("kind", sorted(PREPROCESSING))
def test_logged_picture_is_what_the_first_learning_layer_received(tmp_path, kind):
    batches, recorded, images = _fit(tmp_path, kind)
    assert [b.step for b in batches] == list(range(STEPS))
    far_from_x = checked = 0
    for batch in batches:
        assert batch.record["image_source"] == PREPROCESSING[kind]()[-1].name
        for sample in batch.samples:
            received = UNDO[kind](recorded[batch.step, sample.position])
            expected = np.clip(np.floor(received + 0.5), 0, 255)
            difference = np.abs(sample.image.astype(float) - expected)
            assert difference.max() <= 1.0, (batch.step, sample.position)
            assert "rescaled" not in sample.flags
            # Negative control: the un-augmented x of the same sample.
            raw = np.abs(sample.image.astype(float) - images[sample.sample_id])
            far_from_x += raw.max() > 30
            checked += 1
    assert checked == STEPS * BATCH
    assert far_from_x > checked // 3  # the augmentations really changed most pictures


def _rig_model(recorder) -> keras.Model:
    inputs = keras.Input((rig.SIZE, rig.SIZE, 3), name="image")
    hidden = keras.layers.RandomFlip("horizontal", name="flip")(inputs)
    hidden = recorder(hidden)
    hidden = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(hidden)
    hidden = keras.layers.Flatten()(hidden)
    outputs = keras.layers.Dense(rig.CLASSES, activation="softmax")(hidden)
    return keras.Model(inputs, outputs)


def _rig_fit(tmp_path, compile_kwargs=None, **logger_kwargs):
    keras.utils.set_random_seed(1)
    recorder = rig.Recorder()
    model = _rig_model(recorder)
    model.compile(
        "adam",
        "sparse_categorical_crossentropy",
        **{"jit_compile": False, **(compile_kwargs or {})},
    )
    logger = BatchImageLogger(
        str(tmp_path / "logs"),
        every_n_steps=1,
        samples_per_batch=5,
        max_queue=1000,
        filenames=[rig.filename_of(i) for i in range(SAMPLES)],
        **logger_kwargs,
    )
    model.fit(tf_data(metadata="sample_id"), epochs=2, verbose=0, callbacks=[logger])
    batches = [b for b in read_batches(str(tmp_path / "logs")) if b.mode == "train"]
    return batches, recorder.history()


@pytest.mark.parametrize(
    "compile_kwargs",
    [
        {},
        {"jit_compile": True},
        pytest.param({"steps_per_execution": 4}, marks=NO_TORCH_SPE),
    ],
    ids=["plain", "jit", "spe4"],
)
def test_random_flip_in_the_model_logs_the_flipped_picture(tmp_path, compile_kwargs):
    batches, history = _rig_fit(tmp_path, compile_kwargs)
    assert rig.check_correspondence(batches, history) > 0
    assert all(b.record["image_source"] == "flip" for b in batches)


def test_negative_control_logging_x_instead_fails_the_flip_check(tmp_path):
    batches, history = _rig_fit(tmp_path, image_layer=False)
    assert all(b.record["image_source"] is None for b in batches)
    with pytest.raises(AssertionError):
        rig.check_correspondence(batches, history)


def test_image_layer_naming_no_layer_raises_at_fit_start_listing_layers(tmp_path):
    model = _rig_model(rig.Recorder())
    model.compile("adam", "sparse_categorical_crossentropy")
    logger = BatchImageLogger(str(tmp_path), image_layer="augment")
    with pytest.raises(ValueError, match=r"image_layer='augment'.*'flip'"):
        model.fit(
            tf_data(metadata="sample_id"), epochs=1, verbose=0, callbacks=[logger]
        )
