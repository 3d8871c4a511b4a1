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

The host side (`derive`, `suspect_scores`) is plain numpy.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import keras
import numpy as np

from tb_batch_images import core, predictions, watchlist
from tb_batch_images import format as fmt

# Kept as a [num_samples, num_classes] table while it stays this small (64 MiB).
MAX_CLASS_COUNTS = 2**24
_LAST_CORRECT, _LAST_LOSS, _LAST_WRONG, _LAST_LABEL = range(4)
_EPSILON = 1e-7
_log = logging.getLogger("tb_batch_images")


class HeadUnsupported(ValueError):
    """A model head the statistics cannot use; the message says why."""


def head_of(model: keras.Model) -> tuple[str, int, bool]:
    """(kind, num_classes, from_logits) of a classification head; else HeadUnsupported.

    kind is `"softmax"` (sparse or one-hot categorical cross-entropy over C > 1
    outputs) or `"binary"` (binary cross-entropy over one output).
    """
    task, from_logits = predictions.task_from_loss(getattr(model, "loss", None))
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1:
        raise HeadUnsupported(
            "the model does not have exactly one known output (multi-output or "
            "subclassed models are not supported)"
        )
    shape = tuple(outputs[0].shape)
    width = shape[-1] if len(shape) == 2 else None
    if task in (predictions.SPARSE_CATEGORICAL, predictions.CATEGORICAL):
        if width is None or width < 2:
            raise HeadUnsupported(
                f"a categorical loss needs outputs of shape [batch, classes], "
                f"the model's are {list(shape)}"
            )
        return "softmax", int(width), from_logits
    if task == predictions.BINARY:
        if width != 1:
            raise HeadUnsupported(
                f"binary cross-entropy over {list(shape)} outputs is multi-label; "
                f"only one sigmoid output is supported"
            )
        return "binary", 2, from_logits
    raise HeadUnsupported(
        "the compiled loss is not a classification cross-entropy "
        "(sparse_categorical_crossentropy, categorical_crossentropy or "
        "binary_crossentropy over one output)"
    )


class SampleStats(keras.metrics.Metric):
    """Per-sample accumulators, `[num_samples, ...]`, updated inside the train step."""

    def __init__(
        self,
        num_samples: int,
        num_classes: int,
        kind: str,
        from_logits: bool,
        name: str = "tb_batch_images_sample_stats",
    ):
        super().__init__(name=name)
        self.num_samples = n = int(num_samples)
        self.num_classes = c = int(num_classes)
        self.kind = kind
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
        was_correct = ops.take(self.last.value[:, _LAST_CORRECT], row)
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
        was_wrong_class = ops.take(self.last.value[:, _LAST_WRONG], row)
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
        if self.kind == "binary":
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


