"""Images whose size is unknown when the step is traced: PNG files decoded, not resized.

The test writes real PNG files, and a `tf.data` pipeline reads them with
`tf.io.decode_png` alone, so `x["image"]` has the static shape `[None, None, None, 3]`.
Each logged picture is compared with the file its filename names (and, as the negative
control, with another file, which must not match):

- the model's `Input` fixes the size: pictures are the files' pixels, exactly;
- the model takes `Input((None, None, 3))` and the batches differ in size, one larger
  than `max_image_size`: each picture is its file fitted into `max_image_size`, the
  record says the true size, and a validation record merging batches of three sizes
  holds each at its own size.

Backend-neutral: `make test` runs this file under KERAS_BACKEND=tensorflow, jax and
torch (tf.data feeds all three).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tb_batch_images import BatchImageLogger, read_batches

BATCH = 4
MAX_IMAGE_SIZE = 64
CLASSES = 2


def picture(sample_id: int, height: int, width: int) -> np.ndarray:
    """A smooth picture of its own (gradients whose direction and colours follow the
    id), so that resizing changes it little and no two files look alike."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = sample_id * 0.7
    ramp = (np.cos(angle) * rows / height + np.sin(angle) * cols / width + 1) / 2
    tint = np.asarray(
        [(sample_id * 53) % 256, (sample_id * 101) % 256, (sample_id * 29) % 256],
        np.float32,
    )
    image = ramp[..., None] * 200 + tint * 0.2
    image[: height // 4, : width // 4] = tint  # a corner mark
    return np.clip(image, 0, 255).astype(np.uint8)


def write_files(folder: Path, sizes: list[tuple[int, int]]) -> list[str]:
    """BATCH files of each size in turn (so each batch has one size)."""
    folder.mkdir()
    paths = []
    for group, (height, width) in enumerate(sizes):
        for k in range(BATCH):
            sample_id = group * BATCH + k
            path = folder / f"file_{sample_id}.png"
            Image.fromarray(picture(sample_id, height, width)).save(path)
            paths.append(str(path))
    return paths


def decoded_dataset(paths: list[str]) -> tf.data.Dataset:
    """decode_png alone: the batch's static shape is [None, None, None, 3]."""

    def load(path, sample_id):
        image = tf.io.decode_png(tf.io.read_file(path), channels=3)
        return {"image": image, "sample_id": sample_id}, sample_id % CLASSES

    dataset = tf.data.Dataset.from_tensor_slices((paths, np.arange(len(paths))))
    dataset = dataset.map(load).batch(BATCH)
    assert dataset.element_spec[0]["image"].shape.as_list() == [None, None, None, 3]
    return dataset


def model_for(
    input_shape: tuple, rescaling: bool = False, jit_compile: bool = False
) -> keras.Model:
    inputs = keras.Input(input_shape, name="image")
    rescale = keras.layers.Rescaling(1 / 255, name="rescale")
    hidden = rescale(inputs) if rescaling else inputs
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=jit_compile)
    return model


def file_pixels(path: str, size: tuple[int, int] | None = None) -> np.ndarray:
    image = np.asarray(Image.open(path).convert("RGB"))
    if size is not None and tuple(image.shape[:2]) != size:
        resized = tf.image.resize(
            image.astype(np.float32), size, method="bilinear", antialias=True
        )
        image = np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)
    return image


def difference(logged: np.ndarray, expected: np.ndarray) -> float:
    if logged.shape != expected.shape:
        return float("inf")
    return float(np.abs(logged.astype(np.float32) - expected).mean())


