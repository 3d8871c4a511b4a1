"""PyTorch (and JAX without declared inputs): the chosen samples leave the step in
its logs.

The wrapped step adds the `SampleSelector` arrays to the logs it returns, under a
private key; the adapter pops them before Keras or any callback sees the logs, and
converts them to numpy only on the steps it logs. An eager step is seen one by one:
its wrapper runs in Python for every step (each step of a `steps_per_execution` loop
too), counts it, computes the selection only when the host wants that step, and pops
it. A compiled step (`torch.compile`, `jax.jit`) computes the selection every step (a
few gathers on `samples_per_batch` samples) and is seen per call of the function
Keras built: one step per call, or the last of a call's steps.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tb_batch_images import contract
from tb_batch_images.capture import metadata_keys, specs
from tb_batch_images.capture.backends.base import Adapter, CaptureHost
from tb_batch_images.capture.backends.symbolic_build import STRINGS_OFF_TENSORFLOW
from tb_batch_images.capture.batch import STEP_ARRAYS
from tb_batch_images.capture.selector import SampleSelector

LOGS_KEYS = {
    "train": "_tb_batch_images_train",
    "validation": "_tb_batch_images_validation",
}


class LogsAdapter(Adapter):
    """Shared by the JAX and PyTorch adapters."""

    def __init__(self, model: keras.Model, host: CaptureHost):
        super().__init__(model, host)
        self._selectors: dict[str, SampleSelector | None] = {}
        self._counter = {"train": 0, "validation": 0}
        self._want_now: dict[str, bool] = {}
        self._eager: dict[str, bool] = {}  # the last call's steps ran eagerly
        self._pending: list[dict[str, Any]] = []

    def begin_fit(self, start_step: int) -> None:
        self.find_heads()
        self._selectors = {}
        self._counter = {"train": start_step, "validation": 0}
        self._pending = []

    def begin_validation(self) -> None:
        self._counter["validation"] = 0

    def read_step(self) -> int | None:
        return self._counter["train"]

    def selector(self, mode: str) -> SampleSelector | None:
        return self._selectors.get(mode)

    # -- in the step -------------------------------------------------------------
    def is_compiling(self, x: Any) -> bool:
        """True while the step is traced or compiled (it then captures every step)."""
        raise NotImplementedError

    def wants_capture(self, mode: str, x: Any) -> bool:
        if not self.host.capturing(mode):
            return False
        return self.is_compiling(x) or self._want_now.get(mode, False)

    def _capture(self, mode, x, metadata, y, y_pred, result):
        selector = self._selectors.get(mode)
        if selector is None:
            selector = self._selectors[mode] = self._new_selector(x, metadata)
        image = metadata_keys.select_image(x, selector.layout, metadata)
        arrays = self.place(selector.select(image, metadata, y, y_pred))
        logs = self.logs_of(result)
        if not isinstance(logs, dict):
            return result
        return self.with_logs(result, {**logs, LOGS_KEYS[mode]: arrays})

    def warn_strings(self) -> None:
        """Strings in the batch (only an uncompiled step gets them this far)."""
        self.host.warn(
            "strings_off_tensorflow",
            STRINGS_OFF_TENSORFLOW.format(backend=self.backend).removeprefix(
                "tb_batch_images: "
            )
            + " The pictures are logged without filenames.",
        )

    def _new_selector(self, x: Any, metadata: dict) -> SampleSelector:
        if isinstance(x, dict) and contract.FILENAME_KEY in x:
            self.warn_strings()
        x_spec = specs.map_specs(x)
        model_shapes = specs.model_input_shapes(self.model, x_spec)
        layout = specs.layout_for(
            specs.with_model_shapes(x_spec, model_shapes, concrete=True),
            self.options.image_key,
            self.options.max_image_size,
            keras.config.image_data_format(),
        )
        layout = self.source_layout(layout, metadata.get(metadata_keys.SOURCE_IMAGE))
        if layout is None:
            raise specs.CaptureError("the source layer's output has no shape")
        return self.new_selector(layout)

    def place(self, arrays: dict) -> dict:
        """Where the arrays live when they leave the step (JAX: replicated)."""
        return arrays

    def logs_of(self, result: Any) -> Any:
        return result

    def with_logs(self, result: Any, logs: dict) -> Any:
        return logs

    # -- on the host ----------------------------------------------------------------
    # An eager step is seen one by one (its wrapper runs in Python per step: also for
    # each step of a `steps_per_execution` loop); a compiled step only per call of
    # the function Keras built, whose logs are the last step's.
    def step_begins(self, mode: str, x: Any) -> None:
        if self.is_compiling(x):
            return
        self._eager[mode] = True
        self._want_now[mode] = self.host.schedule.wants_step(mode, self._counter[mode])

    def step_ends(self, mode: str, x: Any, result: Any) -> Any:
        if self.is_compiling(x):
            return result
        arrays = self._pop(mode, result)
        step = self._counter[mode]
        self._counter[mode] = step + 1
        if arrays is not None and self._want_now.get(mode):
            self._keep(step, arrays)
        return result

    def steps_in_call(self, args: tuple) -> int | None:
        """How many steps one call of the function runs (None: not known)."""
        return 1

    def before_execution(self, mode: str, args: tuple) -> Any:
        self._eager[mode] = False
        steps = self.steps_in_call(args)
        first = self._counter[mode]
        # A compiled step computes the selection every step; the host keeps it on
        # the steps it logs. Eager steps decide for themselves (step_begins).
        self._want_now[mode] = self.host.schedule.wants_step(mode, first)
        return first, steps

    def after_execution(self, mode, token, result) -> list[dict[str, Any]]:
        if not self._eager.get(mode):
            self._after_compiled_call(mode, token, result)
        items, self._pending = self._pending, []
        return items

    def _after_compiled_call(self, mode: str, token: Any, result: Any) -> None:
        first, steps = token
        arrays = self._pop(mode, self.logs_of(result))
        if steps is None:
            steps = 1
        last = first + steps - 1
        self._counter[mode] = first + steps
        wanted = [
            step
            for step in range(first, first + steps)
            if self.host.schedule.wants_step(mode, step)
        ]
        if arrays is not None and last in wanted:
            self._keep(last, arrays)
        if any(step != last for step in wanted):
            self.host.warn(
                "compiled_execution",
                f"with a compiled {self.backend} step and steps_per_execution > 1, "
                "only the last step of each execution reaches the logger: logged "
                "steps inside an execution are skipped (steps_per_execution=1, or "
                "a model built with keras.Input, logs them all)",
            )

    def _pop(self, mode: str, logs: Any) -> dict | None:
        """Takes this adapter's arrays out of the logs before Keras sees them."""
        logs = self.logs_of(logs) if not isinstance(logs, dict) else logs
        return logs.pop(LOGS_KEYS[mode], None) if isinstance(logs, dict) else None

    def _keep(self, step: int, arrays: dict) -> None:
        if not self.is_writer():
            return
        try:
            self._pending.append(self._item(step, arrays))
        except Exception as error:  # never let logging stop training
            self.host.warn("collect", f"could not read the captured batch ({error})")

    def _item(self, step: int, arrays: dict) -> dict[str, Any]:
        host = {name: self.to_numpy(value) for name, value in arrays.items()}
        count = int(host["count"])
        item: dict[str, Any] = {"counter": step, "batch_size": int(host["batch_size"])}
        for name in STEP_ARRAYS:
            value = host.get(name)
            item[name] = None if value is None else value[:count]
        item.update(self.origin(item["positions"], item["batch_size"]))
        return item

    def to_numpy(self, value: Any) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(value))

    def origin(self, positions: np.ndarray, batch_size: int) -> dict[str, Any]:
        """Which device / process each captured sample came from, where known."""
        return {}
