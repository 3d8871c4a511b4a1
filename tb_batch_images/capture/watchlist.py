"""The watchlist: a picture of each top suspect, from the training batches themselves.

At each epoch end the logger puts the `watchlist` sample ids with the highest suspect
score (`contract.rank_suspects`) on the watchlist. Inside the compiled training
step, `Watchlist.update_state` compares the step's `sample_id`s with the list; a
watched sample not yet captured this epoch is copied as a logged sample is (its
picture, label, the training pass's output and per-sample loss, through
`SampleSelector.take`: no second forward pass) into fixed-shape buffers. At the
next epoch end the host reads the buffers once and writes the captured samples as one
batch record under the `batch_images_watchlist` tag (docs/format.md).

Like `sample_stats.SampleStats`, `Watchlist` is a `keras.metrics.Metric` appended to the
model's metrics during `fit`, so its buffers are part of Keras's metrics state on every
backend (TensorFlow graph/XLA/`steps_per_execution`, the JAX stateless step, PyTorch).
Device memory: `watchlist` pictures at their logged size (float32 unless uint8 and
not downscaled) plus about 8 KiB each (32 watched 64x64x3 float32 pictures: 1.8 MB).
Each step compares `watchlist * batch` ids and copies at most `CAPTURES_PER_STEP` (8)
watched samples into the buffers: a ninth watched sample of the same batch waits for
its next appearance. On TensorFlow and JAX a step whose batch holds no watched sample
not yet captured skips the copy (`keras.ops.cond`: `tf.cond`, `lax.cond`); on PyTorch
every step copies (a condition there would read a flag back to the host each step).
"""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np

from tb_batch_images.capture import keras_internals, specs, step_pixels
from tb_batch_images.capture.batch import STEP_ARRAYS, CapturedBatch
from tb_batch_images.capture.selector import VALUES_PER_SAMPLE, SampleSelector

_log = logging.getLogger("tb_batch_images")

# Watched samples one step can capture: each step's copy costs this many samples'
# pictures and losses (measured: 32 a step cost about 8% of the benchmark CNN's CPU).
CAPTURES_PER_STEP = 8

# The arrays a capture keeps per watched sample: SampleSelector.take's per-sample
# keys, less the ids (the watchlist's own key), filenames (strings), and the per-head
# losses, dense maps and detection boxes, which the watchlist does not keep (the data
# map, and so the watchlist, is off for detectors). True sizes (`image_sizes`) are kept
# for pictures of unknown size only.
_NOT_BUFFERED = (
    "sample_ids",
    "filenames",
    "head_losses",
    "label_maps",
    "output_maps",
    "boxes",
    "box_classes",
    "box_counts",
    "predicted_boxes",
    "predicted_box_classes",
    "predicted_box_scores",
    "predicted_box_counts",
)
_BUFFERS = tuple(name for name in STEP_ARRAYS if name not in _NOT_BUFFERED)


class WatchlistUnavailable(ValueError):
    """The watchlist cannot be on for this model; the message says why."""


def input_layout(model: keras.Model, adapter: Any) -> specs.InputLayout:
    """The layout of the picture, from the model's declared inputs (before any step).

    The watchlist's buffers must exist before Keras builds the train function, so
    their shapes come from the model's inputs (or its image source layer's output),
    not from the data. Raises WatchlistUnavailable when those are unknown.
    """
    struct = keras_internals.inputs_struct(model)
    if struct is None:
        inputs = getattr(model, "inputs", None) or []
        if len(inputs) != 1:
            raise WatchlistUnavailable(
                "the model's inputs are unknown (a subclassed model without "
                "keras.Input); build it with keras.Input"
            )
        struct = inputs[0]
    try:
        x_specs = specs.map_specs(struct)
        layout = specs.layout_for(
            x_specs,
            adapter.options.image_key,
            adapter.options.max_image_size,
            keras.config.image_data_format(),
        )
        if adapter.image_source is not None:
            layout = adapter.source_layout(layout, adapter.image_source.layer.output)
    except (specs.CaptureError, AttributeError, ValueError) as error:
        raise WatchlistUnavailable(f"no picture input: {error}") from None
    if layout is None:
        raise WatchlistUnavailable("the image source layer's output has no shape")
    return layout


