"""Capture slots in the model's metrics state: the step decides, and keeps, its own capture.

On JAX the training step is a pure function of a state that Keras threads through
every step: in a Python loop (Keras 3.15) or a `lax.scan` over `steps_per_execution`
steps inside one compiled function (Keras 3.16). A step cannot hand its arrays to the
host one by one there; it can only change the state. So, like the TensorFlow
adapter's variables, `StepSlots` is a `keras.metrics.Metric` (its variables join the
metrics state while the logger is attached) holding one slot per step of an
execution: the step counts itself (`counter`), decides in the step whether it is
wanted (the regular schedule, or a step the host named in `want` before the
execution), and if so writes the `SampleSelector` arrays of its batch into slot
`counter % slots`, under `keras.ops.cond` (the selection itself runs only on a wanted
step: a detector's box decoder too). After the execution the host reads the slots whose `filled_step` is a step it
expected (`collect`), from the state the execution returned.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tb_batch_images.capture import flight, step_pixels
from tb_batch_images.capture.batch import STEP_ARRAYS, slot_items
from tb_batch_images.capture.selector import VALUES_PER_SAMPLE, SampleSelector

# Variables that say what the slots hold, and the per-sample arrays (STEP_ARRAYS less
# the strings, which no JAX step carries).
_BOOKKEEPING = ("counter", "want", "filled_step", "count", "batch_size")
_ARRAYS = (*(name for name in STEP_ARRAYS if name != "filenames"), "flight")


class StepSlots(keras.metrics.Metric):
    """`slots` capture slots for one mode (train or validation), filled in the step."""

    def __init__(
        self,
        selector: SampleSelector,
        slots: int,
        every_n: int = 0,
        below: int = 0,
        name: str = "tb_batch_images_slots",
    ):
        super().__init__(name=name)
        self.selector = selector
        self.slots = slots
        # The regular schedule, decided in the step: every `every_n`-th count, and
        # counts below `below` (validation); `want` adds the steps the host names.
        self.every_n = every_n
        self.below = below
        self.saw_sample_ids = False  # set when traced: the batches carry ids
        self.saw_flight = False  # set when traced: the flight recorder is on
        layout = selector.layout
        n = selector.samples
        heads = selector.heads

        def variable(shape, name, dtype="float32", value=0):
            return self.add_variable(
                shape=shape,
                initializer=keras.initializers.Constant(value),
                dtype=dtype,
                name=name,
            )

        self.counter = variable((), "counter", "int32")
        self.want = variable((slots,), "want", "int32", -1)
        self.filled_step = variable((slots,), "filled_step", "int32", -1)
        self.count = variable((slots,), "count", "int32")
        self.batch_size = variable((slots,), "batch_size", "int32")
        self.positions = variable((slots, n), "positions", "int32")
        self.images = variable(
            (slots, n, *layout.stored_shape), "images", layout.stored_dtype
        )
        self.image_stats = variable((slots, n, 4), "image_stats")
        self.labels = variable((slots, n, VALUES_PER_SAMPLE), "labels")
        self.outputs = variable((slots, n, VALUES_PER_SAMPLE), "outputs")
        self.output_stats = variable((slots, n, 3), "output_stats")
        self.losses = variable((slots, n), "losses")
        self.sample_ids = variable((slots, n), "sample_ids", "int32")
        # The flight recorder's step scalars (`flight.SCALARS`) of a training step.
        self.flight = variable((slots, len(flight.SCALARS)), "flight")
        self.head_losses = (
            None
            if heads is None
            else variable((slots, n, len(heads.names)), "head_losses")
        )
        self.image_sizes = (
            variable((slots, n, 4), "image_sizes", "int32")
            if layout.dynamic_size
            else None
        )
        self.label_maps = self.output_maps = None
        if not layout.dynamic_size:
            map_shape = (slots, n, *layout.stored_shape[:2])
            self.label_maps = variable(map_shape, "label_maps")
            self.output_maps = variable(map_shape, "output_maps")
        # Detection (`bounding_box_format=`): the chosen samples' label boxes, and
        # the predicted ones where the logger can decode them (`capture.boxes`).
        self.boxes = self.box_classes = self.box_counts = None
        self.predicted_boxes = self.predicted_box_classes = None
        self.predicted_box_scores = self.predicted_box_counts = None
        box_capture = selector.boxes
        if box_capture is not None:
            cap = box_capture.max_boxes
            prefixes = ("", "predicted_") if box_capture.decoder else ("",)
            for prefix in prefixes:
                setattr(
                    self,
                    f"{prefix}boxes",
                    variable((slots, n, cap, 4), f"{prefix}boxes"),
                )
                setattr(
                    self,
                    f"{prefix}box_classes",
                    variable((slots, n, cap), f"{prefix}box_classes", value=-1),
                )
                setattr(
                    self,
                    f"{prefix}box_counts",
                    variable((slots, n), f"{prefix}box_counts", "int32"),
                )
            if box_capture.decoder:
                self.predicted_box_scores = variable(
                    (slots, n, cap), "predicted_box_scores"
                )

    def buffers(self) -> dict[str, Any]:
        """Every variable by name (the ones this model has)."""
        names = (*_BOOKKEEPING, *_ARRAYS)
        return {
            name: getattr(self, name)
            for name in names
            if getattr(self, name, None) is not None
        }

    # -- in the step ---------------------------------------------------------------
    def record(
        self, image: Any, metadata: dict, y: Any, y_pred: Any, recorded: Any = None
    ) -> None:
        """Counts the step and, if it is wanted (scheduled, named by the host, or
        triggered: `recorded`, the flight recorder's tensors), keeps its capture in
        its slot."""
        ops = keras.ops
        current = self.counter.value
        hit = ops.any(ops.equal(self.want.value, current))
        if self.every_n:
            hit = ops.logical_or(hit, ops.equal(current % self.every_n, 0))
        if self.below:
            hit = ops.logical_or(hit, ops.less(current, self.below))
        if recorded is not None:
            hit = ops.logical_or(hit, ops.greater(recorded["trigger"], 0))
            self.saw_flight = True
        slot = ops.expand_dims(ops.expand_dims(current % self.slots, 0), 0)
        named = [
            (name, buffer)
            for name, buffer in self.buffers().items()
            if name not in ("counter", "want")
        ]

        def keep():
            return [buffer.value for _, buffer in named]

        def write():
            arrays = self.selector.select(image, metadata, y, y_pred, recorded)
            if "sample_ids" in arrays:
                self.saw_sample_ids = True
            arrays["filled_step"] = current
            new = []
            for name, buffer in named:
                if name not in arrays:
                    new.append(buffer.value)
                    continue
                value = ops.cast(arrays[name], buffer.dtype)
                if name == "images":  # fitted to its own size (unknown size): pad
                    value = step_pixels.padded_to(value, buffer.shape[1:])
                row = ops.expand_dims(value, 0)
                new.append(ops.scatter_update(buffer.value, slot, row))
            return new

        values = ops.cond(hit, write, keep)
        for (_, buffer), value in zip(named, values, strict=True):
            buffer.assign(value)
        self.counter.assign(current + 1)

    # -- Keras's metric protocol ---------------------------------------------------
    def update_state(self, *args, **kwargs) -> None:
        """Nothing: the adapter calls `record` in the step."""

    def reset_state(self) -> None:
        """Nothing: Keras resets metrics each epoch; the slots span the fit."""

    def result(self) -> dict:
        return {}

    # -- on the host ---------------------------------------------------------------
    def readable(self) -> list[str]:
        """The buffers worth reading, as the traced step left them."""
        return self.selector.slot_arrays(
            sample_ids=self.saw_sample_ids,
            filenames=False,
            image_sizes=self.image_sizes is not None,
            flight=self.saw_flight,
        )

    def collect(self, arrays: dict[str, np.ndarray], expected: list[int]) -> list:
        """The captured steps (one dict each) among `expected`, from numpy copies of
        the buffers (`arrays`, the names of `readable`)."""
        return slot_items(arrays, expected, self.slots)


class CompositionSlots(keras.metrics.Metric):
    """Every training step's composition, in rings in the JAX metrics state.

    The same rings as the TensorFlow adapter's `CompositionRing` (`steps` rows of the
    step scalars of `flight.SCALARS` and of where the step's ids start in the flat
    `ids` ring and how many; three counters: steps written, ids written, triggers),
    written with `keras.ops` in every training step. The host reads the counters
    after each execution and the rings only when half full, at a trigger and at the
    end of an epoch (`flight.ring_rows`). int32 counters: 2**31 sample ids per fit.
    """

    def __init__(
        self, steps: int = 4096, ids: int = 2**18, name="tb_batch_images_composition"
    ):
        super().__init__(name=name)
        self.steps, self.size = steps, ids
        self.start_step = 0
        self.read_rows = self.read_ids = 0  # already handed to the host
        self.has_ids = False  # set when traced: the batches carry ids

        def variable(shape, name, dtype, value=0):
            return self.add_variable(
                shape=shape,
                initializer=keras.initializers.Constant(value),
                dtype=dtype,
                name=name,
            )

        self.scalars = variable((steps, len(flight.SCALARS)), "scalars", "float32")
        self.spans = variable((steps, 2), "spans", "int32")
        self.ids = variable((ids,), "ids", "int32", -1)
        self.counters = variable((3,), "counters", "int32")

    def buffers(self) -> dict[str, Any]:
        return {
            "scalars": self.scalars,
            "spans": self.spans,
            "ids": self.ids,
            "counters": self.counters,
        }

    # -- in the step ---------------------------------------------------------------
    def record(self, scalars: Any, ids: Any) -> None:
        ops = keras.ops
        counters = self.counters.value
        written, position = counters[0], counters[1]
        row = ops.reshape(written % self.steps, (1, 1))
        count = 0
        if ids is not None:
            self.has_ids = True
            flat = ops.cast(ops.reshape(ids, (-1,)), "int32")[: self.size // 4]
            count = int(flat.shape[0])
            at = (position + ops.arange(count, dtype="int32")) % self.size
            self.ids.assign(
                ops.scatter_update(self.ids.value, ops.expand_dims(at, 1), flat)
            )
        scalars = ops.cast(ops.reshape(scalars, (1, -1)), "float32")
        self.scalars.assign(ops.scatter_update(self.scalars.value, row, scalars))
        span = ops.reshape(ops.stack([position, ops.full((), count, "int32")]), (1, 2))
        self.spans.assign(ops.scatter_update(self.spans.value, row, span))
        triggered = ops.cast(ops.greater(scalars[0, 0], 0), "int32")
        self.counters.assign(
            ops.stack([written + 1, position + count, counters[2] + triggered])
        )

    # -- Keras's metric protocol ---------------------------------------------------
    def update_state(self, *args, **kwargs) -> None:
        """Nothing: the adapter calls `record` in the step."""

    def reset_state(self) -> None:
        """Nothing: Keras resets metrics each epoch; the rings span the fit."""

    def result(self) -> dict:
        return {}

    # -- on the host ---------------------------------------------------------------
    def begin_fit(self, start_step: int) -> None:
        """Empty rings; the first row is step `start_step` (before the first step)."""
        self.start_step = int(start_step)
        self.read_rows = self.read_ids = 0
        self.counters.assign(np.zeros(3, np.int32))

    def needs_reading(self, counters: np.ndarray) -> bool:
        """Whether the rings are half full since the last read."""
        return (
            int(counters[0]) - self.read_rows >= self.steps // 2
            or int(counters[1]) - self.read_ids >= self.size // 2
        )

    def rows(self, arrays: dict[str, np.ndarray]) -> dict[str, Any] | None:
        """The rows written since the last read, from numpy copies of `buffers`."""
        rows = flight.ring_rows(arrays, self.start_step, self.read_rows, self.has_ids)
        self.read_rows = int(arrays["counters"][0])
        self.read_ids = int(arrays["counters"][1])
        return rows
