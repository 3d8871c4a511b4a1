"""TensorFlow: the chosen samples are copied into variables inside the compiled step.

On a chosen step (the regular schedule is decided in the graph from a step counter;
irregular steps are named by the host in a small `want` variable) a `tf.cond` copies
the `SampleSelector` arrays into fixed-shape variables, one slot per step of an
execution (`steps_per_execution`). The host reads those variables back after the
execution, in one call. Variables are `ON_READ` / `ONLY_FIRST_REPLICA`, so under a
`tf.distribute` strategy each replica writes its own copy and the host reads replica 0's
share of the batch.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tb_batch_images import contract
from tb_batch_images.capture import (
    flight,
    keras_internals,
    metadata_keys,
    specs,
    step_pixels,
)
from tb_batch_images.capture.backends.base import Adapter, CaptureHost, uses_xla
from tb_batch_images.capture.batch import slot_items
from tb_batch_images.capture.selector import VALUES_PER_SAMPLE, SampleSelector


class TensorFlowAdapter(Adapter):
    backend = "tensorflow"
    state_arguments = 0

    def __init__(self, model: keras.Model, host: CaptureHost):
        super().__init__(model, host)
        self.buffers: dict[str, ModeBuffers | None] = {}
        self.ring: CompositionRing | None = None
        self._flag = np.zeros(3, np.int64)  # the ring's counters, as last read

    def begin_fit(self, start_step: int) -> None:
        self.find_heads()
        self.buffers = {}
        self.ring = None
        self._flag = np.zeros(3, np.int64)

    def is_writer(self) -> bool:
        """False on the non-chief workers of multi-worker training."""
        strategy = self.model.distribute_strategy
        return bool(getattr(strategy.extended, "should_save_summary", True))

    def num_replicas(self) -> int:
        return int(self.model.distribute_strategy.num_replicas_in_sync)

    def read_step(self) -> int | None:
        buffers = self.buffers.get("train")
        return None if buffers is None else buffers.read_counter()

    def begin_validation(self) -> None:
        buffers = self.buffers.get("validation")
        if buffers is not None:
            buffers.set_counter(0)

    def selector(self, mode: str) -> SampleSelector | None:
        buffers = self.buffers.get(mode)
        return None if buffers is None else buffers.selector

    def wants_capture(self, mode: str, x: Any) -> bool:
        return self.buffers.get(mode) is not None

    def _capture(self, mode, x, metadata, y, y_pred, result, recorded=None):
        buffers = self.buffers[mode]
        image = metadata_keys.select_image(x, buffers.layout, metadata)
        buffers.capture(image, metadata, dense_boxes(y), y_pred, recorded)
        return result

    def record_flight(self, mode, metadata, recorded, result):
        """Every step's composition into the ring; its counters join the logs
        (popped in `after_execution`, read with them: no transfer of their own)."""
        if self.ring is None or not isinstance(result, dict):
            return result
        ids = metadata.get(contract.SAMPLE_ID_KEY)
        counters = self.ring.record(recorded["scalars"], ids)
        return {**result, flight.LOGS_KEY: counters}

    def before_execution(self, mode: str, args: tuple) -> Any:
        if mode not in self.buffers and self.host.capturing(mode):
            self._create_buffers(mode, args[-1])
        if mode == "train" and self.ring is None and self.flight is not None:
            with self.model.distribute_strategy.scope():
                self.ring = CompositionRing(self.host.global_step)
        buffers = self.buffers.get(mode)
        if buffers is None:
            return []
        wanted, extra = self.host.schedule.wanted(mode, buffers.slots)
        if extra or buffers.armed:
            buffers.arm(extra)  # a host write only around irregular steps
        return wanted

    def after_execution(
        self, mode: str, wanted: Any, result: Any
    ) -> list[dict[str, Any]]:
        counters = (
            result.pop(flight.LOGS_KEY, None) if isinstance(result, dict) else None
        )
        triggered = False
        if counters is not None and self.ring is not None:
            flag = np.asarray(counters, np.int64)
            triggered = flag[2] > self._flag[2]
            if triggered or self.ring.needs_reading(flag):
                self.flight_flush()
            self._flag = flag
        buffers = self.buffers.get(mode)
        if buffers is None:
            return []
        if triggered:  # every step of the execution a trigger may have filled
            steps = self.host.schedule.execution_steps(mode, buffers.slots)
            wanted = sorted(set(wanted) | set(steps))
        if not wanted:
            return []
        return buffers.collect(wanted)

    def flight_flush(self) -> None:
        if self.ring is not None:
            rows = self.ring.read()
            if rows is not None:
                self.host.composed(rows)

    def _create_buffers(self, mode: str, iterator: Any) -> None:
        model, host = self.model, self.host
        spec = getattr(iterator, "element_spec", None)
        if spec is None:
            host.disable(mode, "the data iterator has no element_spec")
            self.buffers[mode] = None
            return
        spec = tf.nest.map_structure(keras_internals.one_replica_spec, spec)
        x_spec, y_spec, sample_weight_spec = keras.utils.unpack_x_y_sample_weight(spec)
        x_spec = specs.map_specs(x_spec, _array_spec)
        # Errors the user must fix to run at all: raised, with what to do.
        metadata_keys.check_sample_weight_spec(
            specs.map_specs(sample_weight_spec, _array_spec)
        )
        metadata_keys.check_metadata_specs(x_spec, uses_xla(model))
        # A dimension the data leaves unknown takes the model's Input's, if fixed.
        x_spec = specs.with_model_shapes(
            x_spec, specs.model_input_shapes(model, x_spec), concrete=False
        )
        try:
            layout = specs.layout_for(
                x_spec,
                self.options.image_key,
                self.options.max_image_size,
                keras.config.image_data_format(),
            )
            layout = self.source_layout(layout, self._source_spec())
        except specs.CaptureError as error:
            self.buffers[mode] = None
            host.disable(mode, str(error))
            return
        selector = self.new_selector(layout)
        selector.antialias = not uses_xla(model)  # XLA cannot antialias a resize
        every_n, below = host.schedule.in_graph(mode)
        with model.distribute_strategy.scope():
            self.buffers[mode] = ModeBuffers(
                selector,
                slots=max(1, int(getattr(model, "steps_per_execution", 1) or 1)),
                start_counter=host.global_step if mode == "train" else 0,
                every_n=every_n,
                below=below,
            )

    def _source_spec(self) -> Any:
        """The symbolic output of the source layer (its shape and dtype), or None."""
        if self.image_source is None:
            return None
        try:
            return self.image_source.layer.output
        except (AttributeError, ValueError) as error:
            raise specs.CaptureError(
                f"the output shape of {self.image_source.name!r} is unknown ({error}); "
                f"pass image_layer= naming another layer, or image_layer=False"
            ) from None


def _array_spec(spec: Any) -> Any:
    if isinstance(spec, tf.TensorSpec):
        shape = tuple(spec.shape.as_list()) if spec.shape.rank is not None else ()
        dtype = "string" if spec.dtype == tf.string else spec.dtype.name
        return specs.ArraySpec(shape, dtype)
    return spec


def dense_boxes(y: Any) -> Any:
    """`y` with its RaggedTensors padded with -1 (ragged boxes and labels from
    `tf.data`: padding is a label of -1, as Keras pads boxes)."""
    if not isinstance(y, dict):
        return y
    return tf.nest.map_structure(
        lambda value: (
            value.to_tensor(default_value=-1)
            if isinstance(value, tf.RaggedTensor)
            else value
        ),
        y,
    )


def scatter_rows(variable: tf.Variable, indices: Any, rows: Any) -> None:
    """Writes `rows` at `indices` of `variable`, in place (a copy of the whole
    variable costs more than the capture itself on a CPU). Under a tf.distribute
    strategy, whose on-read variables cannot scatter, the scattered copy is assigned."""
    if tf.distribute.has_strategy():
        variable.assign(
            tf.tensor_scatter_nd_update(variable.read_value(), indices, rows)
        )
    else:
        variable.scatter_nd_update(indices, rows)


class ModeBuffers:
    """The capture variables of one mode (train or validation) and their graph code.

    Create in cross-replica context (outside `strategy.run`), under the model's
    strategy scope. `capture` runs inside the step; the `arm`/`collect` methods run on
    the training thread between executions.
    """

    def __init__(
        self,
        selector: SampleSelector,
        slots: int,
        start_counter: int,
        every_n: int = 0,
        below: int = 0,
    ):
        self.selector = selector
        self.layout = layout = selector.layout
        self.slots = slots
        # The regular schedule is decided in the graph, so regular steps need no
        # write from the host: every `every_n`-th count, and counts below `below`.
        # `want` adds steps the host names (arm) for irregular schedules.
        self.every_n = every_n
        self.below = below
        self._reader = None  # built on first collect, after the step was traced

        def variable(initial, dtype, name):
            return tf.Variable(
                initial,
                dtype=dtype,
                trainable=False,
                name=f"tb_batch_images_{name}",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )

        n = selector.samples
        stored_dtype = tf.as_dtype(layout.stored_dtype)
        values = VALUES_PER_SAMPLE
        self.counter = variable(start_counter, tf.int64, "counter")
        self.want = variable(
            tf.fill([slots], tf.constant(-1, tf.int64)), tf.int64, "want"
        )
        self.armed: list[int] | None = None  # what `want` holds, mirrored on the host
        self.filled_step = variable(
            tf.fill([slots], tf.constant(-1, tf.int64)), tf.int64, "filled_step"
        )
        self.count = variable(tf.zeros([slots], tf.int32), tf.int32, "count")
        self.batch_size = variable(tf.zeros([slots], tf.int32), tf.int32, "batch_size")
        self.positions = variable(tf.zeros([slots, n], tf.int32), tf.int32, "positions")
        self.images = variable(
            tf.zeros([slots, n, *layout.stored_shape], stored_dtype),
            stored_dtype,
            "images",
        )
        self.image_stats = variable(tf.zeros([slots, n, 4]), tf.float32, "image_stats")
        self.labels = variable(tf.zeros([slots, n, values]), tf.float32, "labels")
        self.outputs = variable(tf.zeros([slots, n, values]), tf.float32, "outputs")
        self.output_stats = variable(
            tf.zeros([slots, n, 3]), tf.float32, "output_stats"
        )
        self.losses = variable(tf.zeros([slots, n]), tf.float32, "losses")
        # The flight recorder's step scalars (`flight.SCALARS`), where it is on.
        self.flight = variable(
            tf.zeros([slots, len(flight.SCALARS)]), tf.float32, "flight"
        )
        self.has_flight = False
        self.sample_ids = variable(
            tf.zeros([slots, n], tf.int64), tf.int64, "sample_ids"
        )
        self.filenames = (
            variable(tf.fill([slots, n], ""), tf.string, "filenames")
            if layout.has_filename
            else None
        )
        heads = selector.heads
        self.head_losses = (
            None
            if heads is None
            else variable(
                tf.zeros([slots, n, len(heads.names)]), tf.float32, "head_losses"
            )
        )
        self.image_sizes = (
            variable(tf.zeros([slots, n, 4], tf.int32), tf.int32, "image_sizes")
            if layout.dynamic_size
            else None
        )
        # Detection: the chosen samples' boxes (`capture.boxes`), where the logger
        # reads boxes; predicted ones where it can decode them.
        self.boxes = self.box_classes = self.box_counts = None
        self.predicted_boxes = self.predicted_box_classes = None
        self.predicted_box_scores = self.predicted_box_counts = None
        box_capture = selector.boxes
        if box_capture is not None:
            cap = box_capture.max_boxes
            for prefix in ("", "predicted_") if box_capture.decoder else ("",):
                setattr(
                    self,
                    f"{prefix}boxes",
                    variable(
                        tf.zeros([slots, n, cap, 4]), tf.float32, f"{prefix}boxes"
                    ),
                )
                setattr(
                    self,
                    f"{prefix}box_classes",
                    variable(tf.zeros([slots, n, cap]), tf.float32, f"{prefix}classes"),
                )
                setattr(
                    self,
                    f"{prefix}box_counts",
                    variable(
                        tf.zeros([slots, n], tf.int32), tf.int32, f"{prefix}counts"
                    ),
                )
            if box_capture.decoder:
                self.predicted_box_scores = variable(
                    tf.zeros([slots, n, cap]), tf.float32, "predicted_scores"
                )
        # Dense (per-pixel) label and output maps at the stored picture's size: made
        # before the step is traced, so for every model (whether its output is a map
        # is known only then); 8 bytes per stored pixel and sample.
        self.label_maps = self.output_maps = None
        if not layout.dynamic_size:
            map_shape = [slots, n, *layout.stored_shape[:2]]
            self.label_maps = variable(tf.zeros(map_shape), tf.float32, "label_maps")
            self.output_maps = variable(tf.zeros(map_shape), tf.float32, "output_maps")

    # -- in the graph ---------------------------------------------------------
    def capture(
        self,
        image: tf.Tensor,
        metadata: dict,
        y: Any,
        y_pred: Any,
        recorded: Any = None,
    ) -> None:
        """Counts the step and, if it is wanted or triggered, copies the chosen
        samples."""
        current = self.counter.assign_add(1) - 1
        hit = tf.reduce_any(tf.equal(self.want, current))
        if self.every_n:
            hit = tf.logical_or(hit, tf.equal(current % self.every_n, 0))
        if self.below:
            hit = tf.logical_or(hit, tf.less(current, self.below))
        if recorded is not None:
            hit = tf.logical_or(hit, recorded["trigger"] > 0)
            self.has_flight = True
        # Any `slots` consecutive counts have distinct residues: one slot each.
        slot = tf.cast(current % self.slots, tf.int32)

        def copy() -> tf.Tensor:
            self._copy(slot, current, image, metadata, y, y_pred, recorded)
            return tf.constant(True)

        tf.cond(hit, copy, lambda: tf.constant(False))

    def _copy(self, slot, current, image, metadata, y, y_pred, recorded) -> None:
        updates = self.selector.select(image, metadata, y, y_pred, recorded)
        updates["filled_step"] = current
        if self.filenames is not None and contract.FILENAME_KEY in metadata:
            names = tf.reshape(metadata[contract.FILENAME_KEY], [-1])
            updates["filenames"] = tf.gather(names, updates["positions"])
        for name, value in updates.items():
            variable_ = getattr(self, name)
            value = tf.cast(value, variable_.dtype)
            if name == "images" and None not in tuple(value.shape[1:3]):
                # Pictures of a size unknown at install: a graph traced with their
                # concrete size (Keras 3.16 retraces per shape) fits them at their
                # own size (`step_pixels`), smaller than the buffer: pad them in.
                value = step_pixels.padded_to(value, variable_.shape[1:])
            if self.slots == 1:
                variable_.assign(tf.reshape(value, variable_.shape))
            else:  # this slot only
                scatter_rows(variable_, [[slot]], value[tf.newaxis])

    # -- on the training thread ----------------------------------------------
    def arm(self, extra: list[int]) -> None:
        """Sets the steps off the regular schedule to capture in the next execution."""
        padded = (extra + [-1] * self.slots)[: self.slots]
        if padded != (self.armed or [-1] * self.slots):
            self.want.assign(np.asarray(padded, np.int64))
        self.armed = padded if extra else None

    def read_counter(self) -> int:
        return int(self.counter.numpy())

    def set_counter(self, value: int) -> None:
        """Restarts the step count (validation runs); forgets earlier captures."""
        self.counter.assign(value)
        self.filled_step.assign(np.full([self.slots], -1, np.int64))

    def collect(self, expected: list[int]) -> list[dict[str, Any]]:
        """Copies the captured steps to host memory, one dict per step.

        `expected` are the counts the last execution should have captured. Counts
        are unique within a run (validation restarts its count with `set_counter`,
        which clears `filled_step`), so a slot holding an expected count was filled
        in this execution; an expected step that did not run (a short last
        execution) is simply absent.
        """
        arrays = {name: value.numpy() for name, value in self._read_all().items()}
        return slot_items(arrays, expected, self.slots)

    def _readable(self) -> dict[str, tf.Variable]:
        names = self.selector.slot_arrays(
            sample_ids=self.layout.has_sample_id,
            filenames=self.filenames is not None,
            image_sizes=self.image_sizes is not None,
            flight=self.has_flight,
        )
        return {name: getattr(self, name) for name in names}

    def _read_all(self) -> dict[str, tf.Tensor]:
        """All capture variables in one call (one host round trip, one snapshot)."""
        if self._reader is None:
            variables = self._readable()
            self._reader = tf.function(
                lambda: {name: v.read_value() for name, v in variables.items()}
            )
        return self._reader()


class CompositionRing:
    """Every training step's composition, kept on the device between host reads.

    A ring of `steps` rows (the step scalars of `flight.SCALARS`, where the step's ids
    start in the id ring, how many) and a flat ring of `ids` sample ids; three
    counters (steps written, ids written, triggers) leave each execution in its logs,
    so the host reads the rings only when half full, at a trigger and at the end.
    Made once per fit under the model's strategy scope, before the step is traced.
    """

    def __init__(self, start_step: int, steps: int = 4096, ids: int = 2**18):
        self.start_step = int(start_step)
        self.steps, self.size = steps, ids
        self._read_rows = self._read_ids = 0  # already handed to the host
        self._reader = None

        def variable(initial, dtype, name):
            return tf.Variable(
                initial,
                dtype=dtype,
                trainable=False,
                name=f"tb_batch_images_{name}",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )

        self.scalars = variable(
            tf.zeros([steps, len(flight.SCALARS)]), tf.float32, "ring_scalars"
        )
        self.spans = variable(tf.zeros([steps, 2], tf.int64), tf.int64, "ring_spans")
        self.ids = variable(tf.fill([ids], -1), tf.int32, "ring_ids")
        # steps written, ids written, triggers
        self.counters = variable(tf.zeros([3], tf.int64), tf.int64, "ring_counters")
        self.has_ids = False

    # -- in the graph ---------------------------------------------------------
    def record(self, scalars: Any, ids: Any) -> tf.Tensor:
        counters = self.counters.read_value()
        written, position = counters[0], counters[1]
        row = written % self.steps
        count = tf.constant(0, tf.int64)
        if ids is not None:
            self.has_ids = True
            flat = tf.cast(tf.reshape(ids, [-1]), tf.int32)[: self.size // 4]
            count = tf.cast(tf.shape(flat)[0], tf.int64)
            at = (position + tf.range(count)) % self.size
            scatter_rows(self.ids, at[:, tf.newaxis], flat)
        scatter_rows(self.scalars, [[row]], tf.cast(scalars, tf.float32)[tf.newaxis])
        scatter_rows(self.spans, [[row]], tf.stack([position, count])[tf.newaxis])
        triggered = tf.cast(scalars[0] > 0, tf.int64)
        return self.counters.assign(
            tf.stack([written + 1, position + count, counters[2] + triggered])
        )

    # -- on the training thread ----------------------------------------------
    def needs_reading(self, flag: np.ndarray) -> bool:
        """Whether the rings are half full since the last read (`flag`: counters)."""
        return (
            flag[0] - self._read_rows >= self.steps // 2
            or flag[1] - self._read_ids >= self.size // 2
        )

    def read(self) -> dict[str, Any] | None:
        """The rows written since the last read (steps, scalars, ids), or None."""
        if self._reader is None:
            variables = {
                "scalars": self.scalars,
                "spans": self.spans,
                "ids": self.ids,
                "counters": self.counters,
            }
            self._reader = tf.function(
                lambda: {name: v.read_value() for name, v in variables.items()}
            )
        arrays = {name: value.numpy() for name, value in self._reader().items()}
        rows = flight.ring_rows(arrays, self.start_step, self._read_rows, self.has_ids)
        self._read_rows = int(arrays["counters"][0])
        self._read_ids = int(arrays["counters"][1])
        return rows
