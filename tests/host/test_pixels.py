"""Pixels: keras.applications preprocessing presets are undone to true colours.

The inputs are the real outputs of `keras.applications` preprocess functions
(`resnet50.preprocess_input` is "caffe", `densenet` is "torch", `mobilenet_v2` is
"tf"); the logged picture must be the original colour image within rounding.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from tb_batch_images import BatchImageLogger, read_batches
from tb_batch_images.host import pixels

PRESETS = {
    "caffe": keras.applications.resnet50.preprocess_input,
    "torch": keras.applications.densenet.preprocess_input,
    "tf": keras.applications.mobilenet_v2.preprocess_input,
}


def _colour_images(count: int = 12, size: int = 16) -> np.ndarray:
    """RGB images with a different colour in each quarter: channel swaps show."""
    rng = np.random.default_rng(0)
    images = np.zeros((count, size, size, 3), np.float32)
    half = size // 2
    for i in range(count):
        for top in (0, half):
            for left in (0, half):
                colour = rng.integers(0, 256, size=3)
                images[i, top : top + half, left : left + half] = colour
    images[:, 0, 0] = [255.0, 0.0, 0.0]  # pure red: BGR shown as blue if not undone
    return images


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_comes_back_to_the_original_colours(preset):
    original = _colour_images()
    preprocessed = PRESETS[preset](original.copy())
    stats = np.stack(
        [preprocessed.min(axis=(1, 2, 3)), preprocessed.max(axis=(1, 2, 3))], axis=1
    )
    stats = np.concatenate([stats, np.zeros_like(stats)], axis=1)
    shown, flags, used = pixels.to_uint8(
        preprocessed,
        stats,
        "float32",
        (0.0, 255.0),
        None,
        pixels.undo_preprocessing(preset),
    )
    assert np.abs(shown.astype(int) - original.astype(int)).max() <= 1
    assert used == (0.0, 255.0)
    assert not any(flags)
    if preset != "tf":  # [-1, 1] is a range the automatic choice knows
        # Negative control: the automatic range alone does not give these colours.
        auto, _, _ = pixels.to_uint8(preprocessed, stats, "float32", None, None)
        assert np.abs(auto.astype(int) - original.astype(int)).max() > 20


def _train(tmp_path, images, **logger_kwargs):
    ids = np.arange(len(images))
    model = keras.Sequential(
        [
            keras.Input(images.shape[1:]),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=False)
    logger = BatchImageLogger(
        str(tmp_path),
        every_n_steps=1,
        samples_per_batch=4,
        max_queue=100,
        **logger_kwargs,
    )
    model.fit(
        {"image": images, "sample_id": ids},
        ids % 2,
        batch_size=4,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[logger],
    )
    return list(read_batches(str(tmp_path)))


def test_caffe_preset_logs_resnet50_inputs_in_true_colours(tmp_path):
    original = _colour_images()
    preprocessed = keras.applications.resnet50.preprocess_input(original.copy())
    batches = _train(tmp_path / "caffe", preprocessed, preprocessing="caffe")
    assert len(batches) == 3
    for batch in batches:
        assert batch.record["preprocessing"] == "caffe"
        for sample in batch.samples:
            expected = original[sample.sample_id]
            assert np.abs(sample.image.astype(int) - expected).max() <= 3
            assert "rescaled" not in sample.flags
            assert tuple(sample.image[0, 0]) == (255, 0, 0)  # red stays red
    # Negative control: without the preset the same inputs are stretched, flagged.
    raw = _train(tmp_path / "raw", preprocessed)
    sample = raw[0].samples[0]
    assert "rescaled" in sample.flags
    assert np.abs(sample.image.astype(int) - original[sample.sample_id]).max() > 20


def test_a_preset_that_cannot_apply_warns_once_and_logs_the_automatic_range(tmp_path):
    images = _colour_images().astype(np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = _train(tmp_path, images, preprocessing="caffe")
    messages = [str(w.message) for w in caught if "preprocessing=" in str(w.message)]
    assert len(messages) == 1 and "uint8" in messages[0]
    assert batches and batches[0].record["preprocessing"] is None
    sample = batches[0].samples[0]
    np.testing.assert_array_equal(sample.image, images[sample.sample_id])


def test_bad_preprocessing_arguments_are_refused_naming_the_fix(tmp_path):
    with pytest.raises(ValueError, match="caffe"):
        BatchImageLogger(str(tmp_path), preprocessing="imagenet")
    with pytest.raises(ValueError, match="not both"):
        BatchImageLogger(str(tmp_path), preprocessing="torch", to_pixels=lambda x: x)
    with pytest.raises(ValueError, match="value_range="):
        BatchImageLogger(str(tmp_path), preprocessing="tf", value_range=(-1, 1))
