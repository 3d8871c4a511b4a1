"""JAX: the per-step function Keras builds is wrapped, so every step's arrays are seen.

Keras's JAX trainer jit-compiles `model.train_step(state, data)` and, for
`steps_per_execution > 1`, calls it in a Python loop that returns only the last step's
logs. The adapter wraps that per-step function (through the trainer's
`_make_function`), so each step's arrays are popped from its own logs.

Under `keras.distribution` the arrays are constrained to be replicated inside the step,
so process 0 reads them from its own devices: no process waits on another beyond what
the step already synchronises. Only process 0 writes.
"""

from __future__ import annotations

from typing import Any

import jax
import keras
import numpy as np

from tb_batch_images.capture import keras_internals
from tb_batch_images.capture.backends.base import (
    STASHED_IMAGE,
    STASHED_Y_PRED,
    Unsupported,
)
from tb_batch_images.capture.backends.logs import LogsAdapter


class JaxAdapter(LogsAdapter):
    backend = "jax"
    state_arguments = 1  # train_step(state, data)

    def check_supported(self) -> None:
        is_nnx = getattr(keras.config, "is_nnx_enabled", lambda: False)
        if is_nnx():
            raise Unsupported(
                "Keras's NNX path (it calls the class's train_step, not the "
                "instance's, so the logger cannot see the batch)"
            )
        if keras_internals.jax_make_function(self.model) is None:
            raise Unsupported(
                f"the JAX trainer of Keras {keras_internals.KERAS_VERSION} (it has no "
                f"_make_function to build the step with)"
            )

    def install(self) -> None:
        super().install()
        model = self.model
        self._installed["_make_function"] = keras_internals.instance_make_function(
            model
        )
        make_function = keras_internals.jax_make_function(model)

        def per_step_make_function(step_function, *args, **kwargs):
            # Arguments this adapter does not know (out_shardings, ...) pass through.
            concatenate_outputs = kwargs.get(
                "concatenate_outputs", args[0] if args else False
            )
            if concatenate_outputs:  # predict: nothing of ours to take out
                return make_function(step_function, *args, **kwargs)

            def per_step(state, data):
                modes = self._modes_running
                for mode in modes:
                    self.before_step(mode)
                outputs, state = step_function(state, data)
                for mode in modes:
                    self.after_step(mode, outputs)
                return outputs, state

            return make_function(per_step, *args, **kwargs)

        keras_internals.set_jax_make_function(model, per_step_make_function)
        self._modes_running: tuple[str, ...] = ()
        if self.image_source is not None:
            self._image_through_aux()

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
        if "compute_loss_and_updates" in self._installed:
            previous = self._installed.pop("compute_loss_and_updates")
            if previous is None:
                self.model.__dict__.pop("compute_loss_and_updates", None)
            else:
                self.model.compute_loss_and_updates = previous
        if "_make_function" in self._installed:
            keras_internals.set_jax_make_function(
                self.model, self._installed.pop("_make_function")
            )
        super().uninstall()

    def before_execution(self, mode: str, iterator: Any) -> Any:
        self._modes_running = (mode,)
        return None

    def after_execution(self, mode, token, result):
        self._modes_running = ()
        return super().after_execution(mode, token, result)

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
