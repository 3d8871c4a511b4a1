"""The data map says what is happening: why it is off, which head it reads, NaN first.

- Every reason the data map turns itself off gives ONE warning at the default level
  (a `RuntimeWarning`, and the `tb_batch_images` logger's WARNING) naming the reason
  and the fix, and the logger's status record carries the same reason
  (`data_map_off`), which the Dataset tab shows (tests/reader/
  test_plugin_sample_stats.py, tests/browser/test_dataset_browser.py).
- A model with a classification head and a regression head keeps its data map: it
  follows the head the gallery logs (`output=`, or the one classification head).
- A sample whose output went NaN ranks first among the suspects, marked, and the
  other samples' statistics stay finite.

Runs on every backend (`make test` runs tests/capture under JAX and PyTorch too).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from tb_batch_images import BatchImageLogger, read_sample_stats
from tb_batch_images import contract as fmt
from tb_batch_images.reader.events import plugin_values

BACKEND = keras.backend.backend()
COUNT = 32
CLASSES = 3


def _status(logdir, required: bool = True) -> dict:
    """The logger's last status record of the train run, from the event files."""
    from tensorboard.util import tensor_util

    values = list(plugin_values(str(logdir), "train", fmt.SERIES_STATUS))
    if not values and not required:
        return {}
    assert values, "no status record"
    elements = tensor_util.make_ndarray(values[-1][1].tensor_proto)
    return fmt.decode_record(bytes(elements[0]))


def _images(count: int = COUNT) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((count, 6, 6, 2), dtype=np.float32)


def _dense(width: int, activation=None) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(width, activation=activation),
        ]
    )


def _two_heads(order=("box", "class")) -> keras.Model:
    image = keras.Input((6, 6, 2))
    features = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(image))
    heads = {
        "class": keras.layers.Dense(CLASSES, activation="softmax", name="class")(
            features
        ),
        "box": keras.layers.Dense(4, name="box")(features),
    }
    return keras.Model(image, {name: heads[name] for name in order})


