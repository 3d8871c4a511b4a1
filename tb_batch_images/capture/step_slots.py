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
step). After the execution the host reads the slots whose `filled_step` is a step it
expected (`collect`), from the state the execution returned.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tb_batch_images.capture.batch import STEP_ARRAYS
from tb_batch_images.capture.selector import VALUES_PER_SAMPLE, SampleSelector

# Variables that say what the slots hold, and the per-sample arrays (STEP_ARRAYS less
# the strings, which no JAX step carries).
_BOOKKEEPING = ("counter", "want", "filled_step", "count", "batch_size")
_ARRAYS = tuple(name for name in STEP_ARRAYS if name != "filenames")


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

    def buffers(self) -> dict[str, Any]:
        """Every variable by name (the ones this model has)."""
        names = (*_BOOKKEEPING, *_ARRAYS)
        return {
            name: getattr(self, name)
            for name in names
            if getattr(self, name, None) is not None
        }

    # -- in the step ---------------------------------------------------------------
    def record(self, image: Any, metadata: dict, y: Any, y_pred: Any) -> None:
        """Counts the step and, if it is wanted, keeps its capture in its slot."""
        ops = keras.ops
        current = self.counter.value
        hit = ops.any(ops.equal(self.want.value, current))
        if self.every_n:
            hit = ops.logical_or(hit, ops.equal(current % self.every_n, 0))
        if self.below:
            hit = ops.logical_or(hit, ops.less(current, self.below))
        slot = ops.expand_dims(ops.expand_dims(current % self.slots, 0), 0)
        named = [
            (name, buffer)
            for name, buffer in self.buffers().items()
            if name not in ("counter", "want")
        ]

        def keep():
            return [buffer.value for _, buffer in named]

        def write():
            arrays = self.selector.select(image, metadata, y, y_pred)
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
                    value = _padded(value, buffer.shape[1:])
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
        selector = self.selector
        names = ["filled_step", "count", "batch_size", "positions", "images"]
        names.append("image_stats")
        if selector.label_shape is not None:
            names.append("labels")
        if selector.output_shape is not None:
            names += ["outputs", "output_stats"]
        if selector.has_loss:
            names.append("losses")
        if self.saw_sample_ids:
            names.append("sample_ids")
        if selector.has_head_losses:
            names.append("head_losses")
        if self.image_sizes is not None:
            names.append("image_sizes")
        if selector.maps is not None:
            names.append("output_maps")
            if selector.maps.has_label_map:
                names.append("label_maps")
        return names

    def collect(self, arrays: dict[str, np.ndarray], expected: list[int]) -> list:
        """The captured steps (one dict each) among `expected`, from numpy copies of
        the buffers (`arrays`, the names of `readable`)."""
        filled = arrays["filled_step"]
        captured = []
        for step in expected:
            slot = step % self.slots
            if int(filled[slot]) != step:
                continue  # a step that did not run (a short last execution)
            count = int(arrays["count"][slot])
            item: dict[str, Any] = {
                "counter": step,
                "batch_size": int(arrays["batch_size"][slot]),
            }
            for name in STEP_ARRAYS:
                value = arrays.get(name)
                item[name] = None if value is None else value[slot, :count]
            captured.append(item)
        return captured


def _padded(images: Any, shape: Any) -> Any:
    """[n, h, w, c] images padded (bottom, right) to the buffer's [n, H, W, c]."""
    height, width = int(images.shape[1]), int(images.shape[2])
    if (height, width) == tuple(shape[1:3]):
        return images
    return keras.ops.pad(
        images, [[0, 0], [0, shape[1] - height], [0, shape[2] - width], [0, 0]]
    )