class Watchlist(keras.metrics.Metric):
    """Capture buffers for `size` watched sample ids, filled inside the train step."""

    def __init__(
        self,
        selector: SampleSelector,
        size: int | None = None,
        start_step: int = 0,
        name: str = "tb_batch_images_watchlist",
    ):
        """`selector.samples`: how many watched samples one step can capture (its
        `take` width); `size`: how many ids are watched (default: the same)."""
        super().__init__(name=name)
        self.selector = selector
        self.size = w = selector.samples if size is None else size
        if selector.samples > w:
            raise ValueError("the selector takes more samples than are watched")
        layout = selector.layout
        values = VALUES_PER_SAMPLE

        def variable(shape, name, dtype="float32", value=0):
            return self.add_variable(
                shape=shape,
                initializer=keras.initializers.Constant(value),
                dtype=dtype,
                name=name,
            )

        self.watch_ids = variable((w,), "watch_ids", "int32", -1)
        self.filled = variable((w,), "filled")  # 1 once captured this epoch
        self.step = variable((), "step", "int32")  # the global step of the next step
        self.captured_at = variable((w,), "captured_at", "int32", -1)
        self.batch_size = variable((w,), "batch_size", "int32")
        self.positions = variable((w,), "positions", "int32")
        self.images = variable((w, *layout.stored_shape), "images", layout.stored_dtype)
        self.image_stats = variable((w, 4), "image_stats")
        self.labels = variable((w, values), "labels")
        self.outputs = variable((w, values), "outputs")
        self.output_stats = variable((w, 3), "output_stats")
        self.losses = variable((w,), "losses")
        # Pictures of unknown size: fitted into max_image_size, padded here.
        self.image_sizes = (
            variable((w, 4), "image_sizes", "int32") if layout.dynamic_size else None
        )

    # -- in the step -------------------------------------------------------------
    def update_state(self, sample_ids: Any, image: Any, y: Any, y_pred: Any) -> None:
        """Copies the watched samples of this batch not captured yet (keras.ops): at
        most `selector.samples` of them a step, in watchlist order."""
        ops = keras.ops
        ids = ops.reshape(ops.cast(sample_ids, "int32"), [-1])
        watch = self.watch_ids.value
        match = ops.equal(watch[:, None], ids[None, :])  # [watched, batch]
        fresh = ops.logical_and(
            ops.any(match, axis=1),
            ops.logical_and(watch >= 0, self.filled.value < 0.5),
        )
        step = self.step.value
        names = ("filled", "captured_at", "batch_size", *_BUFFERS)
        named = [(name, getattr(self, name)) for name in names]
        named = [(name, buffer) for name, buffer in named if buffer is not None]

        def rows_and_values():
            """The rows this step writes (the first fresh ones, then any, rewritten
            as they are) and each buffer's new values for those rows."""
            index = ops.arange(self.size, dtype="float32") / float(self.size)
            order = ops.cast(fresh, "float32") * 2.0 - index
            rows = ops.cast(ops.top_k(order, self.selector.samples)[1], "int32")
            chosen = ops.take(fresh, rows, axis=0)
            position = ops.cast(ops.argmax(ops.cast(match, "int32"), axis=1), "int32")
            taken = self.selector.take(
                image,
                {},
                ops.stop_gradient(y),
                y_pred,
                ops.take(position, rows, axis=0),
            )
            batch = ops.cast(ops.shape(ids)[0], "int32")
            taken["filled"] = ops.ones_like(rows)
            taken["captured_at"] = ops.ones_like(rows) * step
            taken["batch_size"] = ops.ones_like(rows) * batch
            values = {}
            for name, buffer in named:
                if name not in taken:
                    continue
                old = ops.take(buffer.value, rows, axis=0)
                new = taken[name]
                if name == "images":  # fitted to its own size (JAX, torch): pad
                    new = step_pixels.padded_to(new, buffer.shape)
                mask = ops.reshape(chosen, [-1] + [1] * (len(old.shape) - 1))
                values[name] = ops.where(mask, ops.cast(new, old.dtype), old)
            return ops.expand_dims(rows, 1), values

        backend = keras.backend.backend()
        if backend == "tensorflow":
            # Most steps have no watched sample: skip the copy there (tf.cond), and
            # write only the chosen rows.
            from tb_batch_images.capture.backends.tensorflow import scatter_rows

            def capture_in_place():
                at, values = rows_and_values()
                for name, buffer in named:
                    if name in values:
                        scatter_rows(buffer.value, at, values[name])
                return ops.zeros((), "int32")

            ops.cond(ops.any(fresh), capture_in_place, lambda: ops.zeros((), "int32"))
            self.step.assign(step + 1)
            return

        def capture():
            at, values = rows_and_values()
            return [
                ops.scatter_update(buffer.value, at, values[name])
                if name in values
                else buffer.value
                for name, buffer in named
            ]

        if backend == "jax":  # lax.cond: no copy on a step with no watched sample
            new = ops.cond(
                ops.any(fresh), capture, lambda: [buffer.value for _, buffer in named]
            )
        else:  # PyTorch: a condition would read a flag back to the host every step
            new = capture()
        updates = [
            (buffer, value) for (_, buffer), value in zip(named, new, strict=True)
        ]
        updates.append((self.step, step + 1))
        for buffer, value in updates:  # assigned last: torch updates in place
            buffer.assign(value)

    # -- Keras's metric protocol ----------------------------------------------------
    def reset_state(self) -> None:
        """Nothing: Keras resets metrics each epoch; the host manages this state."""

    def result(self) -> dict:
        return {}

    # -- on the host -----------------------------------------------------------------
    def watch(self, sample_ids: np.ndarray, step: int | None = None) -> None:
        """Puts these ids on the watchlist (padded with -1); nothing captured yet."""
        padded = np.full(self.size, -1, np.int32)
        ids = np.asarray(sample_ids, np.int64)[: self.size]
        padded[: len(ids)] = ids
        self.watch_ids.assign(padded)
        self.filled.assign(np.zeros(self.size, np.float32))
        self.captured_at.assign(np.full(self.size, -1, np.int32))
        if step is not None:
            self.step.assign(np.asarray(step, np.int32))

    def read(self) -> dict[str, np.ndarray] | None:
        """The captured samples, in watchlist order (numpy), or None if none."""
        filled = _numpy(self.filled) > 0.5
        if not filled.any():
            return None
        rows = np.flatnonzero(filled)
        arrays = {"sample_ids": _numpy(self.watch_ids)[rows].astype(np.int64)}
        for name in ("captured_at", "batch_size", *_BUFFERS):
            if getattr(self, name) is not None:
                arrays[name] = _numpy(getattr(self, name))[rows]
        return arrays


