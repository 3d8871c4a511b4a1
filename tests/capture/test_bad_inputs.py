"""Odd inputs: training always completes; what is logged is right or flagged."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from tb_batch_images import BatchImageLogger, read_batches

BACKEND = keras.backend.backend()
TF_ONLY = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="strings in x: Keras's JAX and torch data adapters take numbers only",
)


def _mean_model(input_shape, dtype="float32", classes=2) -> keras.Model:
    """A model that takes any shape: the mean of its input, then a softmax."""
    inputs = keras.Input(input_shape, dtype=dtype, name="image")
    flat = keras.layers.Lambda(
        lambda t: ops.mean(
            ops.reshape(ops.nan_to_num(ops.cast(t, "float32")), (ops.shape(t)[0], -1)),
            axis=1,
            keepdims=True,
        )
    )(inputs)
    outputs = keras.layers.Dense(classes, activation="softmax")(flat)
    return keras.Model(inputs, outputs)


def fit_images(
    tmp_path,
    images,
    labels=None,
    filenames=None,
    classes=2,
    sample_ids=False,
    **options,
):
    """Trains one epoch on `images` (batch 4) with the logger; returns the batches.

    `filenames` travel in x["filename"], or with `sample_ids=True` as ids into the
    logger's `filenames=` (the only way off TensorFlow)."""
    count = len(images)
    labels = np.arange(count) % classes if labels is None else labels
    x = {"image": images}
    if filenames is not None and sample_ids:
        x["sample_id"] = np.arange(count)
        options["filenames"] = list(filenames)
    elif filenames is not None:
        x["filename"] = filenames
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(4)
    model = _mean_model(images.shape[1:], dtype=images.dtype.name, classes=classes)
    model.compile("sgd", "sparse_categorical_crossentropy", jit_compile=False)
    options = {"every_n_steps": 1, "max_queue": 1000, **options}
    history = model.fit(
        dataset,
        epochs=1,
        verbose=0,
        callbacks=[BatchImageLogger(str(tmp_path), **options)],
    )
    assert len(history.history["loss"]) == 1  # training completed
    return list(read_batches(str(tmp_path)))


def first_images(batches):
    return [s.image for s in batches[0].samples]


def test_uint8_is_logged_exactly(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (8, 12, 10, 3), dtype=np.uint8)
    batches = fit_images(tmp_path, images)
    assert batches[0].record["value_range"] == [0.0, 255.0]
    for sample in batches[0].samples:
        np.testing.assert_array_equal(sample.image, images[sample.position])
        assert sample.flags == []


@pytest.mark.parametrize(
    "low, high",
    [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)],
    ids=["unit", "symmetric", "byte_floats"],
)
def test_float_ranges_are_recognised(tmp_path, low, high):
    rng = np.random.default_rng(1)
    images = rng.uniform(low, high, (8, 9, 7, 3)).astype(np.float32)
    images[:, 0, 0, :] = low  # make sure both ends of the range are present
    images[:, 0, 1, :] = high
    batches = fit_images(tmp_path, images)
    assert batches[0].record["value_range"] == [low, high]
    for sample in batches[0].samples:
        expected = np.round((images[sample.position] - low) / (high - low) * 255)
        np.testing.assert_allclose(sample.image, expected, atol=1)
        assert sample.flags == []


def test_nan_and_inf_are_flagged_and_shown(tmp_path):
    images = np.full((8, 8, 8, 3), 0.5, np.float32)
    images[0, 2, 2, 0] = np.nan
    images[1, 3, 3, 1] = np.inf
    images[2, :, :, :] = np.nan
    batches = fit_images(tmp_path, images)
    samples = {s.position: s for s in batches[0].samples}
    assert "nan" in samples[0].flags and "inf" not in samples[0].flags
    assert "inf" in samples[1].flags
    assert "nan" in samples[2].flags and "constant" in samples[2].flags
    assert samples[3].flags == ["constant"]  # a flat grey image is worth a flag too
    assert samples[0].image[2, 2, 0] == 0  # NaN shown as 0
    assert samples[0].image[0, 0, 0] == 128


