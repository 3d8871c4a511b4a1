"""Every sample's training dynamics, accumulated inside the compiled training step.

For every sample of every training batch (not only the logged ones), keyed by its
`sample_id`, `SampleStats` accumulates on the device: appearances; the mean and
variance of the probability of the given label (Dataset Cartography's confidence and
variability, Swayamdipta et al. 2020); how often the prediction was right; the sum
of the margin (AUM, Pleiss et al. 2020: the given label's score minus the largest
other; logits for `from_logits=True` losses, probabilities otherwise); forgetting
events (right at one appearance, wrong at the next); the last loss (cross-entropy of
the given label); and which class was predicted instead when wrong.

`SampleStats` is a `keras.metrics.Metric`, appended to the model's metrics for the
duration of `fit`, so its variables are part of Keras's own metrics state: updated in
place under TensorFlow (graph, XLA, `steps_per_execution`), threaded through the
stateless step on JAX, and written in place on PyTorch. Nothing leaves the device
per step; the host reads the variables once per epoch (`read`). Its `reset_state` does
nothing (Keras resets metrics every epoch; these statistics span the whole fit).

**O(batch) per step.** The accumulators are one `[num_samples + 1, COLUMNS]` table
(and, while small, a `[num_samples + 1, num_classes]` table of wrong predictions); a
step gathers its batch's rows, computes their new values and writes those rows back
(`capture.backends.write_rows`: `scatter_nd_update` on TensorFlow, `.at[].set` on a
donated buffer on JAX, `index_copy_` on PyTorch). Nothing else is read or written, so
the cost of a step does not depend on the number of samples. An id that appears
several times in one batch is handled exactly as if its appearances came one after
the other in batch order (a `[batch, batch]` comparison of ids groups them): every
appearance of the id computes the same new row, so the order in which the duplicate
writes land does not matter. Samples whose id is outside `[0, num_samples)` (or whose
label is outside the classes) write to the spare last row, which is never read, and
are counted (`dropped`).

Device memory: `4 * (COLUMNS + num_classes)` bytes per sample (`4 * COLUMNS` without the
per-class counts, which are kept while `num_samples * num_classes <= 2**24`): 80
bytes per sample with 10 classes, 80 MB for a million samples.

The host turns the accumulators into the columns of the format
(`tb_batch_images.host.data_map`: `derive`, and `EpochWeighting`, which weighs each
epoch for the suspect score); the logger's `DataMapTracker` reads and writes them once
per epoch.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tb_batch_images.capture.backends import write_rows

# Kept as a [num_samples, num_classes] table while it stays this small (64 MiB).
MAX_CLASS_COUNTS = 2**24

# The columns of the accumulator table, in order, and their starting values.
TABLE = (
    ("count", 0.0),
    ("mean_p", 0.0),  # Chan/Welford: exact in float32
    ("m2_p", 0.0),
    ("correct", 0.0),
    ("margin_sum", 0.0),
    ("forgotten", 0.0),
    ("last_correct", -1.0),
    ("last_loss", -1.0),
    ("last_wrong", -1.0),  # the class predicted at the last wrong appearance
    ("last_label", -1.0),
)
COLUMNS = len(TABLE)
(
    COUNT,
    MEAN_P,
    M2_P,
    CORRECT,
    MARGIN_SUM,
    FORGOTTEN,
    LAST_CORRECT,
    LAST_LOSS,
    LAST_WRONG,
    LAST_LABEL,
) = range(COLUMNS)
_EPSILON = 1e-7


class SampleStats(keras.metrics.Metric):
    """Per-sample accumulators, `[num_samples + 1, ...]`, updated inside the train step."""

    def __init__(
        self,
        num_samples: int,
        num_classes: int,
        activation: str,
        from_logits: bool,
        name: str = "tb_batch_images_sample_stats",
    ):
        super().__init__(name=name)
        self.num_samples = n = int(num_samples)
        self.num_classes = c = int(num_classes)
        self.activation = activation
        self.from_logits = bool(from_logits)
        self._initial = np.array([value for _, value in TABLE], np.float32)
        # Row n is spare: the rows of dropped samples (never read).
        self.table = self.add_variable(
            shape=(n + 1, COLUMNS),
            initializer=keras.initializers.Constant(0.0),
            dtype="float32",
            name="table",
        )
        self.dropped = self.add_variable(
            shape=(),
            initializer=keras.initializers.Constant(0.0),
            dtype="float32",
            name="dropped",
        )
        self.class_counts = (
            self.add_variable(
                shape=(n + 1, c),
                initializer=keras.initializers.Constant(0.0),
                dtype="float32",
                name="class_counts",
            )
            if n * c <= MAX_CLASS_COUNTS
            else None
        )
        self.clear()

    # -- in the step -------------------------------------------------------------
    def update_state(self, sample_ids: Any, y: Any, y_pred: Any) -> None:
        """Adds one training batch. Runs inside the step (keras.ops, and
        `backends.write_rows` for the in-place write)."""
        ops = keras.ops
        n, c = self.num_samples, self.num_classes
        ids = ops.reshape(ops.cast(sample_ids, "int32"), [-1])
        probs, scores, label = self._head(y, y_pred)
        valid = ops.logical_and(
            ops.logical_and(ids >= 0, ids < n),
            ops.logical_and(label >= 0, label < c),
        )
        label = ops.clip(label, 0, c - 1)
        row = ops.where(valid, ids, n)  # dropped samples: the spare row
        old = ops.take(self.table.value, row, axis=0)  # [batch, COLUMNS]

        one_hot = ops.one_hot(label, c)
        p_given = ops.sum(probs * one_hot, axis=-1)
        predicted = ops.cast(ops.argmax(probs, axis=-1), "int32")
        is_correct = ops.cast(ops.equal(predicted, label), "float32")
        given_score = ops.sum(scores * one_hot, axis=-1)
        other = ops.max(ops.where(one_hot > 0, -np.inf, scores), axis=-1)
        margin = given_score - other
        loss = -ops.log(ops.clip(p_given, _EPSILON, 1.0))

        # The batch's appearances of each id, in batch order: same[i, j] when
        # positions i and j carry the same (valid) id.
        same = ops.logical_and(
            ops.equal(row[:, None], row[None, :]),
            ops.logical_and(valid[:, None], valid[None, :]),
        )
        size = ops.shape(ids)[0]
        position = ops.arange(size, dtype="int32")
        before = position[None, :] < position[:, None]  # j comes before i

        def latest(mask):
            """Per position: the last j with mask[i, j], or -1."""
            return ops.max(ops.where(mask, position[None, :], -1), axis=1)

        def at(values, index, default):
            """values[index] where index >= 0, else default."""
            picked = ops.take(values, ops.maximum(index, 0), axis=0)
            return ops.where(index >= 0, picked, default)

        weight = ops.cast(same, "float32")
        ones = ops.cast(valid, "float32")
        # A non-finite output (NaN, inf) must not leak into the other ids' sums of
        # the matmul (0 * NaN is NaN): summed as 0, and its id's means set to NaN.
        finite = ops.logical_and(ops.isfinite(p_given), ops.isfinite(margin))
        p_given = ops.where(finite, p_given, 0.0)
        margin = ops.where(finite, margin, 0.0)
        non_finite = ops.matmul(
            weight, ops.expand_dims(1.0 - ops.cast(finite, "float32"), 1)
        )
        non_finite = non_finite[:, 0] > 0.5
        # Forgetting: right at an appearance, wrong at the next one (the previous
        # appearance is an earlier one of this batch, else the stored last one).
        was_correct = at(
            is_correct,
            latest(ops.logical_and(same, before)),
            old[:, LAST_CORRECT],
        )
        forgot = ops.cast(was_correct > 0.5, "float32") * (1.0 - is_correct) * ones
        # Sums over each id's appearances in the batch: one [batch, batch] matmul.
        summed = ops.matmul(
            weight,
            ops.stack(
                [
                    ones,
                    p_given,
                    is_correct,
                    margin,
                    forgot,
                ],
                axis=1,
            ),
        )
        batch_count, p_sum, correct_sum, margin_sum, forgot_sum = (
            summed[:, i] for i in range(5)
        )
        # Chan et al.'s parallel update of mean and M2 (no cancellation in float32).
        old_count = old[:, COUNT]
        count = old_count + batch_count
        batch_mean = p_sum / ops.maximum(batch_count, 1.0)
        deviation = (p_given - batch_mean) * ones
        batch_m2 = ops.matmul(weight, ops.expand_dims(deviation * deviation, 1))[:, 0]
        delta = batch_mean - old[:, MEAN_P]
        share = batch_count / ops.maximum(count, 1.0)
        # The last appearance's values; the class of the last wrong one.
        last = latest(same)
        last_wrong = at(
            ops.cast(predicted, "float32"),
            latest(ops.logical_and(same, (is_correct < 0.5)[None, :])),
            old[:, LAST_WRONG],
        )

        def unless_non_finite(values):
            return ops.where(non_finite, np.nan, values)

        new = {
            COUNT: count,
            MEAN_P: unless_non_finite(old[:, MEAN_P] + delta * share),
            M2_P: unless_non_finite(
                old[:, M2_P] + batch_m2 + delta * delta * old_count * share
            ),
            CORRECT: old[:, CORRECT] + correct_sum,
            MARGIN_SUM: unless_non_finite(old[:, MARGIN_SUM] + margin_sum),
            FORGOTTEN: old[:, FORGOTTEN] + forgot_sum,
            LAST_CORRECT: at(is_correct, last, old[:, LAST_CORRECT]),
            LAST_LOSS: at(loss, last, old[:, LAST_LOSS]),
            LAST_WRONG: last_wrong,
            LAST_LABEL: at(ops.cast(label, "float32"), last, old[:, LAST_LABEL]),
        }
        rows = ops.stack([new[i] for i in range(COLUMNS)], axis=1)
        updates = [(self.table, rows)]
        if self.class_counts is not None:
            wrong = ops.one_hot(predicted, c) * ((1.0 - is_correct) * ones)[:, None]
            old_counts = ops.take(self.class_counts.value, row, axis=0)
            updates.append((self.class_counts, old_counts + ops.matmul(weight, wrong)))
        dropped = self.dropped.value + ops.sum(1.0 - ones)
        # Written only now: on PyTorch a write is in place.
        for variable, values in updates:
            write_rows(variable, row, values)
        self.dropped.assign(dropped)

    def _head(self, y: Any, y_pred: Any) -> tuple[Any, Any, Any]:
        """(probabilities [batch, C], scores for the margin, given label [batch])."""
        ops = keras.ops
        y_pred = ops.cast(ops.stop_gradient(y_pred), "float32")
        y = ops.stop_gradient(y)
        batch = ops.shape(y_pred)[0]
        if self.activation == "binary":
            output = ops.reshape(y_pred, [batch])
            p1 = ops.sigmoid(output) if self.from_logits else output
            probs = ops.stack([1.0 - p1, p1], axis=1)
            # Two-class logits (0, z) have the same softmax as sigmoid(z).
            scores = (
                ops.stack([ops.zeros_like(output), output], axis=1)
                if self.from_logits
                else probs
            )
            label = ops.cast(ops.reshape(y, [batch]) > 0.5, "int32")
            return probs, scores, label
        probs = ops.softmax(y_pred, axis=-1) if self.from_logits else y_pred
        scores = y_pred
        if len(y.shape) == len(y_pred.shape) and y.shape[-1] == self.num_classes:
            label = ops.cast(ops.argmax(y, axis=-1), "int32")  # one-hot labels
        else:
            label = ops.reshape(ops.cast(y, "int32"), [batch])
        return probs, scores, label

    # -- Keras's metric protocol --------------------------------------------------
    def reset_state(self) -> None:
        """Nothing: Keras resets metrics each epoch; these span the fit (`clear`)."""

    def clear(self) -> None:
        n = self.num_samples
        self.table.assign(np.tile(self._initial, (n + 1, 1)))
        self.dropped.assign(np.zeros((), np.float32))
        if self.class_counts is not None:
            self.class_counts.assign(np.zeros(self.class_counts.shape, np.float32))

    def result(self) -> dict:
        return {}  # nothing in the logs

    # -- on the host -----------------------------------------------------------------
    def read(self) -> dict[str, np.ndarray]:
        """The accumulators as numpy, by name (one read per variable, once per epoch):
        each column of `TABLE` `[num_samples]`, `dropped` (a count) and, when kept,
        `class_counts` `[num_samples, num_classes]`."""
        n = self.num_samples
        table = _numpy(self.table)[:n]
        found = {name: table[:, i] for i, (name, _) in enumerate(TABLE)}
        found["dropped"] = _numpy(self.dropped)
        if self.class_counts is not None:
            found["class_counts"] = _numpy(self.class_counts)[:n]
        return found


def _numpy(variable: Any) -> np.ndarray:
    # The Keras variable's own numpy(): a scalar tf.distribute variable (summed on
    # read) refuses numpy's __array__ outside the replicas.
    return np.asarray(variable.numpy())
