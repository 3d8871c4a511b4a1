"""Every sample's training dynamics, accumulated inside the compiled training step.

For every sample of every training batch (not only the logged ones), keyed by its
`sample_id`, `SampleStats` accumulates on the device: appearances; the mean and
variance of the probability of the given label (Dataset Cartography's confidence and
variability, Swayamdipta et al. 2020); how often the prediction was right; the sum of
the margin (AUM, Pleiss et al. 2020: the given label's score minus the largest other;
logits for `from_logits=True` losses, probabilities otherwise); forgetting events
(right at one appearance, wrong at the next); the last loss (cross-entropy of the given
label); and which class was predicted instead when wrong.

`SampleStats` is a `keras.metrics.Metric`, appended to the model's metrics for the
duration of `fit`, so its variables are part of Keras's own metrics state: updated in
place under TensorFlow (graph, XLA, `steps_per_execution`), threaded through the
stateless step on JAX, and assigned in place on PyTorch. Nothing leaves the device
per step; the host reads the variables once per epoch (`read`). Its `reset_state` does
nothing (Keras resets metrics every epoch; these statistics span the whole fit).

Per step the update touches every row (`segment_sum` into `[num_samples, ...]`), so
its cost grows with the number of samples: device memory is `(40 + 4 *
num_classes)` bytes per sample (40 without the per-class counts, which are
kept while `num_samples * num_classes <= 2**24`).

The host turns the accumulators into the columns of the format
(`tb_batch_images.host.data_map.derive`); the logger's `DataMapTracker` reads
and writes them once per epoch.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

# Kept as a [num_samples, num_classes] table while it stays this small (64 MiB).
MAX_CLASS_COUNTS = 2**24


LAST_CORRECT, LAST_LOSS, LAST_WRONG, LAST_LABEL = range(4)


_EPSILON = 1e-7


class SampleStats(keras.metrics.Metric):
    """Per-sample accumulators, `[num_samples, ...]`, updated inside the train step."""

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

        def variable(shape, name, value=0.0):
            return self.add_variable(
                shape=shape,
                initializer=keras.initializers.Constant(value),
                dtype="float32",
                name=name,
            )

        # Row n counts the dropped samples (ids outside [0, n)).
        self.counts = variable((n + 1,), "counts")
        self.mean_p = variable((n,), "mean_p")  # Chan/Welford: exact in float32
        self.m2_p = variable((n,), "m2_p")
        self.correct = variable((n,), "correct")
        self.margin_sum = variable((n,), "margin_sum")
        self.forgotten = variable((n,), "forgotten")
        self.last = variable((n, 4), "last", -1.0)  # correct, loss, wrong, label
        self.class_counts = (
            variable((n, c), "class_counts") if n * c <= MAX_CLASS_COUNTS else None
        )

    # -- in the step -------------------------------------------------------------
    def update_state(self, sample_ids: Any, y: Any, y_pred: Any) -> None:
        """Adds one training batch. Runs inside the step (keras.ops only)."""
        ops = keras.ops
        n, c = self.num_samples, self.num_classes
        ids = ops.reshape(ops.cast(sample_ids, "int32"), [-1])
        probs, scores, label = self._head(y, y_pred)
        valid = ops.logical_and(
            ops.logical_and(ids >= 0, ids < n),
            ops.logical_and(label >= 0, label < c),
        )
        label = ops.clip(label, 0, c - 1)
        segment = ops.where(valid, ids, n)
        row = ops.clip(ids, 0, n - 1)
        ones = ops.ones_like(ops.cast(ids, "float32"))
        weight = ops.cast(valid, "float32")

        def add_up(values):  # [batch, ...] -> [n + 1, ...]
            return ops.segment_sum(values, segment, num_segments=n + 1)

        one_hot = ops.one_hot(label, c)
        p_given = ops.sum(probs * one_hot, axis=-1)
        predicted = ops.cast(ops.argmax(probs, axis=-1), "int32")
        is_correct = ops.cast(ops.equal(predicted, label), "float32")
        given_score = ops.sum(scores * one_hot, axis=-1)
        other = ops.max(ops.where(one_hot > 0, -np.inf, scores), axis=-1)
        margin = given_score - other
        loss = -ops.log(ops.clip(p_given, _EPSILON, 1.0))
        was_correct = ops.take(self.last.value[:, LAST_CORRECT], row)
        forgot = ops.cast(was_correct > 0.5, "float32") * (1.0 - is_correct) * weight

        # Every new value is computed before any variable is written.
        old_counts = self.counts.value[:n]
        old_mean, old_m2, last = self.mean_p.value, self.m2_p.value, self.last.value
        batch_counts = add_up(ones)
        counts = old_counts + batch_counts[:n]
        seen = batch_counts[:n] > 0
        # Chan et al.'s parallel update of mean and M2 (no cancellation in float32).
        batch_mean = add_up(p_given)[:n] / ops.maximum(batch_counts[:n], 1.0)
        deviation = p_given - ops.take(ops.pad(batch_mean, [[0, 1]]), segment)
        batch_m2 = add_up(deviation * deviation)[:n]
        delta = batch_mean - old_mean
        share = batch_counts[:n] / ops.maximum(counts, 1.0)
        was_wrong_class = ops.take(self.last.value[:, LAST_WRONG], row)
        wrong_class = ops.where(
            is_correct > 0.5, was_wrong_class, ops.cast(predicted, "float32")
        )
        latest = [is_correct, loss, wrong_class, ops.cast(label, "float32")]
        latest = ops.stack(latest, axis=1)
        latest = ops.segment_max(latest, segment, num_segments=n + 1)[:n]

        updates = [
            (self.counts, self.counts.value + batch_counts),
            (self.mean_p, ops.where(seen, old_mean + delta * share, old_mean)),
            (self.m2_p, old_m2 + batch_m2 + delta * delta * old_counts * share),
            (self.correct, self.correct.value + add_up(is_correct)[:n]),
            (self.margin_sum, self.margin_sum.value + add_up(margin)[:n]),
            (self.forgotten, self.forgotten.value + add_up(forgot)[:n]),
            (self.last, ops.where(seen[:, None], latest, last)),
        ]
        if self.class_counts is not None:
            wrong = ops.one_hot(predicted, c) * (1.0 - is_correct)[:, None]
            updates.append(
                (self.class_counts, self.class_counts.value + add_up(wrong)[:n])
            )
        # Assigned only now: on PyTorch a variable's value is updated in place.
        for variable, value in updates:
            variable.assign(value)

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
        for variable in self.variables:
            value = -1.0 if variable is self.last else 0.0
            variable.assign(np.full(variable.shape, value, np.float32))

    def result(self) -> dict:
        return {}  # nothing in the logs

    # -- on the host -----------------------------------------------------------------
    def read(self) -> dict[str, np.ndarray]:
        """The accumulators as numpy (one read per variable, once per epoch)."""
        names = ["counts", "mean_p", "m2_p", "correct", "margin_sum", "forgotten"]
        names.append("last")
        if self.class_counts is not None:
            names.append("class_counts")
        return {
            name: np.asarray(keras.ops.convert_to_numpy(getattr(self, name).value))
            for name in names
        }
