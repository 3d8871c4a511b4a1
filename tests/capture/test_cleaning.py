"""`tb_batch_images.cleaning`: the next run's data without (or relabelled at) the
listed samples, for each input kind the logger reads.

Every check enumerates what the edited data yields and compares it with the listed
samples exactly: the listed ones are gone (or carry their new label), every other
sample is there once with its own picture and label. Negative controls: a filename
that names no file, and numpy ids that name no row, raise. The keras.io-style test
trains the way keras.io's image-classification example does
(`image_dataset_from_directory`, augmentation layers in the model,
`model.evaluate(val_ds)` after `fit`: `val_ds.without_ids()`, since only the logger
strips the ids), reads the suspects the logger wrote, and trains
the next run on the data without them. Backend-neutral (tf.data input works on JAX
and torch too).
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
    cleaning,
    image_dataset_from_directory,
    read_sample_stats,
)

CLASSES = ["circle", "square"]
PER_CLASS = 12


def _write_tree(root: Path) -> None:
    """12 PNGs per class: a class's pictures are bright on the left or the right."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            pixels = rng.integers(0, 60, (16, 16, 3))
            pixels[:, index * 8 : index * 8 + 8] += 150
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i:02d}.png")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "pictures"
    _write_tree(root)
    return root


def _numpy_data(count: int = 20):
    x = np.arange(count, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    y = np.arange(count) % 4
    return x, y


def test_numpy_rows_are_dropped_and_relabelled_exactly():
    x, y = _numpy_data()
    kept_x, kept_y = cleaning.exclude((x, y), [3, 17, 3])
    assert kept_x[:, 0].tolist() == [i for i in range(20) if i not in (3, 17)]
    assert kept_y.tolist() == [i % 4 for i in range(20) if i not in (3, 17)]
    new_x, new_y = cleaning.relabel((x, y), {3: 0, 17: 2})
    assert new_x is x
    expected = y.copy()
    expected[[3, 17]] = [0, 2]
    assert new_y.tolist() == expected.tolist() and y[3] == 3  # a copy
    # One-hot labels get a one-hot row; a dict x with ids names rows by id.
    onehot = np.eye(4, dtype=np.float32)[y]
    _, relabelled = cleaning.relabel((x, onehot), {5: 0})
    assert relabelled.argmax(1).tolist() == [0 if i == 5 else i % 4 for i in range(20)]
    ids = np.arange(100, 120)
    kept, _ = cleaning.exclude(({"image": x, "sample_id": ids}, y), [101, 119])
    assert kept["sample_id"].tolist() == [i for i in ids if i not in (101, 119)]
    # By filename, against the list the ids index (also by its folder/name end).
    paths = [f"/data/{'ab'[i % 2]}/img_{i:02d}.png" for i in range(20)]
    kept_x, _ = cleaning.exclude(
        (x, y), ["/data/a/img_04.png", "b/img_07.png"], file_paths=paths
    )
    assert kept_x[:, 0].tolist() == [i for i in range(20) if i not in (4, 7)]
    with pytest.raises(ValueError, match="not one of the 20 file paths"):
        cleaning.exclude((x, y), ["img_99.png"], file_paths=paths)
    with pytest.raises(ValueError, match="name no row"):
        cleaning.exclude((x, y), [20])
    with pytest.raises(ValueError, match="has no file_paths"):
        cleaning.exclude((x, y), ["img_04.png"])


@pytest.mark.parametrize("batched", [True, False])
def test_tf_data_with_sample_ids_loses_and_relabels_exactly_the_listed_ids(batched):
    x, y = _numpy_data(23)
    data = tf.data.Dataset.from_tensor_slices(
        ({"image": x, "sample_id": np.arange(23)}, y)
    ).shuffle(23, seed=1)
    if batched:
        data = data.batch(5)

    def rows(dataset):
        found = {}
        for features, labels in dataset.as_numpy_iterator():
            ids = np.reshape(features["sample_id"], -1)
            images = np.reshape(features["image"], (-1, 3))
            for sample_id, image, label in zip(
                ids, images, np.reshape(labels, -1), strict=True
            ):
                assert sample_id not in found
                assert image[0] == sample_id  # the picture stays with its id
                found[int(sample_id)] = int(label)
        return found

    listed = [0, 6, 7, 8, 9, 22]  # a whole batch's worth among them
    kept = rows(cleaning.exclude(data, listed))
    assert sorted(kept) == [i for i in range(23) if i not in listed]
    assert all(label == i % 4 for i, label in kept.items())
    relabelled = rows(cleaning.relabel(data, {1: 3, 22: 0}))
    assert relabelled == {i: {1: 3, 22: 0}.get(i, i % 4) for i in range(23)}
    with pytest.raises(ValueError, match="carries no 'sample_id'"):
        cleaning.exclude(tf.data.Dataset.from_tensor_slices((x, y)), [1])


def test_the_directory_loader_drops_and_relabels_listed_files(tree):
    train = image_dataset_from_directory(
        tree, image_size=(16, 16), batch_size=5, shuffle=True, seed=3
    )
    paths = train.file_paths
    drop = [paths[2], paths[13], str(Path(paths[20]).relative_to(tree.parent.parent))]
    cleaned = cleaning.exclude(train, drop)
    assert cleaned.file_paths == paths and cleaned.class_names == CLASSES
    seen = {}
    for x, y in cleaned.as_numpy_iterator():
        for sample_id, label in zip(x["sample_id"], y, strict=True):
            seen[int(sample_id)] = int(label)
    dropped = {2, 13, 20}
    assert sorted(seen) == [i for i in range(len(paths)) if i not in dropped]
    for sample_id, label in seen.items():
        assert CLASSES[label] == Path(paths[sample_id]).parent.name
    # Relabel by file and class name; the rest keep their folder's label.
    renamed = cleaning.relabel(train, {paths[0]: "square", paths[23]: "circle"})
    labels = {}
    for x, y in renamed.as_numpy_iterator():
        for sample_id, label in zip(x["sample_id"], y, strict=True):
            labels[int(sample_id)] = int(label)
    assert labels[0] == 1 and labels[23] == 0
    assert all(
        CLASSES[label] == Path(paths[i]).parent.name
        for i, label in labels.items()
        if i not in (0, 23)
    )
    with pytest.raises(ValueError, match="not a class name"):
        cleaning.relabel(train, {paths[0]: "triangle"})


def test_the_keras_io_way_then_the_next_run_without_the_suspects(tree, tmp_path):
    """keras.io's image classification from scratch, with the logger, then cleaned."""
    # Two files in the wrong folder: their labels are wrong.
    (tree / "circle" / "00.png").rename(tree / "square" / "moved_00.png")
    (tree / "square" / "01.png").rename(tree / "circle" / "moved_01.png")
    train_ds, val_ds = image_dataset_from_directory(
        tree,
        validation_split=0.25,
        subset="both",
        seed=1337,
        image_size=(16, 16),
        batch_size=4,
    )
    data_augmentation = keras.Sequential(
        [keras.layers.RandomFlip("vertical"), keras.layers.RandomRotation(0.05)]
    )

    def make_model():
        inputs = keras.Input(shape=(16, 16, 3))
        x = data_augmentation(inputs)
        x = keras.layers.Rescaling(1.0 / 255)(x)
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(2, activation="softmax")(x)
        return keras.Model(inputs, outputs)

    keras.utils.set_random_seed(0)
    model = make_model()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    log_dir = tmp_path / "logs"
    model.fit(
        train_ds,
        epochs=4,
        validation_data=val_ds,
        verbose=0,
        callbacks=[
            BatchImageLogger(
                str(log_dir),
                filenames=train_ds.file_paths,
                class_names=train_ds.class_names,
            )
        ],
    )
    # keras.io evaluates val_ds; ours carries ids, which only the logger strips.
    loss, accuracy = model.evaluate(val_ds.without_ids(), verbose=0)
    assert np.isfinite(loss) and 0 <= accuracy <= 1

    suspects = read_sample_stats(str(log_dir)).suspects(3)
    assert len(suspects) == 3 and all(row["filename"] for row in suspects)
    csv_text = suspects.to_csv(str(tmp_path / "suspects.csv"))
    assert csv_text.splitlines()[0].startswith("rank,run,epoch,sample_id,filename")
    assert (tmp_path / "suspects.csv").read_text() == csv_text

    # The next run: the same loader, without the suspects a person confirmed.
    next_train, next_val = image_dataset_from_directory(
        tree,
        validation_split=0.25,
        subset="both",
        seed=1337,
        image_size=(16, 16),
        batch_size=4,
    )
    cleaned = cleaning.exclude(next_train, suspects)
    trained_on = {
        int(i) for x, _ in cleaned.as_numpy_iterator() for i in x["sample_id"]
    }
    all_training = {
        int(i) for x, _ in next_train.as_numpy_iterator() for i in x["sample_id"]
    }
    assert trained_on == all_training - set(suspects.sample_ids)
    model = make_model()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(
        cleaned,
        epochs=1,
        verbose=0,
        callbacks=[
            BatchImageLogger(str(tmp_path / "next"), filenames=next_train.file_paths)
        ],
    )
    model.evaluate(next_val.without_ids(), verbose=0)
