"""`tb_batch_images.image_dataset_from_directory`: every logged picture names its file.

A folder of real PNG and JPEG files is written by the test (three classes, each file a
different colour gradient, sizes that the loader resizes). A model trains on the
loader's datasets (`subset="both"`, shuffled) with `BatchImageLogger`; every logged
training and validation picture is compared with the file its filename names, decoded
and resized the way the loader does it. Backend-neutral: tf.data input works on JAX and
torch too.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tb_batch_images import (
    BatchImageLogger,
    image_dataset_from_directory,
    map_images,
    read_batches,
    without_ids,
)

CLASSES = ["apple", "banana", "cherry"]
FILES_PER_CLASS = 12
SIZE = (16, 16)
BATCH = 8


def _write_tree(root: Path) -> None:
    """12 files per class, alternately PNG and JPEG, 20x24 gradients in distinct colours."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.0, 1.0, 24)[None, :, None]
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(FILES_PER_CLASS):
            colour = rng.integers(40, 216, size=3)
            pixels = np.clip(colour * (0.6 + 0.4 * ramp) + np.zeros((20, 1, 1)), 0, 255)
            extension = "png" if i % 2 == 0 else "jpg"
            Image.fromarray(pixels.astype(np.uint8)).save(
                root / name / f"{name}_{i:02d}.{extension}", quality=95
            )


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    root = tmp_path / "pictures"
    _write_tree(root)
    return root


def _expected_picture(path: str, flip: bool) -> np.ndarray:
    """The file decoded and resized as the loader does, as uint8."""
    data = tf.io.read_file(path)
    image = tf.image.decode_image(data, channels=3, expand_animations=False)
    image = tf.image.resize(image, SIZE, method="bilinear")
    if flip:
        image = tf.image.flip_left_right(image)
    return np.clip(np.floor(image.numpy() + 0.5), 0, 255).astype(np.uint8)


def _check_named_pictures(batches, file_paths, flip: bool) -> int:
    """Each logged picture equals its named file's content; its label, the folder's."""
    checked = 0
    for batch in batches:
        for sample in batch.samples:
            assert sample.filename == file_paths[sample.sample_id]
            expected = _expected_picture(sample.filename, flip)
            difference = np.abs(sample.image.astype(int) - expected.astype(int))
            # JPEG decoders differ by a level or two; another file is far away.
            assert difference.mean() < 2.0, (sample.filename, difference.mean())
            folder = Path(sample.filename).parent.name
            assert sample.label == CLASSES.index(folder)
            assert sample.label_name == folder
            assert "rescaled" not in sample.flags
            checked += 1
    return checked


