"""Models with several outputs: the logged prediction and loss come from one head.

Built on tests/fixtures/rig.py: pixels encode the sample id, and a Recorder layer writes down
the ids of every training batch. Each head ends in an `OutputRecorder`, which writes
down that head's outputs of the training forward pass: the reference every logged
prediction and per-sample loss is checked against (the loss recomputed in plain
Python from the recorded output and the sample's own target). Checking against the
other head's recordings is the negative control and must fail.

Backend-neutral: `make test` runs this file under KERAS_BACKEND=tensorflow, jax and
torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tb_batch_images import BatchImageLogger, read_batches, read_composition
from tests.fixtures import rig

SAMPLES = 40
BATCH = 8
BOX = 4  # values of the regression head


class OutputRecorder(keras.layers.Layer):
    """Passes its input through; records it, per training call (non-trainable weights)."""

    def __init__(self, width: int, capacity: int = 64, max_batch: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.width, self.max_batch = width, max_batch
        self._values = self.add_weight(
            shape=(capacity, max_batch, width),
            initializer="zeros",
            trainable=False,
            name="values",
        )
        self._count = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False, name="count"
        )

    def call(self, values, training=None):
        ops = keras.ops
        if training:
            pad = self.max_batch - ops.shape(values)[0]
            padded = ops.pad(ops.cast(values, "float32"), [[0, pad], [0, 0]])
            row = ops.cast(self._count.value, "int32")
            start = ops.stack([row, ops.zeros((), "int32"), ops.zeros((), "int32")])
            self._values.assign(
                ops.slice_update(self._values.value, start, padded[None])
            )
            self._count.assign(self._count.value + 1)
        return values

    def history(self) -> np.ndarray:
        """[steps, max_batch, width]: the outputs of each training call."""
        values = np.asarray(keras.ops.convert_to_numpy(self._values))
        return values[: int(np.asarray(keras.ops.convert_to_numpy(self._count)))]


def box_target(sample_id: int) -> np.ndarray:
    return np.asarray(
        [sample_id / SAMPLES, (sample_id % 5) / 5, 0.5, 1 - sample_id / SAMPLES],
        np.float32,
    )


def _model(kind: str, compile_kwargs: dict | None = None):
    """A two-head model: 'dict' {"cls", "box"}, 'list' [box, cls], 'regressions'."""
    recorder = rig.Recorder(max_batch=16)
    image = keras.Input((rig.SIZE, rig.SIZE, 3), name="image")
    hidden = keras.layers.Flatten()(recorder(image))
    hidden = keras.layers.Dense(8, activation="relu")(hidden)
    cls_recorder = OutputRecorder(rig.CLASSES, name="cls_recorder")
    box_recorder = OutputRecorder(BOX, name="box_recorder")
    cls = cls_recorder(keras.layers.Dense(rig.CLASSES, activation="softmax")(hidden))
    box = box_recorder(keras.layers.Dense(BOX)(hidden))
    if kind == "dict":
        outputs = {"cls": cls, "box": box}
        loss = {"cls": "sparse_categorical_crossentropy", "box": "mse"}
    elif kind == "list":
        outputs = [box, cls]
        loss = ["mse", "sparse_categorical_crossentropy"]
    else:  # two regression heads, "zeta" first: the default is zeta, not alphabetical
        outputs = {"zeta": box, "alpha": cls}
        loss = {"zeta": "mse", "alpha": "mse"}
    model = keras.Model(image, outputs)
    model.compile("adam", loss=loss, **{"jit_compile": False, **(compile_kwargs or {})})
    return model, recorder, {"cls": cls_recorder, "box": box_recorder}


def _data(kind: str) -> tf.data.Dataset:
    images = np.stack([rig.raw_image(i) for i in range(SAMPLES)])
    ids = np.arange(SAMPLES)
    labels = ids % rig.CLASSES
    boxes = np.stack([box_target(i) for i in ids])
    if kind == "dict":
        y = {"cls": labels, "box": boxes}
    elif kind == "list":
        y = (boxes, labels)
    else:
        y = {"zeta": boxes, "alpha": np.eye(rig.CLASSES, dtype="float32")[labels]}
    dataset = tf.data.Dataset.from_tensor_slices(
        ({"image": images, "sample_id": ids}, y)
    )
    return dataset.shuffle(SAMPLES, seed=3).batch(BATCH)


def train(tmp_path: Path, kind: str, compile_kwargs=None, **logger_kwargs):
    keras.utils.set_random_seed(2)
    model, recorder, heads = _model(kind, compile_kwargs)
    logger = BatchImageLogger(
        str(tmp_path),
        every_n_steps=2,
        samples_per_batch=BATCH,
        filenames=[rig.filename_of(i) for i in range(SAMPLES)],
        max_queue=100,
        **logger_kwargs,
    )
    model.fit(_data(kind), epochs=2, callbacks=[logger], verbose=0)
    # The flight recorder runs on several heads too: every step's loss and ids.
    composition = read_composition(str(tmp_path))
    assert list(composition.steps) == list(range(2 * SAMPLES // BATCH))
    assert np.all(np.isfinite(composition.losses))
    batches = [b for b in read_batches(str(tmp_path)) if b.mode == "train"]
    return batches, recorder.history(), {n: r.history() for n, r in heads.items()}


def cross_entropy(probabilities: np.ndarray, label: int) -> float:
    return -math.log(max(float(probabilities[label]), 1e-7))


def mse(values: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean((np.asarray(values, np.float64) - target) ** 2))


def reference_losses(head_outputs: dict[str, np.ndarray], sample_id: int, kind: str):
    """Each head's per-sample loss, in plain Python, from the recorded outputs."""
    cls, box = head_outputs["cls"], head_outputs["box"]
    if kind == "regressions":
        one_hot = np.eye(rig.CLASSES)[rig.label_of(sample_id)]
        return {"zeta": mse(box, box_target(sample_id)), "alpha": mse(cls, one_hot)}
    losses = {
        "cls": cross_entropy(cls, rig.label_of(sample_id)),
        "box": mse(box, box_target(sample_id)),
    }
    if kind == "list":  # output names of a list: the recorders' layer names
        return {"box_recorder": losses["box"], "cls_recorder": losses["cls"]}
    return losses