@pytest.mark.parametrize("shape", [(10, 6, 1), (10, 6)], ids=["hw1", "hw"])
def test_grayscale_images(tmp_path, shape):
    images = np.random.default_rng(2).uniform(0, 1, (8, *shape)).astype(np.float32)
    batches = fit_images(tmp_path, images)
    assert batches[0].record["input_layout"] == ("HW" if len(shape) == 2 else "HWC")
    for sample in batches[0].samples:
        assert sample.image.shape == (10, 6, 1)
        expected = np.round(images[sample.position].reshape(10, 6, 1) * 255)
        np.testing.assert_allclose(sample.image, expected, atol=1)


def test_rgba_keeps_alpha(tmp_path):
    images = np.random.default_rng(3).integers(0, 256, (8, 6, 6, 4), dtype=np.uint8)
    batches = fit_images(tmp_path, images)
    for sample in batches[0].samples:
        np.testing.assert_array_equal(sample.image, images[sample.position])


def test_channels_first_is_transposed(tmp_path):
    images = np.random.default_rng(4).integers(0, 256, (8, 3, 10, 14), dtype=np.uint8)
    batches = fit_images(tmp_path, images)
    assert batches[0].record["input_layout"] == "CHW"
    assert batches[0].record["input_shape"] == [3, 10, 14]
    for sample in batches[0].samples:
        np.testing.assert_array_equal(
            sample.image, images[sample.position].transpose(1, 2, 0)
        )


def test_one_pixel_images(tmp_path):
    images = np.array([[[[v / 8.0] * 3]] for v in range(8)], np.float32)
    batches = fit_images(tmp_path, images)
    for sample in batches[0].samples:
        assert sample.image.shape == (1, 1, 3)
        assert sample.image[0, 0, 0] == round(sample.position / 8.0 * 255)


def test_huge_images_are_thumbnailed(tmp_path):
    images = np.zeros((2, 3000, 4000, 3), np.uint8)
    images[:, :1500] = 255  # top half white
    batches = fit_images(tmp_path, images, samples_per_batch=2, max_image_size=128)
    record = batches[0].record
    assert record["input_shape"] == [3000, 4000, 3]
    for sample in batches[0].samples:
        assert sample.image.shape == (96, 128, 3)
        assert sample.record["image_shape"] == [96, 128, 3]
        assert sample.image[10, 64, 0] > 250 and sample.image[85, 64, 0] < 5


def test_tabular_input_turns_the_logger_off_with_one_warning(tmp_path):
    features = np.random.default_rng(5).normal(size=(16, 10)).astype(np.float32)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2, "softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(
            features,
            np.arange(16) % 2,
            batch_size=4,
            epochs=2,
            verbose=0,
            callbacks=[BatchImageLogger(str(tmp_path), every_n_steps=1)],
        )
    assert len(history.history["loss"]) == 2
    ours = [w for w in caught if "tb_batch_images" in str(w.message)]
    assert len(ours) == 1 and "not an image" in str(ours[0].message)
    assert list(read_batches(str(tmp_path))) == []


@TF_ONLY
def test_text_input_turns_the_logger_off(tmp_path):
    texts = np.array([["cat"], ["dog"], ["bird"], ["cat"]] * 4)
    lookup = keras.layers.StringLookup(vocabulary=["cat", "dog", "bird"])
    inputs = keras.Input((1,), dtype="string")
    hidden = keras.layers.Embedding(4, 2)(lookup(inputs))
    outputs = keras.layers.Dense(2, "softmax")(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "sparse_categorical_crossentropy")
    dataset = tf.data.Dataset.from_tensor_slices((texts, np.arange(16) % 2)).batch(4)
    with pytest.warns(RuntimeWarning, match="turned itself off"):
        model.fit(
            dataset,
            epochs=1,
            verbose=0,
            callbacks=[BatchImageLogger(str(tmp_path), every_n_steps=1)],
        )
    assert list(read_batches(str(tmp_path))) == []


