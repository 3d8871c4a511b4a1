"""Per-sample statistics: equal to a plain-Python reference from a recorder's view.

An `OutputRecorder` layer at the end of the model writes, inside the compiled step,
the sample index (carried in the image's second channel, which the model ignores) and
the model's output of every training batch; its output *is* the `y_pred` the step
passes on. The reference statistics are computed from that record in numpy, and the
logged statistics must equal them (counts exactly, means within 1e-5). A negative
control (the record's outputs attributed one step late) must not match. With
duplicated ids, the same id appears twice in one batch: the reference takes the
appearances one after the other in batch order. The model compiles with XLA and
`steps_per_execution=4` (where the backend allows). Runs on every backend (`make
test` runs this file under JAX and PyTorch too).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from tb_batch_images import BatchImageLogger, read_sample_stats
from tb_batch_images import contract as fmt
from tb_batch_images.host.data_map import SPREAD_POWER

BACKEND = keras.backend.backend()
SIZE = 4
CLASSES = 3
DATA = 90  # samples in the training data
NUM_SAMPLES = 96  # declared: ids 90..95 are never seen
OUT_OF_RANGE = {5: 200, 17: -3}  # data index -> the sample_id it carries
BATCH = 8


class TakeChannel(keras.layers.Layer):
    def call(self, images):
        return images[..., :1]


class OutputRecorder(keras.layers.Layer):
    """Records (index, output) of every training batch in non-trainable weights."""

    def __init__(self, capacity: int, max_batch: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.max_batch = max_batch
        self._ids = self.add_weight(
            shape=(capacity, max_batch),
            initializer=keras.initializers.Constant(-1),
            dtype="int32",
            trainable=False,
            name="ids",
        )
        self._outputs = self.add_weight(
            shape=(capacity, max_batch, width),
            initializer="zeros",
            dtype="float32",
            trainable=False,
            name="outputs",
        )
        self._count = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False, name="n"
        )

    def call(self, inputs, training=None):
        images, outputs = inputs
        if training:
            ops = keras.ops
            ids = ops.cast(ops.round(images[:, 0, 0, 1]), "int32")
            pad = self.max_batch - ops.shape(ids)[0]
            ids = ops.pad(ids, [[0, pad]], constant_values=-1)
            padded = ops.pad(ops.cast(outputs, "float32"), [[0, pad], [0, 0]])
            row = ops.cast(self._count.value, "int32")
            zero = ops.zeros((), "int32")
            self._ids.assign(
                ops.slice_update(self._ids.value, ops.stack([row, zero]), ids[None])
            )
            self._outputs.assign(
                ops.slice_update(
                    self._outputs.value, ops.stack([row, zero, zero]), padded[None]
                )
            )
            self._count.assign(self._count.value + 1)
        return outputs

    def history(self) -> list[tuple[np.ndarray, np.ndarray]]:
        ids = np.asarray(keras.ops.convert_to_numpy(self._ids))
        outputs = np.asarray(keras.ops.convert_to_numpy(self._outputs))
        steps = int(np.asarray(keras.ops.convert_to_numpy(self._count)))
        return [(ids[s][ids[s] >= 0], outputs[s][ids[s] >= 0]) for s in range(steps)]


def _data(seed: int = 0, duplicated: bool = False):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, DATA)
    images = rng.normal(0, 1.5, (DATA, SIZE, SIZE, 2)).astype(np.float32)
    images[np.arange(DATA), :, labels, 0] += 1.0  # learnable, not trivially
    images[..., 1] = np.arange(DATA, dtype=np.float32)[:, None, None]
    # Duplicated: ids 0, 0, 1, 1, ... (two pictures, maybe two labels, per id)
    sample_ids = np.arange(DATA) // 2 if duplicated else np.arange(DATA)
    for index, sample_id in OUT_OF_RANGE.items():
        sample_ids[index] = sample_id
    return images, sample_ids, labels


def _model(head: str, steps: int) -> tuple[keras.Model, OutputRecorder]:
    width = 1 if head == "binary" else CLASSES
    activation = {"softmax": "softmax", "logits": None, "binary": "sigmoid"}[head]
    images = keras.Input((SIZE, SIZE, 2))
    features = keras.layers.Flatten()(TakeChannel()(images))
    outputs = keras.layers.Dense(width, activation=activation)(features)
    recorder = OutputRecorder(steps, BATCH, width)
    model = keras.Model(images, recorder([images, outputs]))
    loss = {
        "softmax": "sparse_categorical_crossentropy",
        "logits": keras.losses.CategoricalCrossentropy(from_logits=True),
        "binary": "binary_crossentropy",
    }[head]
    compile_options = {"jit_compile": BACKEND != "torch"}
    if BACKEND != "torch":  # Keras refuses steps_per_execution > 1 on torch
        compile_options["steps_per_execution"] = 4
    model.compile(keras.optimizers.Adam(0.05), loss, **compile_options)
    return model, recorder


def _reference(history, sample_ids, labels, head: str, shift: int = 0):
    """The statistics in plain numpy from the recorder's view of every batch."""
    if shift:  # negative control: outputs attributed to the next step's samples
        history = [
            (history[s][0], history[s - shift][1][: len(history[s][0])])
            for s in range(shift, len(history))
            if len(history[s - shift][1]) >= len(history[s][0])
        ]
    seen: dict[int, list[tuple]] = {}
    dropped = 0
    steps_per_epoch = -(-DATA // BATCH)
    for step, (indices, outputs) in enumerate(history):
        for index, output in zip(indices, outputs, strict=True):
            sample_id = int(sample_ids[index])
            if not 0 <= sample_id < NUM_SAMPLES:
                dropped += 1
                continue
            label = int(labels[index])
            output = output.astype(np.float64)
            if head == "binary":
                probs = np.array([1 - output[0], output[0]])
                scores = probs
            elif head == "logits":
                probs = np.exp(output - output.max())
                probs /= probs.sum()
                scores = output
            else:
                probs = scores = output
            predicted = int(np.argmax(probs))
            margin = scores[label] - np.max(np.delete(scores, label))
            loss = -np.log(np.clip(probs[label], 1e-7, 1))
            seen.setdefault(sample_id, []).append(
                (
                    probs[label],
                    predicted == label,
                    margin,
                    predicted,
                    loss,
                    label,
                    (step + shift) // steps_per_epoch,
                )
            )
    # The suspect score's epochs: each sample's mean p and fraction right in each
    # epoch, the epoch weighted by the variance over samples of those means.
    epochs = sorted({e[6] for events in seen.values() for e in events})
    weight = np.zeros(NUM_SAMPLES)
    weighted_p = np.zeros(NUM_SAMPLES)
    weighted_right = np.zeros(NUM_SAMPLES)
    for epoch in epochs:
        means = {
            i: (
                np.mean([e[0] for e in events if e[6] == epoch]),
                np.mean([e[1] for e in events if e[6] == epoch]),
            )
            for i, events in seen.items()
            if any(e[6] == epoch for e in events)
        }
        spread = np.var([p for p, _ in means.values()])
        w = max(spread, 1e-6) ** SPREAD_POWER
        for i, (p, right) in means.items():
            weight[i] += w
            weighted_p[i] += w * p
            weighted_right[i] += w * right
    expected = {name: np.full(NUM_SAMPLES, np.nan) for name in fmt.SAMPLE_STATS_COLUMNS}
    expected["count"][:] = expected["forgetting"][:] = 0
    expected["label"][:] = expected["predicted_instead"][:] = -1
    expected["last_predicted"][:] = -1
    for sample_id, events in seen.items():
        p = np.array([e[0] for e in events])
        correct = [e[1] for e in events]
        wrong = np.bincount(
            [e[3] for e in events if not e[1]], minlength=2 if head == "binary" else 3
        )
        forgetting = sum(
            a and not b for a, b in zip(correct[:-1], correct[1:], strict=True)
        )
        confidence = weighted_p[sample_id] / weight[sample_id]
        right = weighted_right[sample_id] / weight[sample_id]
        for name, value in {
            "count": len(events),
            "confidence": p.mean(),
            "variability": p.std(),
            "correct": np.mean(correct),
            "margin": np.mean([e[2] for e in events]),
            "forgetting": forgetting,
            "last_loss": events[-1][4],
            "last_correct": float(correct[-1]),
            "predicted_instead": int(np.argmax(wrong)) if wrong.any() else -1,
            "weighted_confidence": confidence,
            "weighted_correct": right,
            "suspect_score": 1 - (confidence + right) / 2,
            "label": events[-1][5],
            "last_predicted": events[-1][3],
        }.items():
            expected[name][sample_id] = value
    return expected, dropped


def _train(tmp_path, head: str, epochs: int = 3, duplicated: bool = False):
    keras.utils.set_random_seed(0)
    images, sample_ids, labels = _data(duplicated=duplicated)
    y = labels
    if head == "binary":
        labels = labels % 2
        y = labels.astype(np.float32)
    elif head == "logits":
        y = np.eye(CLASSES, dtype=np.float32)[labels]
    steps = epochs * -(-DATA // BATCH)
    model, recorder = _model(head, steps + 4)
    model.fit(
        {"image": images, "sample_id": sample_ids},
        y,
        batch_size=BATCH,
        epochs=epochs,
        shuffle=not duplicated,  # duplicated: each id's two pictures in one batch
        validation_data=({"image": images[:16], "sample_id": sample_ids[:16]}, y[:16]),
        verbose=0,
        callbacks=[
            BatchImageLogger(str(tmp_path), every_n_steps=5, num_samples=NUM_SAMPLES)
        ],
    )
    return recorder.history(), sample_ids, labels


@pytest.mark.parametrize(
    "head, duplicated",
    [("softmax", False), ("logits", False), ("binary", False), ("softmax", True)],
)
def test_statistics_equal_a_reference_from_every_batch_the_model_trained_on(
    tmp_path, head, duplicated
):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history, sample_ids, labels = _train(tmp_path, head, duplicated=duplicated)
    epochs = read_sample_stats(str(tmp_path), include_unseen=True).epochs
    assert [e.epoch for e in epochs] == [0, 1, 2]
    logged = epochs[-1]
    assert len(history) == 3 * -(-DATA // BATCH)  # validation batches not recorded
    if duplicated:  # the data exercises two appearances of an id in one batch
        assert all(len(set(sample_ids[i])) < len(i) for i, _ in history)
    expected, dropped = _reference(history, sample_ids, labels, head)
    assert logged.record["dropped"] == dropped == 3 * len(OUT_OF_RANGE)
    assert any("outside [0, 96)" in str(w.message) for w in caught)
    columns = logged.columns
    np.testing.assert_array_equal(columns["count"], expected["count"])
    assert columns["count"][DATA:].sum() == 0  # never seen: count 0
    appearances = 3 * (DATA - len(OUT_OF_RANGE))  # no validation
    assert columns["count"].sum() == appearances
    for name in ("confidence", "variability"):
        np.testing.assert_allclose(columns[name], expected[name], atol=1e-5)
    for name in ("weighted_confidence", "weighted_correct", "suspect_score"):
        np.testing.assert_allclose(columns[name], expected[name], atol=1e-4)
    for name in ("correct", "margin", "last_loss"):
        np.testing.assert_allclose(columns[name], expected[name], atol=1e-4)
    assert expected["forgetting"].sum() > 0  # the data exercises forgetting
    for name in ("forgetting", "last_correct", "predicted_instead", "label"):
        np.testing.assert_array_equal(columns[name], expected[name])
    for name in ("last_predicted",):
        np.testing.assert_array_equal(columns[name], expected[name])

    # Negative control: the same record, attributed one step late, does not match.
    shifted, _ = _reference(history, sample_ids, labels, head, shift=1)
    assert not np.allclose(
        np.nan_to_num(columns["confidence"]),
        np.nan_to_num(shifted["confidence"]),
        atol=1e-3,
    )


def test_flipped_labels_rank_at_the_top_of_the_suspects(tmp_path):
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    count, classes = 400, 4
    labels = rng.integers(0, classes, count)
    centres = rng.normal(0, 1, (classes, 16)).astype(np.float32) * 2
    features = centres[labels] + rng.normal(0, 1, (count, 16)).astype(np.float32)
    images = features.reshape(count, 4, 4, 1)
    flipped = rng.choice(count, 40, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, classes, 40)) % classes
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(
        {"image": images, "sample_id": np.arange(count)},
        noisy,
        batch_size=32,
        epochs=8,
        verbose=0,
        callbacks=[
            BatchImageLogger(
                str(tmp_path), every_n_steps=0, filenames=list(map(str, range(count)))
            )
        ],
    )
    rows = read_sample_stats(str(tmp_path))
    assert {r["epoch"] for r in rows} == set(range(8))
    last = rows.epochs[-1]
    top = last.suspects(40)
    precision = len(set(top) & set(flipped.tolist())) / 40
    assert precision >= 0.7, precision  # chance: 0.1
    assert rows[0]["filename"] == str(rows[0]["sample_id"])


def test_without_ids_the_data_map_is_off_with_one_message(tmp_path, caplog):
    images, _, labels = _data()
    model = keras.Sequential(
        [keras.Input((SIZE, SIZE, 2)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(
            images,
            labels,
            batch_size=BATCH,
            epochs=2,
            verbose=0,
            callbacks=[
                BatchImageLogger(
                    str(tmp_path), every_n_steps=0, sample_stats=True, num_samples=DATA
                )
            ],
        )
    ours = [str(w.message) for w in caught if "data map" in str(w.message)]
    assert len(ours) == 1 and "sample_id" in ours[0], ours
    assert list(read_sample_stats(str(tmp_path))) == []


def test_sample_stats_false_writes_none(tmp_path):
    images, sample_ids, labels = _data()
    model = keras.Sequential(
        [keras.Input((SIZE, SIZE, 2)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logger = BatchImageLogger(
        str(tmp_path), every_n_steps=0, num_samples=NUM_SAMPLES, sample_stats=False
    )
    model.fit(
        {"image": images, "sample_id": sample_ids % DATA},
        labels,
        batch_size=BATCH,
        epochs=1,
        verbose=0,
        callbacks=[logger],
    )
    assert list(read_sample_stats(str(tmp_path))) == []
    assert not [m for m in model.metrics if "sample_stats" in m.name]