def check_heads(batches, ids_history, outputs_history, kind: str, shown: str) -> int:
    """Asserts each logged sample's prediction and loss are head `shown`'s (a recorder
    name: cls or box), and every head's loss is in the record. Returns the count."""
    checked = 0
    assert batches, "nothing was logged"
    for batch in batches:
        assert batch.warnings == [], batch.warnings
        trained_ids, _ = ids_history[batch.step]
        for sample in batch.samples:
            sample_id = rig.decode_id(sample.image)
            assert trained_ids[sample.position] == sample_id
            assert sample.filename == rig.filename_of(sample_id)
            recorded = {
                name: history[batch.step][sample.position]
                for name, history in outputs_history.items()
            }
            expected = reference_losses(recorded, sample_id, kind)
            head_losses = sample.record["head_losses"]
            assert list(head_losses) == list(expected), head_losses
            for name, value in expected.items():
                assert head_losses[name] == pytest.approx(value, rel=2e-3, abs=2e-4)
            values = recorded[shown]
            if shown == "cls" and kind != "regressions":
                assert sample.label == rig.label_of(sample_id)
                top = {entry["class"]: entry["probability"] for entry in sample.top_k}
                assert sample.prediction == int(np.argmax(values))
                for class_index, probability in top.items():
                    assert probability == pytest.approx(values[class_index], abs=1e-4)
                assert sample.loss == pytest.approx(
                    cross_entropy(values, sample_id % rig.CLASSES), rel=2e-3, abs=2e-4
                )
            else:
                target = (
                    box_target(sample_id)
                    if shown == "box"
                    else np.eye(rig.CLASSES)[rig.label_of(sample_id)]
                )
                assert sample.label == pytest.approx(list(target), abs=1e-6)
                assert sample.prediction == pytest.approx(list(values), abs=1e-4)
                assert sample.loss == pytest.approx(
                    mse(values, target), rel=2e-3, abs=2e-4
                )
            checked += 1
    return checked


def test_dict_heads_log_the_classification_head_and_every_heads_loss(tmp_path):
    batches, ids_history, outputs = train(tmp_path, "dict")
    assert {b.record["output"] for b in batches} == {"cls"}
    assert {b.record["task"] for b in batches} == {"sparse_categorical"}
    assert check_heads(batches, ids_history, outputs, "dict", shown="cls") >= 24
    # The negative control: the box head's outputs are not what was logged.
    with pytest.raises(AssertionError):
        check_heads(batches, ids_history, outputs, "dict", shown="box")


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="Keras refuses steps_per_execution > 1 on torch",
)
def test_dict_heads_under_xla_and_steps_per_execution(tmp_path):
    compile_kwargs = {"jit_compile": True, "steps_per_execution": 4}
    batches, ids_history, outputs = train(tmp_path, "dict", compile_kwargs)
    assert {b.record["output"] for b in batches} == {"cls"}
    assert check_heads(batches, ids_history, outputs, "dict", shown="cls") >= 24


def test_output_names_the_regression_head_of_a_dict_model(tmp_path):
    batches, ids_history, outputs = train(tmp_path, "dict", output="box")
    assert {b.record["output"] for b in batches} == {"box"}
    assert {b.record["task"] for b in batches} == {"raw"}
    assert check_heads(batches, ids_history, outputs, "dict", shown="box") >= 24
    with pytest.raises(AssertionError):
        check_heads(batches, ids_history, outputs, "dict", shown="cls")


def test_list_heads_log_the_classification_head_even_when_second(tmp_path):
    batches, ids_history, outputs = train(tmp_path, "list")
    assert {b.record["output"] for b in batches} == {"cls_recorder"}
    assert check_heads(batches, ids_history, outputs, "list", shown="cls") >= 24


def test_without_a_classification_head_the_first_head_in_model_order_is_logged(
    tmp_path,
):
    batches, ids_history, outputs = train(tmp_path, "regressions")
    # "zeta" was written first; Keras's sorted flattening would give "alpha".
    assert {b.record["output"] for b in batches} == {"zeta"}
    assert check_heads(batches, ids_history, outputs, "regressions", "box") >= 24
    with pytest.raises(AssertionError):
        check_heads(batches, ids_history, outputs, "regressions", "cls")


def test_output_naming_no_head_raises_at_fit_start_listing_the_heads(tmp_path):
    with pytest.raises(ValueError, match=r"output='bbox'.*\['cls', 'box'\]"):
        train(tmp_path, "dict", output="bbox")


def test_output_must_be_a_name():
    with pytest.raises(ValueError, match="output must be the name"):
        BatchImageLogger("logs", output=1)
