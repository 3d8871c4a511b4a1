"""JAX: the step keeps its capture in the metrics state; the host reads it per execution.

Keras's JAX trainer runs `model.train_step(state, data)` as a pure function of a state
it threads from step to step: jit-compiled, in a Python loop over
`steps_per_execution` steps (Keras 3.15) or a `lax.scan` inside one compiled function
(Keras 3.16). So the capture lives in that state: `step_slots.StepSlots`, a Keras
metric attached to the model while the logger is installed, which each step updates
inside `compute_metrics` (it counts itself, decides whether it is logged, and keeps
its selection in its slot). After each execution the adapter reads the slots from
the state the execution returned, converting them to numpy only when the execution
held a logged step; steps named by `log_steps` are written into the state before the
execution. This needs the picture's layout before any step runs, from the model's
declared inputs (`keras.Input`); a model without them (subclassed) falls back to the
logs path of `logs.LogsAdapter` (every step with `steps_per_execution=1`, the last
step of each execution otherwise).

Under `keras.distribution` the slots are replicated, so process 0 reads them from its
own devices: no process waits on another beyond what the step already synchronises.
Only process 0 writes.
"""

from __future__ import annotations

from typing import Any

import jax
import keras
import numpy as np

from tb_batch_images import contract
from tb_batch_images.capture import keras_internals, metadata_keys, specs, watchlist
from tb_batch_images.capture.backends.base import (
    STASHED_IMAGE,
    STASHED_Y_PRED,
    Unsupported,
)
from tb_batch_images.capture.backends.logs import LogsAdapter
from tb_batch_images.capture.selector import SampleSelector
from tb_batch_images.capture.step_slots import StepSlots