def _fit_and_catch(tmp_path, model, x, y, **logger_kwargs):
    """Fits one epoch with the logger; (data-map warnings, other warnings' texts)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=1,
            verbose=0,
            callbacks=[
                BatchImageLogger(str(tmp_path), every_n_steps=0, **logger_kwargs)
            ],
        )
    texts = [str(w.message) for w in caught if w.category is RuntimeWarning]
    return [t for t in texts if "data map" in t], texts


def _case(name: str):
    """(model, x, y, logger kwargs, a fragment of the reason) of one reason."""
    images = _images()
    ids = np.arange(COUNT)
    labels = ids % CLASSES
    if name == "no_sample_id":
        model = _dense(CLASSES, "softmax")
        model.compile("adam", "sparse_categorical_crossentropy")
        return model, images, labels, {}, "no integer x['sample_id']"
    if name == "filename_strings_only":
        import tensorflow as tf

        names = [f"img_{i}.png" for i in range(COUNT)]
        data = tf.data.Dataset.from_tensor_slices(
            ({"image": images, "filename": names}, labels)
        ).batch(8)
        model = _dense(CLASSES, "softmax")
        model.compile("adam", "sparse_categorical_crossentropy")
        return model, data, None, {}, "x['filename'] strings alone"
    x = {"image": images, "sample_id": ids}
    if name == "number_of_samples_unknown":
        model = _dense(CLASSES, "softmax")
        model.compile("adam", "sparse_categorical_crossentropy")
        return model, x, labels, {}, "pass num_samples="
    if name == "regression_head":
        model = _dense(1)
        model.compile("adam", "mse")
        return (
            model,
            x,
            labels.astype("float32"),
            {"num_samples": COUNT},
            "not a classification cross-entropy",
        )
    if name == "multi_label_head":
        model = _dense(CLASSES, "sigmoid")
        model.compile("adam", "binary_crossentropy")
        y = np.eye(CLASSES, dtype="float32")[labels]
        return model, x, y, {"num_samples": COUNT}, "multi-label"
    if name == "logged_head_is_a_regression":
        model = _two_heads()
        model.compile(
            "adam", {"class": "sparse_categorical_crossentropy", "box": "mse"}
        )
        y = {"class": labels, "box": np.zeros((COUNT, 4), "float32")}
        return (
            model,
            x,
            y,
            {"num_samples": COUNT, "output": "box"},
            "output= names the classification head",
        )
    raise AssertionError(name)


REASONS = [
    "no_sample_id",
    pytest.param(
        "filename_strings_only",
        marks=pytest.mark.skipif(
            BACKEND != "tensorflow", reason="string filenames travel on TensorFlow"
        ),
    ),
    "number_of_samples_unknown",
    "regression_head",
    "multi_label_head",
    "logged_head_is_a_regression",
]


@pytest.mark.parametrize("reason", REASONS)
def test_each_reason_the_data_map_is_off_warns_once_and_reaches_the_status(
    tmp_path, caplog, reason
):
    model, x, y, kwargs, fragment = _case(reason)
    with caplog.at_level("WARNING", logger="tb_batch_images"):
        ours, _ = _fit_and_catch(tmp_path, model, x, y, **kwargs)
    assert len(ours) == 1, ours
    assert fragment in ours[0], ours[0]
    assert "sample_stats=False silences this" in ours[0]
    logged = [r.getMessage() for r in caplog.records if "data map" in r.getMessage()]
    assert logged == [ours[0].removeprefix("tb_batch_images: ")]
    status = _status(tmp_path)
    assert status["data_map_off"] and fragment in status["data_map_off"]
    assert status["data_map_off"] in ours[0]  # the same words in the Dataset tab
    assert list(read_sample_stats(str(tmp_path))) == []


def test_sample_stats_false_silences_the_reason(tmp_path):
    model, x, y, _, _ = _case("no_sample_id")
    ours, _ = _fit_and_catch(tmp_path, model, x, y, sample_stats=False)
    assert ours == []
    assert "data_map_off" not in _status(tmp_path, required=False)


def test_with_the_data_map_on_the_status_says_nothing_is_off(tmp_path):
    model, x, y, _, _ = _case("regression_head")
    model = _dense(CLASSES, "softmax")
    model.compile("adam", "sparse_categorical_crossentropy")
    ours, _ = _fit_and_catch(
        tmp_path, model, x, np.arange(COUNT) % 3, num_samples=COUNT
    )
    assert ours == []
    assert "data_map_off" not in _status(tmp_path)
    assert read_sample_stats(str(tmp_path)).epochs


@pytest.mark.parametrize("order", [("box", "class"), ("class", "box")])
def test_a_model_with_a_classification_and_a_box_head_keeps_its_data_map(
    tmp_path, order
):
    keras.utils.set_random_seed(0)
    model = _two_heads(order)
    model.compile("adam", {"class": "sparse_categorical_crossentropy", "box": "mse"})
    images = _images()
    labels = (np.arange(COUNT) * 7) % CLASSES
    y = {"class": labels, "box": np.zeros((COUNT, 4), "float32")}
    ours, _ = _fit_and_catch(
        tmp_path,
        model,
        {"image": images, "sample_id": np.arange(COUNT)},
        y,
        num_samples=COUNT,
    )
    assert ours == []
    table = read_sample_stats(str(tmp_path)).epochs[-1]
    assert table.record["num_classes"] == CLASSES  # the class head, not the box's 4
    assert table.record["head"] == "softmax"
    np.testing.assert_array_equal(table.columns["count"], np.ones(COUNT))
    np.testing.assert_array_equal(table.columns["label"], labels)
    # Its probabilities are the class head's: the model's own, a pass later.
    confidence = table.columns["confidence"]
    assert np.all((confidence > 0) & (confidence < 1))
    probs = model.predict(images, verbose=0)["class"]
    given = probs[np.arange(COUNT), labels]
    assert np.corrcoef(confidence, given)[0, 1] > 0.9


class PoisonOne(keras.layers.Layer):
    """The output of the sample whose picture carries `index` in channel 1 is NaN."""

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, inputs):
        images, outputs = inputs
        ops = keras.ops
        marker = ops.round(images[:, 0, 0, 1] * COUNT)
        bad = ops.equal(marker, float(self.index))
        return ops.where(bad[:, None], np.nan, outputs)


def sparse_categorical_masked(y_true, y_pred):
    """Cross-entropy that ignores non-finite outputs (so training goes on)."""
    ops = keras.ops
    safe = ops.where(ops.isfinite(y_pred), y_pred, 1.0 / CLASSES)
    return keras.losses.sparse_categorical_crossentropy(y_true, safe)


def test_a_sample_whose_output_went_nan_ranks_first_and_is_marked(tmp_path):
    keras.utils.set_random_seed(0)
    poisoned = 13
    images = _images()
    images[..., 1] = (np.arange(COUNT, dtype=np.float32) / COUNT)[:, None, None]
    labels = np.arange(COUNT) % CLASSES
    image = keras.Input((6, 6, 2))
    probs = keras.layers.Dense(CLASSES, activation="softmax")(
        keras.layers.Flatten()(image[..., :1])
    )
    model = keras.Model(image, PoisonOne(poisoned)([image, probs]))
    model.compile("adam", sparse_categorical_masked)
    model.fit(
        {"image": images, "sample_id": np.arange(COUNT)},
        labels,
        batch_size=8,
        epochs=3,
        verbose=0,
        callbacks=[
            BatchImageLogger(str(tmp_path), every_n_steps=0, num_samples=COUNT + 4)
        ],
    )
    stats = read_sample_stats(str(tmp_path))
    table = stats.epochs[-1]
    suspects = stats.suspects(5)
    assert suspects[0]["sample_id"] == poisoned and suspects[0]["non_finite"]
    assert not any(row["non_finite"] for row in suspects[1:])
    assert table.suspects(1) == [poisoned]
    # Never seen (ids 32..35) is another case: left out, not first.
    assert set(stats.suspects(None).sample_ids) == set(range(COUNT))
    # The NaN did not leak into the other samples of its batches.
    others = np.delete(np.arange(COUNT), poisoned)
    for name in ("confidence", "suspect_score", "margin", "weighted_confidence"):
        assert np.isfinite(table.columns[name][others]).all(), name
    assert np.isnan(table.columns["suspect_score"][poisoned])