def test_odd_filenames_round_trip_as_text(tmp_path):
    names = [
        "café_猫_😀.png",
        "<img src=x onerror=alert(1)>.png",
        "dir/" + "x" * 1200 + ".png",
        "a\"quote'and&amp;.png",
    ] * 2
    images = np.random.default_rng(6).uniform(0, 1, (8, 5, 5, 3)).astype(np.float32)
    batches = fit_images(
        tmp_path,
        images,
        filenames=np.array(names, dtype=object),
        sample_ids=BACKEND != "tensorflow",  # strings cannot travel in x there
    )
    logged = [s.filename for b in batches for s in b.samples]
    assert logged == names


def test_mean_std_normalised_inputs_are_rescaled_and_flagged(tmp_path):
    images = np.random.default_rng(7).normal(0, 2.5, (8, 6, 6, 3)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="to_pixels"):
        batches = fit_images(tmp_path, images)
    assert batches[0].record["value_range"] is None
    for sample in batches[0].samples:
        assert "rescaled" in sample.flags
        assert sample.image.min() == 0 and sample.image.max() == 255


def test_to_pixels_function_is_used(tmp_path):
    mean, std = 0.5, 0.25
    raw = np.random.default_rng(8).uniform(0, 1, (8, 6, 6, 3)).astype(np.float32)
    images = (raw - mean) / std

    def to_pixels(batch):
        return np.clip((batch * std + mean) * 255, 0, 255).astype(np.uint8)

    batches = fit_images(tmp_path, images, to_pixels=to_pixels)
    for sample in batches[0].samples:
        assert sample.flags == []
        np.testing.assert_allclose(sample.image, raw[sample.position] * 255, atol=1)


def test_explicit_value_range_clips_and_flags(tmp_path):
    images = np.random.default_rng(9).uniform(0, 1, (8, 6, 6, 3)).astype(np.float32)
    images[0, 0, 0, 0] = 3.0
    batches = fit_images(tmp_path, images, value_range=(0, 1))
    samples = {s.position: s for s in batches[0].samples}
    assert samples[0].flags == ["clipped"] and samples[0].image[0, 0, 0] == 255
    assert samples[1].flags == []


def test_labels_outside_the_class_names_are_flagged(tmp_path):
    images = np.random.default_rng(10).uniform(0, 1, (8, 4, 4, 3)).astype(np.float32)
    batches = fit_images(
        tmp_path, images, classes=3, labels=np.arange(8) % 3, class_names=["a", "b"]
    )
    for sample in batches[0].samples:
        has_flag = "label_out_of_range" in sample.flags
        assert has_flag == (sample.label == 2)
        assert sample.label_name == (None if sample.label == 2 else "ab"[sample.label])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"every_n_steps": -1}, "every_n_steps"),
        ({"samples_per_batch": 0}, "samples_per_batch"),
        ({"selection": "worst"}, "selection"),
        ({"image_format": "gif"}, "image_format"),
        ({"value_range": (1, 0)}, "value_range"),
        ({"log_steps": "often"}, "log_steps"),
    ],
)
def test_invalid_options_name_the_argument(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        BatchImageLogger(str(tmp_path), **options)


def test_seed_style_loader_with_filenames_as_third_element_gets_a_clear_error(tmp_path):
    images = np.zeros((8, 4, 4, 3), np.float32)
    names = np.array([f"{i}.png" for i in range(8)], dtype=object)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(8), names)).batch(4)
    model = _mean_model((4, 4, 3))
    model.compile("sgd", "sparse_categorical_crossentropy", jit_compile=False)
    with pytest.raises(ValueError) as raised:
        model.fit(dataset, verbose=0, callbacks=[BatchImageLogger(str(tmp_path))])
    # TensorFlow: the logger's own error; JAX and torch: Keras's data adapter fails
    # on the strings first, and the logger's note says what to do.
    text = "\n".join([str(raised.value), *getattr(raised.value, "__notes__", [])])
    expected = "'filename'" if BACKEND == "tensorflow" else "'sample_id'"
    assert expected in text, text
