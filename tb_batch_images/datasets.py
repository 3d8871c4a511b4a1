"""`image_dataset_from_directory` with sample ids, so the gallery names every file.

`keras.utils.image_dataset_from_directory` yields `(images, labels)`: nothing in the
batch says which file a picture came from. This module's loader is Keras's own
function (same arguments, same indexing, shuffling, splitting, batching and prefetching:
Keras does all of it) with one change in how each element is built: `x` is
`{"image": images, "sample_id": ids}`, where `ids` index `dataset.file_paths`, the list
of **every** file found (both subsets of a `validation_split`, in Keras's seeded order).
So one list names the training and the validation pictures:

    train_ds, val_ds = image_dataset_from_directory(directory, validation_split=0.2,
                                                    subset="both", seed=1)
    BatchImageLogger(log_dir, filenames=train_ds.file_paths,
                     class_names=train_ds.class_names)

`BatchImageLogger` strips `"sample_id"` before the model sees `x`, in `fit` and, once
the logger has been attached to a model, in its `evaluate` and `predict` too. A model
that never met the logger takes `without_ids(dataset)` (or the dataset's own
`.without_ids()`), which yields the bare images again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tb_batch_images import contract
from tb_batch_images.capture import keras_internals

IMAGE_KEY = "image"
# The attributes Keras sets on its datasets, carried over by this module's helpers.
_ATTRIBUTES = ("class_names", "file_paths", "subset_file_paths")


def image_dataset_from_directory(directory: str, *args: Any, **kwargs: Any) -> Any:
    """`keras.utils.image_dataset_from_directory`, with a sample id beside each image.

    Takes the same arguments and returns what Keras returns (one `tf.data.Dataset`,
    or a `(training, validation)` pair for `subset="both"`), with the same images,
    labels, `class_names`, batching, shuffling and `validation_split` semantics. The
    one difference: each element's `x` is `{"image": images, "sample_id": ids}`
    (`ids`: int64, one per image), and each dataset has

    - `file_paths`: every file found, in Keras's order (the training files, then the
      validation files when `validation_split` is set). `ids` index this list, in
      both subsets: pass it as `BatchImageLogger(filenames=...)`.
    - `subset_file_paths`: this dataset's own files (what Keras's `file_paths` holds).
    - `without_ids()`: the same dataset yielding bare images, for `evaluate`/`predict`
      on a model trained without the logger around it.

    Like Keras's attributes, these do not survive `.map(...)`, `.cache()` or
    `.prefetch(...)` (each returns a new dataset), but the ids in the batch do: read
    `file_paths` from the dataset this function returned, or use `map_images` and
    `without_ids`, which carry the attributes over. Only `format="tf"` is supported.
    """
    if kwargs.get("format", "tf") != "tf":
        raise ValueError(
            "tb_batch_images.image_dataset_from_directory supports format='tf' only "
            f"(got format={kwargs['format']!r}); tf.data input works on every Keras "
            "backend"
        )
    loader = keras_internals.DirectoryLoader.find()
    if loader is None:
        raise RuntimeError(
            f"tb_batch_images.image_dataset_from_directory does not know the "
            f"directory loader of Keras {keras_internals.KERAS_VERSION}"
        )
    every_file: list[str] = []

    def build(image_paths, **build_kwargs):
        position = {path: i for i, path in enumerate(every_file)}
        ids = [position[path] for path in image_paths]
        return _paths_and_ids_to_dataset(loader, image_paths, ids, **build_kwargs)

    result = loader.load(
        lambda paths: every_file.__setitem__(slice(None), paths),
        build,
        directory,
        *args,
        **kwargs,
    )
    datasets = list(result) if isinstance(result, (list, tuple)) else [result]
    for dataset in datasets:
        dataset.subset_file_paths = dataset.file_paths
        dataset.file_paths = list(every_file)
        dataset.without_ids = functools.partial(without_ids, dataset)
    return tuple(datasets) if isinstance(result, (list, tuple)) else result


def _paths_and_ids_to_dataset(
    loader: keras_internals.DirectoryLoader,
    image_paths: list[str],
    ids: list[int],
    image_size,
    num_channels,
    labels,
    label_mode,
    num_classes,
    interpolation,
    data_format,
    crop_to_aspect_ratio=False,
    pad_to_aspect_ratio=False,
    shuffle=False,
    shuffle_buffer_size=None,
    seed=None,
    format="tf",
) -> tf.data.Dataset:
    """Keras's `_paths_and_labels_to_dataset_tf`, with the ids zipped in.

    The shuffle draws the same order as Keras's (same buffer, same seed: the order
    does not depend on what the elements hold), and each image is loaded by Keras's
    own `_load_image_tf`.
    """
    inputs = tf.data.Dataset.from_tensor_slices(
        (image_paths, tf.constant(ids, tf.int64))
    )
    if label_mode:
        label_ds = loader.labels_to_dataset(labels, label_mode, num_classes)
        dataset = tf.data.Dataset.zip((inputs, label_ds))
    else:
        dataset = inputs
    if shuffle:
        dataset = dataset.shuffle(buffer_size=shuffle_buffer_size or 1024, seed=seed)
    load_args = (
        image_size,
        num_channels,
        interpolation,
        data_format,
        crop_to_aspect_ratio,
        pad_to_aspect_ratio,
    )

    def x_of(path, sample_id):
        image = loader.load_image(path, *load_args)
        return {IMAGE_KEY: image, contract.SAMPLE_ID_KEY: sample_id}

    if label_mode:
        return dataset.map(
            lambda path_and_id, label: (x_of(*path_and_id), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.map(x_of, num_parallel_calls=tf.data.AUTOTUNE)


def without_ids(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The dataset with `x` the bare images again (no `"sample_id"`/`"filename"`).

    For `model.evaluate` / `model.predict` without `BatchImageLogger` (a `Sequential`
    model rejects the extra key). When `x` keeps other inputs besides the image, it
    stays a dict without the metadata keys. Keeps `class_names` and `file_paths`.
    """

    def strip(x, *rest):
        if isinstance(x, dict):
            kept = {k: v for k, v in x.items() if k not in contract.METADATA_KEYS}
            x = kept[IMAGE_KEY] if list(kept) == [IMAGE_KEY] else kept
        return (x, *rest) if rest else x

    return _with_attributes(dataset.map(strip), dataset)


def map_images(
    dataset: tf.data.Dataset, function: Callable[[tf.Tensor], tf.Tensor], **kwargs: Any
) -> tf.data.Dataset:
    """`dataset.map` applying `function` to `x["image"]` only; ids and labels kept.

    The keras.io pattern `ds.map(lambda x, y: (augment(x), y))` becomes
    `map_images(ds, augment)`. Keyword arguments go to `Dataset.map`. Keeps
    `class_names` and `file_paths`.
    """

    def apply(x, *rest):
        x = {**x, IMAGE_KEY: function(x[IMAGE_KEY])}
        return (x, *rest) if rest else x

    return _with_attributes(dataset.map(apply, **kwargs), dataset)


def _with_attributes(new: tf.data.Dataset, old: tf.data.Dataset) -> tf.data.Dataset:
    for name in _ATTRIBUTES:
        if hasattr(old, name):
            setattr(new, name, getattr(old, name))
    if hasattr(old, "without_ids"):
        new.without_ids = functools.partial(without_ids, new)
    return new