class JaxAdapter(LogsAdapter):
    backend = "jax"
    state_arguments = 1  # train_step(state, data)

    def __init__(self, model: keras.Model, host: Any):
        super().__init__(model, host)
        self.slots: dict[str, StepSlots] = {}  # empty: the logs path
        self._armed: dict[str, list[int] | None] = {}

    def check_supported(self) -> None:
        is_nnx = getattr(keras.config, "is_nnx_enabled", lambda: False)
        if is_nnx():
            raise Unsupported(
                "Keras's NNX path (it calls the class's train_step, not the "
                "instance's, so the logger cannot see the batch)"
            )

    def install(self) -> None:
        super().install()
        if self.image_source is not None:
            self._image_through_aux()
        self._create_slots()

    def _create_slots(self) -> None:
        """The train and validation slots, from the model's declared inputs; none
        (the logs path) where those do not say where and what the picture is."""
        model = self.model
        try:
            layout = watchlist.input_layout(model, self)
        except watchlist.WatchlistUnavailable:
            return
        slots = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
        created = {}
        for mode in ("train", "validation"):
            every_n, below = self.host.schedule.in_graph(mode)
            created[mode] = StepSlots(
                self.new_selector(layout),
                slots,
                every_n=every_n,
                below=below,
                name=f"tb_batch_images_{mode}_slots",
            )
        for metric in created.values():
            if not keras_internals.attach_metric(model, metric):
                return
        self.slots = created

    def _image_through_aux(self) -> None:
        """Brings the source layer's output out of `jax.value_and_grad`.

        The forward pass runs inside the differentiated `compute_loss_and_updates`;
        a tensor stashed there is a tracer of that inner trace and cannot be used
        after it. Its official exit is the aux output: the stashed output travels in
        y_pred (a dict that `compute_metrics`, wrapped in `Adapter.install`, unpacks
        before Keras's own `compute_metrics` sees y_pred).
        """
        model, stash = self.model, self._stash
        self._installed["compute_loss_and_updates"] = model.__dict__.get(
            "compute_loss_and_updates"
        )
        original = model.compute_loss_and_updates

        def compute_loss_and_updates(*args, **kwargs):
            stash.pop("image", None)
            loss, aux = original(*args, **kwargs)
            image = stash.pop("image", None)
            if image is None:
                return loss, aux
            unscaled_loss, y_pred, *rest = aux
            y_pred = {STASHED_Y_PRED: y_pred, STASHED_IMAGE: image}
            return loss, (unscaled_loss, y_pred, *rest)

        model.compute_loss_and_updates = compute_loss_and_updates

    def uninstall(self) -> None:
        for metric in self.slots.values():
            keras_internals.detach_metric(self.model, metric)
        self.slots = {}
        if "compute_loss_and_updates" in self._installed:
            previous = self._installed.pop("compute_loss_and_updates")
            if previous is None:
                self.model.__dict__.pop("compute_loss_and_updates", None)
            else:
                self.model.compute_loss_and_updates = previous
        super().uninstall()

    # -- the slots path ----------------------------------------------------------------
    def begin_fit(self, start_step: int) -> None:
        super().begin_fit(start_step)
        self._armed = {}
        if self.slots:
            # Before Keras reads the state of the first step: the count starts at
            # the optimizer's step; nothing is filled yet.
            self.slots["train"].counter.assign(start_step)
            for metric in self.slots.values():
                metric.filled_step.assign(np.full(metric.slots, -1, np.int32))
                metric.want.assign(np.full(metric.slots, -1, np.int32))

    def begin_validation(self) -> None:
        super().begin_validation()
        if self.slots:
            validation = self.slots["validation"]
            validation.counter.assign(0)
            validation.filled_step.assign(np.full(validation.slots, -1, np.int32))

    def read_step(self) -> int | None:
        """The train counter, where Keras has put the state back into the variables
        (the epoch's start and end, validation): the logger asks only then."""
        if not self.slots:
            return super().read_step()
        try:
            return int(self.to_numpy(self.slots["train"].counter.value))
        except Exception:  # purged inside an epoch: the host's count stands
            return None

    def selector(self, mode: str) -> SampleSelector | None:
        if self.slots:
            return self.slots[mode].selector
        return super().selector(mode)

    def wants_capture(self, mode: str, x: Any) -> bool:
        if self.slots:
            return False  # the slots capture inside compute_metrics
        return super().wants_capture(mode, x)

    def step_begins(self, mode: str, x: Any) -> None:
        if not self.slots:
            super().step_begins(mode, x)

    def step_ends(self, mode: str, x: Any, result: Any) -> Any:
        if self.slots:
            return result
        return super().step_ends(mode, x, result)

    def steps_in_call(self, args: tuple) -> int | None:
        if int(getattr(self.model, "steps_per_execution", 1) or 1) == 1:
            return 1
        return None  # a super-batch, a scan: not known from outside

    def record_in_step(self, mode, metadata, x, y, y_pred, image) -> None:
        metric = self.slots.get(mode)
        if metric is None or not self.host.capturing(mode):
            return
        if contract.FILENAME_KEY in metadata:
            self.warn_strings()  # only an eager step gets strings this far
        layout = metric.selector.layout
        if layout.image_source is None:
            image = metadata_keys.picture_in(x, layout, self.options.image_key)
        if image is None:
            return
        try:
            metric.record(keras.ops.stop_gradient(image), metadata, y, y_pred)
        except specs.CaptureError as error:
            self.host.disable(mode, str(error))
        except Exception as error:  # never let logging stop training
            self.host.disable(
                mode,
                f"the capture failed inside the step ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''})",
            )

    def before_execution(self, mode: str, args: tuple) -> Any:
        if not self.slots:
            return super().before_execution(mode, args)
        return self.host.schedule.wanted(mode, self.slots[mode].slots)

    def prepare_call(self, mode: str, token: Any, args: tuple) -> tuple:
        """Steps off the regular schedule (`log_steps`) go into the state's `want`."""
        if not self.slots:
            return args
        _, extra = token
        metric = self.slots[mode]
        padded = (extra + [-1] * metric.slots)[: metric.slots]
        if not extra and not self._armed.get(mode):
            return args
        self._armed[mode] = padded if extra else None
        state, *rest = args
        values = keras_internals.jax_metric_values(self.model, state)
        positions = keras_internals.jax_metric_positions(self.model, [metric.want])
        if values is None or positions is None:
            self.host.warn(
                "jax_state",
                f"the JAX state of Keras {keras_internals.KERAS_VERSION} does not "
                "hold the metrics where the logger looks: log_steps= is off (the "
                "regular schedule goes on)",
            )
            return args
        values[positions[0]] = jax.numpy.asarray(padded, jax.numpy.int32)
        return (keras_internals.jax_state_with_metric_values(state, values), *rest)

    def after_execution(self, mode, token, result) -> list[dict[str, Any]]:
        if not self.slots:
            return super().after_execution(mode, token, result)
        wanted, _ = token
        metric = self.slots[mode]
        names = metric.readable()
        buffers = metric.buffers()
        state = result[1] if isinstance(result, tuple) and len(result) == 2 else None
        values = keras_internals.jax_metric_values(self.model, state)
        variables = [buffers[name] for name in names]
        positions = keras_internals.jax_metric_positions(self.model, variables)
        if values is None or positions is None:
            self.host.disable(
                mode,
                f"the JAX state of Keras {keras_internals.KERAS_VERSION} does not "
                "hold the metrics where the logger looks",
            )
            return []
        if not wanted or not self.is_writer():
            return []
        try:
            arrays = {
                name: self.to_numpy(values[position])
                for name, position in zip(names, positions, strict=True)
            }
            items = metric.collect(arrays, wanted)
            for item in items:
                item.update(self.origin(item["positions"], item["batch_size"]))
            return items
        except Exception as error:  # never let logging stop training
            self.host.warn("collect", f"could not read the captured batch ({error})")
            return []

    def logs_of(self, result: Any) -> Any:
        return result[0]  # train_step returns (logs, state)

    def with_logs(self, result: Any, logs: dict) -> Any:
        return logs, result[1]

    def is_compiling(self, x: Any) -> bool:
        leaves = jax.tree_util.tree_leaves(x)
        return any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)

    def is_writer(self) -> bool:
        return jax.process_index() == 0

    def _batch_devices(self) -> list[Any] | None:
        distribution = keras.distribution.distribution()
        if distribution is None:
            return None
        # The backend's mesh holds JAX devices, whether the distribution was built
        # from devices or from `keras.distribution.list_devices()` strings.
        mesh = distribution.device_mesh.backend_mesh
        axis = getattr(distribution, "batch_dim_name", None) or mesh.axis_names[0]
        devices = np.asarray(mesh.devices)
        index = list(mesh.axis_names).index(axis)
        # The devices along the batch axis, one per shard of the global batch.
        along = np.moveaxis(devices, index, 0).reshape(devices.shape[index], -1)
        return list(along[:, 0])

    def num_replicas(self) -> int:
        devices = self._batch_devices()
        return 1 if devices is None else len(devices)

    def place(self, arrays: dict) -> dict:
        distribution = keras.distribution.distribution()
        if distribution is None:
            return arrays
        mesh = distribution.device_mesh.backend_mesh
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        try:
            return {
                name: jax.lax.with_sharding_constraint(value, replicated)
                for name, value in arrays.items()
            }
        except Exception:  # eager (run_eagerly=True): already on the host's devices
            return arrays

    def to_numpy(self, value: Any):
        if not getattr(value, "is_fully_addressable", True):
            value = value.addressable_data(0)  # replicated: every copy is whole
        return np.asarray(value)

    def origin(self, positions, batch_size: int) -> dict[str, Any]:
        devices = self._batch_devices()
        if devices is None or batch_size <= 0:
            return {}
        shard = max(1, batch_size // len(devices))
        index = np.minimum(positions // shard, len(devices) - 1)
        return {
            "devices": index.astype(np.int64),
            "processes": np.asarray(
                [devices[i].process_index for i in index], np.int64
            ),
        }