def _model(kind: str) -> keras.Model:
    if kind == "sequential":
        return keras.Sequential(
            [
                keras.Input((*SIZE, 3)),
                keras.layers.Conv2D(4, 3, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(len(CLASSES), activation="softmax"),
            ]
        )
    inputs = keras.Input((*SIZE, 3), name="image")
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax")(hidden)
    return keras.Model(inputs, outputs)


def _load_both(directory: Path):
    return image_dataset_from_directory(
        str(directory),
        validation_split=0.25,
        subset="both",
        seed=3,
        image_size=SIZE,
        batch_size=BATCH,
        verbose=False,
    )


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_every_logged_train_and_validation_picture_is_its_named_file(
    tmp_path, image_tree, kind
):
    train_ds, val_ds = _load_both(image_tree)
    assert train_ds.class_names == val_ds.class_names == CLASSES
    assert train_ds.file_paths == val_ds.file_paths
    assert len(train_ds.file_paths) == len(CLASSES) * FILES_PER_CLASS
    assert train_ds.subset_file_paths + val_ds.subset_file_paths == train_ds.file_paths
    # The loader's output survives a map (here a deterministic flip), cache, prefetch.
    flipped = map_images(train_ds, tf.image.flip_left_right)
    assert flipped.file_paths == train_ds.file_paths
    training = flipped.cache().prefetch(tf.data.AUTOTUNE)
    validation = val_ds.cache()

    keras.utils.set_random_seed(0)
    model = _model(kind)
    model.compile("adam", "sparse_categorical_crossentropy")
    logger = BatchImageLogger(
        str(tmp_path / "logs"),
        every_n_steps=1,
        samples_per_batch=BATCH,
        validation_batches=10,
        max_queue=1000,
        filenames=train_ds.file_paths,
        class_names=train_ds.class_names,
    )
    model.fit(
        training, validation_data=validation, epochs=2, verbose=0, callbacks=[logger]
    )
    batches = list(read_batches(str(tmp_path / "logs")))
    train_batches = [b for b in batches if b.mode == "train"]
    val_batches = [b for b in batches if b.mode == "validation"]

    assert _check_named_pictures(train_batches, train_ds.file_paths, flip=True) == 54
    assert _check_named_pictures(val_batches, train_ds.file_paths, flip=False) == 18
    logged_train = {s.filename for b in train_batches for s in b.samples}
    logged_val = {s.filename for b in val_batches for s in b.samples}
    assert logged_train == set(train_ds.subset_file_paths)
    assert logged_val == set(val_ds.subset_file_paths)
    # Shuffled: the first logged batch is not the files' order.
    first = [s.filename for s in train_batches[0].samples]
    assert first != train_ds.subset_file_paths[:BATCH]

    # Negative controls: a neighbour's filename, or the unflipped file, fails the check.
    sample = train_batches[0].samples[0]
    sample.filename = train_ds.file_paths[(sample.sample_id + 1) % 36]
    with pytest.raises(AssertionError):
        _check_named_pictures(train_batches, train_ds.file_paths, flip=True)
    with pytest.raises(AssertionError):
        _check_named_pictures(train_batches[1:], train_ds.file_paths, flip=False)

    # evaluate and predict after fit, on datasets without the ids.
    model.evaluate(val_ds.without_ids(), verbose=0)
    predictions = model.predict(without_ids(val_ds), verbose=0)
    assert predictions.shape == (9, len(CLASSES))


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_without_ids_trains_evaluates_and_predicts_with_no_logger(image_tree, kind):
    train_ds, val_ds = _load_both(image_tree)
    model = _model(kind)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(without_ids(train_ds), epochs=1, verbose=0)
    loss = model.evaluate(val_ds.without_ids(), verbose=0)
    assert np.isfinite(loss)
    assert model.predict(val_ds.without_ids(), verbose=0).shape == (9, len(CLASSES))
    assert without_ids(train_ds).class_names == CLASSES


def test_images_labels_and_order_are_keras_own(image_tree):
    """Same seed: the same batches as keras.utils.image_dataset_from_directory."""
    arguments = dict(
        validation_split=0.25, seed=5, image_size=SIZE, batch_size=BATCH, verbose=False
    )
    for subset in ("training", "validation"):
        ours = image_dataset_from_directory(str(image_tree), subset=subset, **arguments)
        theirs = keras.utils.image_dataset_from_directory(
            str(image_tree), subset=subset, **arguments
        )
        assert ours.subset_file_paths == theirs.file_paths
        assert ours.class_names == theirs.class_names
        for (x, label), (images, keras_label) in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(x["image"].numpy(), images.numpy())
            np.testing.assert_array_equal(label.numpy(), keras_label.numpy())
            for sample_id, image in zip(
                x["sample_id"].numpy(), x["image"].numpy(), strict=True
            ):
                expected = _expected_picture(ours.file_paths[sample_id], flip=False)
                assert np.abs(np.floor(image + 0.5) - expected).max() <= 1
    # Two calls with the same seed share one list: ids of both subsets index it.
    training = image_dataset_from_directory(
        str(image_tree), subset="training", **arguments
    )
    validation = image_dataset_from_directory(
        str(image_tree), subset="validation", **arguments
    )
    assert training.file_paths == validation.file_paths


def test_label_modes_and_unbatched_match_keras(image_tree):
    for label_mode in ("categorical", None):
        ours = image_dataset_from_directory(
            str(image_tree),
            label_mode=label_mode,
            image_size=SIZE,
            shuffle=False,
            batch_size=None,
            verbose=False,
        )
        element = next(iter(ours))
        x = element[0] if label_mode else element
        assert x["image"].shape == (*SIZE, 3) and x["sample_id"].numpy() == 0
        if label_mode == "categorical":
            assert element[1].shape == (len(CLASSES),)


def test_format_other_than_tf_is_refused_clearly(image_tree):
    with pytest.raises(ValueError, match="format='tf' only"):
        image_dataset_from_directory(str(image_tree), format="grain")