def derive(accumulators: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """(the columns of `fmt.SAMPLE_STATS_COLUMNS` as float32 [num_samples], dropped).

    Means of a sample never seen are NaN; its count is 0.
    """
    counts_all = accumulators["counts"].astype(np.float64)
    counts = counts_all[:-1]
    dropped = int(round(counts_all[-1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        seen = counts > 0
        mean = np.where(seen, 1.0, np.nan)
        last = accumulators["last"].astype(np.float64)
        instead = last[:, _LAST_WRONG].copy()
        class_counts = accumulators.get("class_counts")
        if class_counts is not None:
            instead = np.where(
                class_counts.max(axis=1) > 0, class_counts.argmax(axis=1), -1
            )
        columns = {
            "count": counts,
            "confidence": accumulators["mean_p"] * mean,
            "variability": np.sqrt(np.maximum(accumulators["m2_p"], 0) / counts) * mean,
            "correct": accumulators["correct"] / counts,
            "margin": accumulators["margin_sum"] / counts,
            "forgetting": accumulators["forgotten"],
            "last_loss": np.where(seen, last[:, _LAST_LOSS], np.nan),
            "last_correct": np.where(seen, last[:, _LAST_CORRECT], np.nan),
            "label": np.where(seen, last[:, _LAST_LABEL], -1),
            "predicted_instead": np.where(seen, instead, -1),
        }
    columns["suspect_score"] = suspect_scores(
        columns["confidence"], columns["variability"], columns["margin"]
    )
    return {
        name: np.asarray(columns[name], np.float32) for name in fmt.SAMPLE_STATS_COLUMNS
    }, dropped


def suspect_scores(
    confidence: np.ndarray, variability: np.ndarray, margin: np.ndarray
) -> np.ndarray:
    """How likely each sample's label is wrong, in [0, 1] (NaN: never seen).

    `1 - confidence`: Dataset Cartography's hard-to-learn axis (the model rarely
    gave the given label much probability over the whole fit). On MNIST-5k with
    10-40% flipped labels it ranks as well as cleanlab's 5-fold cross-validated
    ranking and as well as, or better than, the margin (AUM) and `(1 - confidence)
    * (1 - variability)` (benchmarks/README.md); those are kept as columns.
    """
    del variability, margin
    return 1.0 - np.asarray(confidence, np.float64)


def ranked_suspects(columns: dict[str, np.ndarray], k: int) -> np.ndarray:
    """The ids of the `k` highest suspect scores (never-seen samples last)."""
    score = np.nan_to_num(columns["suspect_score"], nan=-math.inf)
    k = min(int(k), len(score))
    top = np.argpartition(-score, k - 1)[:k] if k else np.zeros(0, np.int64)
    return top[np.argsort(-score[top], kind="stable")]


def encode(
    columns: dict[str, np.ndarray], header: dict[str, Any], filenames: list | None
) -> list[bytes]:
    """The elements of one sample-stats value (docs/format.md)."""
    record = {
        **header,
        "kind": fmt.KIND_SAMPLE_STATS,
        "stats_version": fmt.SAMPLE_STATS_VERSION,
        "columns": list(fmt.SAMPLE_STATS_COLUMNS),
        "dtype": "float32",
        "byte_order": "little",
    }
    matrix = np.stack([columns[name] for name in fmt.SAMPLE_STATS_COLUMNS])
    names = b"" if filenames is None else json.dumps(list(map(str, filenames)))
    if isinstance(names, str):
        names = names.encode("utf-8")
    return [fmt.encode_record(record), matrix.astype("<f4").tobytes(), names]


class SampleStatsTracker:
    """The logger's side: when the statistics are on, their messages and writes.

    `create` decides once per model (in `set_model`) whether the data map can be
    on; the adapter calls `update` from inside the step (train mode only), with
    the step's sample ids; the logger calls `write` at each epoch end. With the
    statistics on and `watchlist=` > 0, the tracker also keeps the watchlist
    (`tb_batch_images.watchlist`): written, and set anew, at each epoch end.
    """

    def __init__(self, logger: Any, stats: SampleStats | None, reason: str | None):
        self.logger = logger
        self.stats = stats
        self.reason = reason  # why it is off, said once if samples carry ids
        self.watchlist: watchlist.Watchlist | None = None
        self._model = None
        self._written: tuple[int, float] | None = None
        self._said = False
        self._watchlist_records = 0
        self._added: list[keras.metrics.Metric] = []  # to take off the model
        self._epoch_base = 0  # global step at the start of the running epoch

    @classmethod
    def create(cls, model: keras.Model, logger: Any) -> SampleStatsTracker | None:
        if logger.sample_stats is False:
            return None
        num_samples = logger.num_samples
        if num_samples is None and logger.filenames is not None:
            num_samples = len(logger.filenames)
        if not num_samples:
            return cls(
                logger,
                None,
                "the number of samples is unknown: pass num_samples= (or "
                "filenames=) to BatchImageLogger",
            )
        try:
            kind, num_classes, from_logits = head_of(model)
        except HeadUnsupported as error:
            return cls(logger, None, str(error))
        stats = _in_scope(
            model, lambda: SampleStats(num_samples, num_classes, kind, from_logits)
        )
        tracker = cls(logger, stats, None)
        tracker._model = model
        model._metrics.append(stats)  # its variables join Keras's metrics state
        tracker._added.append(stats)
        if getattr(logger, "watchlist", 0):
            tracker._create_watchlist(model)
        return tracker

    def _create_watchlist(self, model: keras.Model) -> None:
        logger = self.logger
        adapter = logger._adapter
        if keras.backend.backend() == "tensorflow" and adapter.num_replicas() > 1:
            # Each replica would fill its own copy of the buffers.
            logger._warn(
                "watchlist_off",
                "the watchlist is off under a tf.distribute strategy with several "
                "replicas (the data map stays on)",
            )
            return
        if keras.backend.backend() == "jax" and not _one_process():
            # Only process 0 sets the list at epoch end: the processes' copies of
            # the replicated buffers would differ (and the next step hang).
            logger._warn(
                "watchlist_off",
                "the watchlist is off when JAX trains in several processes (the "
                "data map stays on)",
            )
            return
        try:
            layout = watchlist.input_layout(model, logger, adapter)
        except watchlist.WatchlistUnavailable as error:
            logger._warn("watchlist_off", f"the watchlist is off: {error}")
            return
        selector = core.SampleSelector(
            layout,
            samples=min(logger.watchlist, watchlist.CAPTURES_PER_STEP),
            selection="first",
            loss_fn=core.per_sample_loss_fn(getattr(model, "loss", None)),
        )
        if keras.backend.backend() == "tensorflow":  # XLA cannot antialias a resize
            from .backends.tensorflow import _uses_xla

            selector.antialias = not _uses_xla(model)
        self.watchlist = _in_scope(
            model, lambda: watchlist.Watchlist(selector, size=logger.watchlist)
        )
        model._metrics.append(self.watchlist)
        self._added.append(self.watchlist)

    def uninstall(self) -> None:
        if self._model is not None:
            for metric in self._added:
                if metric in self._model._metrics:
                    self._model._metrics.remove(metric)
        self._added = []
        self._model = None

    def begin_fit(self) -> None:
        self._written = None
        if self.stats is not None:
            self.stats.clear()
        self._epoch_base = int(self.logger._global_step)
        if self.watchlist is not None:
            self.watchlist.watch([], step=self._epoch_base)

    # -- in the step ----------------------------------------------------------------
    def update(
        self,
        metadata: dict,
        y: Any,
        y_pred: Any,
        x: Any = None,
        image: Any = None,
    ) -> None:
        """Adds one training batch (inside the step). `x`: the model's input;
        `image`: the image source layer's output of this forward pass, if any."""
        sample_ids = metadata.get(fmt.SAMPLE_ID_KEY)
        if sample_ids is None:
            self._say(
                "the batches carry no x['sample_id'] (an integer index into "
                "filenames=, from image_dataset_from_directory or your own map)"
            )
            return
        if self.stats is None:
            self._say(self.reason)
            return
        self.stats.update_state(sample_ids, y, y_pred)
        if self.watchlist is not None:
            layout = self.watchlist.selector.layout
            if layout.image_source is None and x is not None:
                image = core.select_image(x, layout)
            if image is not None:
                image = keras.ops.stop_gradient(image)
                try:
                    self.watchlist.update_state(sample_ids, image, y, y_pred)
                except Exception as error:  # at trace time: training goes on
                    self.logger._warn(
                        "watchlist_off",
                        f"the watchlist is off: it failed inside the step "
                        f"({type(error).__name__}: {str(error).splitlines()[0]})",
                    )
                    self.watchlist = None

    def _say(self, reason: str) -> None:
        """One message per fit, at trace time, saying why the data map is off.

        A warning when the user asked for it (`sample_stats=True`); otherwise a log
        message, so that loggers used without ids stay quiet.
        """
        if self._said:
            return
        self._said = True
        message = f"the data map (per-sample statistics) is off: {reason}"
        logger = self.logger
        if logger.sample_stats is True or logger.num_samples is not None:
            logger._warn("sample_stats_off", message)
        else:
            _log.info("%s (sample_stats=False silences this)", message)

    # -- on the host ------------------------------------------------------------------
    def write(self, epoch: int, step: int, final: bool = False) -> None:
        """Reads the accumulators and hands one sample-stats value to the writer."""
        writer = self.logger._writer
        if self.stats is None or writer is None:
            return
        accumulators = self.stats.read()
        total = float(accumulators["counts"].sum())
        if final and self._written == (epoch, total):
            return  # the epoch end already wrote exactly this
        if total == 0:
            return
        self._written = (epoch, total)
        columns, dropped = derive(accumulators)
        if dropped:
            self.logger._warn(
                "sample_ids_out_of_range",
                f"{dropped} samples had a sample_id outside [0, {self.stats.num_samples}) "
                f"(num_samples=) or a label outside the classes; they are not counted",
            )
        header = {
            "epoch": int(epoch),
            "step": int(step),
            "final": bool(final),
            "num_samples": self.stats.num_samples,
            "num_classes": self.stats.num_classes,
            "head": self.stats.kind,
            "from_logits": self.stats.from_logits,
            "dropped": dropped,
            "class_names": self.logger.class_names,
        }
        writer.submit_summary(
            "train",
            fmt.SAMPLE_STATS_TAG,
            fmt.KIND_SAMPLE_STATS,
            int(step),
            encode(columns, header, self.logger.filenames),
        )
        if self.watchlist is not None:
            self._write_watchlist(epoch, step)
            if not final:  # the next epoch watches this epoch's top suspects
                top = ranked_suspects(columns, self.watchlist.size)
                seen = columns["count"][top] > 0
                self.watchlist.watch(top[seen], step=int(step))
        self._epoch_base = int(step)

    def _write_watchlist(self, epoch: int, step: int) -> None:
        """Hands this epoch's watchlist captures to the writer, as one record."""
        import dataclasses
        import time

        from tb_batch_images import record

        logger, selector = self.logger, self.watchlist.selector
        arrays = self.watchlist.read()
        if arrays is None:
            return
        batch = watchlist.captured_batch(
            arrays, epoch, step, self._epoch_base, selector, time.time()
        )
        if logger._adapter is not None:
            logger._adapter.prepare_display(selector.layout)
        options = dataclasses.replace(logger._record_options, selection="watchlist")
        sequence, self._watchlist_records = (
            self._watchlist_records,
            self._watchlist_records + 1,
        )
        writer = logger._writer
        task, from_logits = logger._task, logger._from_logits

        def build() -> list[bytes]:  # on the writer thread: encoding takes time
            return record.build_elements(
                batch,
                sequence,
                writer.dropped("train"),
                selector,
                options,
                task,
                from_logits,
                logger._warn,
            )

        writer.submit_summary(
            "train", fmt.WATCHLIST_TAG, fmt.KIND_WATCHLIST, int(step), build
        )


def _in_scope(model: keras.Model, make: Any) -> Any:
    """Variables made under the model's tf.distribute strategy, where there is one."""
    if keras.backend.backend() == "tensorflow":
        with model.distribute_strategy.scope():
            return make()
    return make()


def _one_process() -> bool:
    import jax

    return jax.process_count() == 1
