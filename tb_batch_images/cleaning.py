"""Closing the loop: the next run's data without (or with new labels for) listed samples.

After a run, `read_sample_stats(log_dir).suspects(k)` (or the Dataset view's CSV) lists
the samples whose labels look wrong. Once a person has checked them, `exclude` drops
them from the next run's data and `relabel` gives them their right labels, for each
kind of input the logger reads:

- numpy: `(x, y)` with `x` an array, or a dict of arrays (its `"sample_id"` names the
  samples; else their position does);
- a `tf.data.Dataset` whose `x` is a dict with an integer `"sample_id"` (batched or
  not): rows are dropped or relabelled inside each batch, so the batching, shuffling
  and prefetching around it stay as they are (a batch may come out smaller);
- `tb_batch_images.image_dataset_from_directory`'s datasets (a `tf.data.Dataset` with
  ids and `file_paths`): samples may be named by file path.

Samples are named by sample id (int) or by filename (str: matched against
`file_paths`, the dataset's own list for the directory loader, or `file_paths=` for
other inputs), or given as the rows of `Suspects` (their filenames when every row
has one, else their ids):

    suspects = read_sample_stats("logs").suspects(50)   # checked by a person
    train_ds = image_dataset_from_directory("photos", ...)
    train_ds = cleaning.exclude(train_ds, suspects)      # the next run's data
    x, y = cleaning.relabel((x, y), {"cat_017.png": "dog"}, file_paths=paths,
                            class_names=["cat", "dog"])

A name that matches no sample raises a ValueError (a typo must not pass for a
cleaning). Writer side: the readers (`reader`, `plugin`) never import this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tb_batch_images import contract

_ATTRIBUTES = ("class_names", "file_paths", "subset_file_paths")


# -- naming samples ---------------------------------------------------------------------
def _file_paths(data: Any, file_paths: list[str] | None) -> list[str] | None:
    if file_paths is not None:
        return [str(path) for path in file_paths]
    found = getattr(data, "file_paths", None)
    return None if found is None else [str(path) for path in found]


def _names(samples: Any) -> list[int | str]:
    """Sample ids and filenames from ids, filenames, or suspect rows (dicts)."""
    if isinstance(samples, (str, bytes, int, np.integer)):
        samples = [samples]
    items = list(samples)
    if items and all(isinstance(item, Mapping) for item in items):
        if all(item.get("filename") is not None for item in items):
            return [str(item["filename"]) for item in items]
        return [int(item["sample_id"]) for item in items]
    names: list[int | str] = []
    for item in items:
        if isinstance(item, bytes):
            item = item.decode("utf-8")
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            names.append(int(item))
        elif isinstance(item, str):
            names.append(item)
        else:
            raise TypeError(
                f"name samples by sample id (int) or filename (str), got "
                f"{type(item).__name__} {item!r}"
            )
    return names


def _to_ids(names: Iterable[int | str], file_paths: list[str] | None) -> np.ndarray:
    """The sample ids of ids and filenames; a ValueError for a filename not found."""
    position = None
    ids = []
    for name in names:
        if isinstance(name, str):
            if file_paths is None:
                raise ValueError(
                    f"{name!r} is a filename, but the data has no file_paths: pass "
                    f"file_paths= (the list the sample ids index, as given to "
                    f"BatchImageLogger(filenames=...)) or name samples by id"
                )
            if position is None:
                position = _positions(file_paths)
            found = position.get(name)
            if found is None:
                raise ValueError(
                    f"{name!r} is not one of the {len(file_paths)} file paths (the "
                    f"first: {file_paths[:3]})"
                )
            ids.append(found)
        else:
            ids.append(int(name))
    return np.asarray(ids, np.int64)


def _positions(file_paths: list[str]) -> dict[str, int]:
    """Each path's id; a path may also be named by its end (`class/file.png`) when
    that end is unique."""
    position = {path: i for i, path in enumerate(file_paths)}
    ends: dict[str, list[int]] = {}
    for i, path in enumerate(file_paths):
        parts = path.replace("\\", "/").split("/")
        for cut in range(1, len(parts)):
            ends.setdefault("/".join(parts[cut:]), []).append(i)
    for end, found in ends.items():
        if len(found) == 1 and end not in position:
            position[end] = found[0]
    return position


def _label_value(label: Any, class_names: list[str] | None) -> int:
    if isinstance(label, str):
        if not class_names or label not in class_names:
            raise ValueError(
                f"label {label!r} is not a class name ({class_names}); pass "
                f"class_names= or the class index"
            )
        return class_names.index(label)
    return int(label)


# -- the entry points ------------------------------------------------------------------
def exclude(data: Any, samples: Any, *, file_paths: list[str] | None = None) -> Any:
    """`data` without the listed samples (ids, filenames or suspect rows).

    `data`: `(x, y)` numpy (returns the same kind), or a `tf.data.Dataset` with
    `x["sample_id"]` (returns a dataset; the directory loader's attributes
    `class_names`, `file_paths` are kept). Raises ValueError for a filename that
    names no sample and for numpy ids that name no row.
    """
    names = _names(samples)
    ids = _to_ids(names, _file_paths(data, file_paths))
    if _is_dataset(data):
        return _dataset_edit(data, ids, None)
    return _numpy_edit(data, ids, None)


def relabel(
    data: Any,
    labels: Mapping[Any, Any],
    *,
    file_paths: list[str] | None = None,
    class_names: list[str] | None = None,
) -> Any:
    """`data` with new labels for the listed samples: `{id or filename: label}`,
    a label being a class index or a class name (`class_names=`, or the dataset's
    own). Sparse labels get the index, one-hot labels the one-hot row, a binary
    label 0 or 1 (`label_mode="binary"`)."""
    keys = _names(list(labels.keys()))
    ids = _to_ids(keys, _file_paths(data, file_paths))
    names = class_names or getattr(data, "class_names", None)
    values = np.asarray(
        [_label_value(label, names) for label in labels.values()], np.int64
    )
    if _is_dataset(data):
        return _dataset_edit(data, ids, values)
    return _numpy_edit(data, ids, values)


# -- numpy ------------------------------------------------------------------------------
def _numpy_edit(data: Any, ids: np.ndarray, labels: np.ndarray | None) -> Any:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(
            "exclude/relabel take (x, y) numpy arrays or a tf.data.Dataset, got "
            f"{type(data).__name__}"
        )
    x, y = data
    first = x[contract.SAMPLE_ID_KEY] if isinstance(x, Mapping) else x
    if isinstance(x, Mapping) and contract.SAMPLE_ID_KEY in x:
        sample_ids = np.asarray(x[contract.SAMPLE_ID_KEY]).reshape(-1).astype(np.int64)
    else:
        if isinstance(x, Mapping):
            first = next(iter(x.values()))
        sample_ids = np.arange(len(first))
    known = set(sample_ids.tolist())
    missing = sorted(set(ids.tolist()) - known)
    if missing:
        raise ValueError(
            f"sample ids {missing[:10]} name no row of the data ({len(sample_ids)} rows)"
        )
    y = np.asarray(y)
    if labels is None:
        keep = ~np.isin(sample_ids, ids)
        if isinstance(x, Mapping):
            x = {key: np.asarray(value)[keep] for key, value in x.items()}
        else:
            x = np.asarray(x)[keep]
        return type(data)((x, y[keep])) if isinstance(data, list) else (x, y[keep])
    new = dict(zip(ids.tolist(), labels.tolist(), strict=True))
    y = y.copy()
    for row, sample_id in enumerate(sample_ids.tolist()):
        if sample_id in new:
            y[row] = _label_row(y[row], new[sample_id])
    return type(data)((x, y)) if isinstance(data, list) else (x, y)


def _label_row(old: np.ndarray, label: int) -> Any:
    """A label in the form of `old`: an index, a one-hot row, or a binary value."""
    old = np.asarray(old)
    if old.ndim >= 1 and old.shape[-1] > 1:  # one-hot
        row = np.zeros_like(old)
        row[..., label] = 1
        return row
    return np.asarray(label, old.dtype).reshape(old.shape)


# -- tf.data ----------------------------------------------------------------------------
def _is_dataset(data: Any) -> bool:
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - the package depends on TensorFlow
        return False
    return isinstance(data, tf.data.Dataset)


def _dataset_edit(dataset: Any, ids: np.ndarray, labels: np.ndarray | None) -> Any:
    import tensorflow as tf

    spec = dataset.element_spec
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    if not isinstance(x_spec, Mapping) or contract.SAMPLE_ID_KEY not in x_spec:
        raise ValueError(
            "the dataset's x carries no 'sample_id': exclude/relabel need x = "
            "{'image': ..., 'sample_id': ...} (tb_batch_images."
            "image_dataset_from_directory gives one), or numpy (x, y)"
        )
    batched = x_spec[contract.SAMPLE_ID_KEY].shape.rank not in (0, None)
    order = np.argsort(ids, kind="stable")
    keys = tf.constant(ids[order] if len(ids) else [-1], tf.int64)
    values = None if labels is None else tf.constant(labels[order], tf.int64)

    def lookup(sample_id):
        """(listed [n] bool, position in keys [n]) of a flat id vector."""
        flat = tf.reshape(tf.cast(sample_id, tf.int64), [-1])
        at = tf.minimum(tf.searchsorted(keys, flat), tf.size(keys) - 1)
        return tf.equal(tf.gather(keys, at), flat), at

    def parts(element):
        return (element[0], element[1:]) if len(element) > 1 else (element[0], ())

    if labels is None and batched:

        def drop(*element):
            x, rest = parts(element)
            keep = tf.logical_not(lookup(x[contract.SAMPLE_ID_KEY])[0])
            x = {key: tf.boolean_mask(value, keep) for key, value in x.items()}
            rest = tuple(tf.boolean_mask(value, keep) for value in rest)
            return (x, *rest) if rest else x

        def not_empty(*element):
            return tf.size(parts(element)[0][contract.SAMPLE_ID_KEY]) > 0

        edited = dataset.map(drop).filter(not_empty)
    elif labels is None:

        def kept(*element):
            listed, _ = lookup(parts(element)[0][contract.SAMPLE_ID_KEY])
            return tf.logical_not(tf.reduce_any(listed))

        edited = dataset.filter(kept)
    else:
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise ValueError("relabel needs a dataset of (x, y) elements")

        def change(x, y, *rest):
            listed, at = lookup(x[contract.SAMPLE_ID_KEY])
            label = tf.gather(values, at)
            rows = y if batched else y[None]
            if rows.shape.rank == 2 and (rows.shape[-1] or 0) > 1:  # one-hot
                new = tf.one_hot(label, tf.shape(rows)[-1], dtype=rows.dtype)
                rows = tf.where(listed[:, None], new, rows)
            else:
                flat = tf.reshape(rows, [-1])
                flat = tf.where(listed, tf.cast(label, rows.dtype), flat)
                rows = tf.reshape(flat, tf.shape(rows))
            return (x, rows if batched else rows[0], *rest)

        edited = dataset.map(change)
    for name in _ATTRIBUTES:
        if hasattr(dataset, name):
            setattr(edited, name, getattr(dataset, name))
    if hasattr(dataset, "without_ids"):
        from tb_batch_images.datasets import without_ids

        edited.without_ids = lambda: without_ids(edited)
    return edited