def _numpy(variable: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable.value))


def captured_batch(
    arrays: dict[str, np.ndarray],
    epoch: int,
    step: int,
    epoch_base: int,
    selector: SampleSelector,
    wall_time: float,
) -> CapturedBatch:
    """The `CapturedBatch` of one epoch's watchlist captures (one record).

    Each sample's `batch` is the training batch of the epoch it was captured in;
    the record's `batch` is the first of those, its `batch_size` the largest.
    """
    order = np.argsort(arrays["captured_at"], kind="stable")
    arrays = {name: value[order] for name, value in arrays.items()}
    batches = np.maximum(arrays["captured_at"].astype(np.int64) - epoch_base, 0)
    # What the traced step never filled (no label, output or loss) stays None.
    known = {
        "labels": selector.label_shape is not None,
        "outputs": selector.output_shape is not None,
        "output_stats": selector.output_shape is not None,
        "losses": selector.has_loss,
    }
    per_sample = {
        name: arrays.get(name)
        for name in (*_BUFFERS, "sample_ids")
        if known.get(name, True)
    }
    # Filenames: the record builder maps sample ids to filenames=.
    return CapturedBatch(
        mode="train",
        step=int(step),
        epoch=int(epoch),
        batch=int(batches.min()),
        wall_time=wall_time,
        batch_size=int(arrays["batch_size"].max()),
        sample_batches=batches,
        **per_sample,
    )


__all__ = ["Watchlist", "WatchlistUnavailable", "captured_batch", "input_layout"]