def train(
    tmp_path: Path,
    sizes,
    input_shape,
    rescaling=False,
    jit_compile=False,
    **logger_kwargs,
):
    keras.utils.set_random_seed(0)
    paths = write_files(tmp_path / "files", sizes)
    dataset = decoded_dataset(paths)
    log_dir = tmp_path / "logs"
    logger = BatchImageLogger(
        str(log_dir),
        every_n_steps=1,
        samples_per_batch=BATCH,
        filenames=paths,
        max_image_size=MAX_IMAGE_SIZE,
        max_queue=100,
        **logger_kwargs,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model_for(input_shape, rescaling, jit_compile).fit(
            dataset,
            validation_data=dataset,
            epochs=1,
            callbacks=[logger],
            verbose=0,
        )
    messages = [str(w.message) for w in caught if "tb_batch_images" in str(w.message)]
    assert messages == [], messages
    return paths, list(read_batches(str(log_dir)))


def test_decoded_pngs_of_a_size_the_model_fixes_are_logged_pixel_for_pixel(tmp_path):
    size = (24, 20)
    paths, batches = train(tmp_path, [size] * 3, input_shape=(*size, 3))
    train_batches = [b for b in batches if b.mode == "train"]
    assert len(train_batches) == 3
    assert any(b.mode == "validation" for b in batches)
    checked = 0
    for batch in batches:
        assert batch.warnings == [], batch.warnings
        assert batch.record["input_shape"] == [*size, 3]
        for sample in batch.samples:
            assert "input_size" not in sample.record  # the size was known: static
            expected = file_pixels(sample.filename)
            np.testing.assert_array_equal(sample.image, expected)
            other = paths[(paths.index(sample.filename) + 1) % len(paths)]
            assert difference(sample.image, file_pixels(other)) > 10  # the control
            checked += 1
    assert checked == 3 * BATCH + BATCH  # every train sample, one validation batch


TF_ONLY = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="XLA in a TensorFlow graph (JAX always jit-compiles; torch.compile: slow)",
)


@pytest.mark.parametrize(
    "rescaling, jit_compile",
    [(False, False), (True, False), pytest.param(False, True, marks=TF_ONLY)],
    ids=["x", "rescaling_layer", "xla"],
)
def test_variable_size_images_are_fitted_into_max_image_size_with_their_true_size(
    tmp_path, rescaling, jit_compile
):
    """Also as the output of a Rescaling layer inside the model (image_source), and
    under XLA (which has no antialiased resize: plain bilinear there)."""
    sizes = [(20, 24), (40, 30), (150, 100)]  # the last is larger than 64
    paths, batches = train(
        tmp_path,
        sizes,
        input_shape=(None, None, 3),
        rescaling=rescaling,
        jit_compile=jit_compile,
        validation_batches=3,
    )
    fitted = {(20, 24): (20, 24), (40, 30): (40, 30), (150, 100): (64, 43)}
    train_batches = [b for b in batches if b.mode == "train"]
    (validation,) = [b for b in batches if b.mode == "validation"]
    assert len(train_batches) == 3
    assert len(validation.samples) == 3 * BATCH  # three sizes in one record
    for batch in [*train_batches, validation]:
        assert batch.warnings == [], batch.warnings
        assert batch.record["image_source"] == ("rescale" if rescaling else None)
        for sample in batch.samples:
            index = paths.index(sample.filename)
            true_size = sizes[index // BATCH]
            assert sample.record["input_size"] == list(true_size)
            assert sample.image.shape == (*fitted[true_size], 3)
            expected = file_pixels(sample.filename, fitted[true_size])
            exact = fitted[true_size] == true_size
            # Rescaling undone in float32: a grey level off at most, here and there.
            tolerance = (0.5 if rescaling else 0.0) if exact else 3.0
            assert difference(sample.image, expected) <= tolerance, sample.filename
            other = paths[index + 1 if index % BATCH < BATCH - 1 else index - 1]
            assert difference(sample.image, file_pixels(other, fitted[true_size])) > 10
        first = batch.samples[0].record["input_size"]
        assert batch.record["input_shape"] == [*first, 3]


@TF_ONLY
def test_images_larger_than_max_image_size_under_xla_train_and_are_logged(tmp_path):
    """XLA has no antialiased resize: downscaling in the step must not break fit."""
    size = (150, 100)
    paths, batches = train(
        tmp_path, [size] * 2, input_shape=(*size, 3), jit_compile=True
    )
    assert len([b for b in batches if b.mode == "train"]) == 2
    for batch in batches:
        for sample in batch.samples:
            assert sample.image.shape == (64, 43, 3)
            expected = file_pixels(sample.filename, (64, 43))
            assert difference(sample.image, expected) <= 3.0
