"""What every adapter shares: wrapping the model's steps and functions.

The step wrapper strips the metadata keys from `x`, runs the model's own step and hands
the step's tensors (`x`, `y`, and the `y_pred` the step passed to `compute_metrics`,
i.e. the training forward pass) to the backend's `_capture`. When the model starts with
preprocessing layers (`image_source.find_image_source`), the last one's `call` is wrapped to
stash its output during that same forward pass, and the stashed tensor is captured
instead of `x`'s image: the picture as the first learning layer received it, random
augmentations included, in the same trace (TF graph, JAX trace, torch eager step). The function wrapper
(around `model.train_function` / `model.test_function`) asks the backend for the
captured samples after each execution, and restores the model when `fit` ends with an
error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import keras

from tb_batch_images.capture import (
    heads,
    image_source,
    losses,
    metadata_keys,
    specs,
)
from tb_batch_images.capture.backends.symbolic_build import explain_strings
from tb_batch_images.capture.options import CaptureOptions
from tb_batch_images.capture.schedule import Schedule
from tb_batch_images.capture.selector import SampleSelector

# Under JAX the stashed output leaves the differentiated forward pass inside y_pred
# (the aux output of jax.value_and_grad), wrapped in a dict with these keys.
STASHED_Y_PRED = "_tb_batch_images_y_pred"
STASHED_IMAGE = "_tb_batch_images_image"
_STEP_NAMES = {"train": "train_step", "validation": "test_step"}
FUNCTION_NAMES = {"train": "train_function", "validation": "test_function"}


class Unsupported(Exception):
    """A backend, trainer or distribution the logger cannot capture from."""


class CaptureHost(Protocol):
    """What an adapter needs from the logger it captures for (`logger.session`)."""

    options: CaptureOptions
    schedule: Schedule
    global_step: int

    def warn(self, key: str, message: str) -> None:
        """One warning per key."""

    def disable(self, mode: str, reason: str) -> None:
        """Turns capturing off for a mode (train or validation), with one warning."""

    def unsupported(self, reason: str) -> None:
        """Turns the logger off for this fit, with one warning."""

    def capturing(self, mode: str) -> bool:
        """Whether the mode is still captured."""

    def owns_current_fit(self) -> bool:
        """Whether the fit() now running is the one this logger is part of."""

    def finish(self) -> None:
        """Writes what is queued and restores the model (fit ended by an error)."""

    def collected(self, mode: str, items: list[dict[str, Any]]) -> None:
        """Takes the samples an execution captured (one dict per step)."""


class Adapter:
    """Wraps one model's steps for one backend. Subclasses fill in the capture."""

    backend = "?"
    # How many leading positional arguments the backend's train_step takes before data.
    state_arguments = 0

    def __init__(self, model: keras.Model, host: CaptureHost):
        self.model = model
        self.host = host
        self.options = host.options
        self.unwrap = metadata_keys.model_takes_single_tensor(model)
        self._installed: dict[str, Any] = {}
        self._seen: dict[str, Any] = {}
        self._stash: dict[str, Any] = {}  # the source layer's output, this step
        self.step_ran: dict[str, bool] = {}
        self.image_source: image_source.ImageSource | None = None
        self.heads: heads.Heads | None = None
        self._undo_ready = False
        self._undo: Callable | None = None
        # Set by the logger: the data map, updated in every train step.
        self.data_map: Any = None
        self._running: tuple[str, dict] | None = None  # (mode, metadata) in a step

    # -- installing ------------------------------------------------------------------
    def install(self) -> None:
        """Wraps train_step/test_step so the next make_*_function picks them up."""
        model = self.model
        self.check_supported()
        metadata_keys.keep_stripping(model)
        self.image_source = image_source.find_image_source(
            model, self.options.image_layer
        )
        self.find_heads()
        self._installed = {"compute_metrics": model.__dict__.get("compute_metrics")}
        compute_metrics = model.compute_metrics
        seen, stash = self._seen, self._stash

        def recording_compute_metrics(x, y, y_pred, sample_weight=None):
            image = stash.get("image")
            if isinstance(y_pred, dict) and STASHED_Y_PRED in y_pred:
                image, y_pred = y_pred[STASHED_IMAGE], y_pred[STASHED_Y_PRED]
            seen["y"], seen["y_pred"] = y, y_pred
            running, data_map = self._running, self.data_map
            if running is not None:
                mode, metadata = running
                self.record_in_step(mode, metadata, x, y, y_pred, image)
                if data_map is not None and mode == "train":
                    data_map.update(metadata, y, y_pred, x=x, image=image)
            if image is not None:
                seen["image"] = keras.ops.stop_gradient(image)
            return compute_metrics(x, y, y_pred, sample_weight=sample_weight)

        model.compute_metrics = recording_compute_metrics
        for mode, step_name in _STEP_NAMES.items():
            self._installed[step_name] = model.__dict__.get(step_name)
            setattr(model, step_name, self._make_step(mode, getattr(model, step_name)))
            # make_*_function returns early when a function exists: rebuild it.
            setattr(model, FUNCTION_NAMES[mode], None)
        if self.image_source is not None:
            self._stash_output_of(self.image_source.layer)

    def _stash_output_of(self, layer: Any) -> None:
        """Wraps the instance's `call` so each forward pass stashes its output."""
        self._installed["source_call"] = (layer, layer.__dict__.get("call"))
        call, stash = layer.call, self._stash

        def stashing_call(*args, **kwargs):
            outputs = call(*args, **kwargs)
            stash["image"] = outputs
            return outputs

        layer.call = stashing_call

    def find_heads(self) -> None:
        """Which output gives the prediction and loss (raises ValueError for output=).

        Run at install and at every fit's start: a recompile may change the losses.
        """
        self.heads = heads.find_heads(self.model, self.options.output)

    def new_selector(self, layout: specs.InputLayout) -> SampleSelector:
        loss = getattr(self.model, "loss", None)
        found = self.heads
        return SampleSelector(
            layout,
            samples=self.options.samples_per_batch,
            selection=self.options.selection,
            loss_fn=losses.per_sample_loss_fn(loss),
            heads=found,
            task=losses.task_from_loss(
                loss if found is None else found.losses[found.chosen]
            )[0],
        )

    def source_layout(self, layout: specs.InputLayout, source_spec: Any) -> Any:
        """`layout` (from `x`) redone for the source layer's output, or None."""
        if self.image_source is None:
            return layout
        spec = specs.spec_of(source_spec) if source_spec is not None else None
        if spec is None:
            return None
        if layout.dynamic_size:  # the layer's output varies with its input
            spec = specs.unknown_size(spec)
        source = specs.layout_for(
            spec, None, self.options.max_image_size, keras.config.image_data_format()
        )
        return dataclasses.replace(
            source,
            image_key=layout.image_key,
            has_sample_id=layout.has_sample_id,
            has_filename=layout.has_filename,
            image_source=self.image_source.name,
            source_input_dtype=layout.input_dtype,
        )

    def prepare_display(self, layout: specs.InputLayout) -> None:
        """On the host: how to undo the source chain's Rescaling/Normalization.

        Read once from the layers (their parameters are fixed while training) and
        given to every layout of a source (train, validation, each fit).
        """
        if self.image_source is None or layout.image_source is None:
            return
        if not self._undo_ready:
            self._undo_ready = True
            try:
                self._undo = image_source.undo_value_layers(self.image_source.chain)
            except Exception as error:  # shown in the layer's units instead
                self._undo = None
                self.host.warn(
                    "undo_layers",
                    f"could not read the preprocessing layers' parameters ({error}); "
                    f"pictures are shown in {self.image_source.name}'s output units",
                )
        layout.undo = self._undo

    def check_supported(self) -> None:
        """Raises Unsupported for setups this backend cannot capture from."""

    def uninstall(self) -> None:
        """Restores the model's own train_step/test_step/compute_metrics, wrapped to
        take the metadata keys out of `x` (`metadata_keys.keep_stripping`).

        The functions built from our steps stay on the model: rebuilding them here
        would cost a second or more at the end of every fit(). Our wrapped functions
        rebuild clean functions themselves the next time they are called outside this
        logger's fit() (see `wrap_function`).
        """
        model = self.model
        if "source_call" in self._installed:
            layer, previous = self._installed.pop("source_call")
            if previous is None:
                layer.__dict__.pop("call", None)
            else:
                layer.call = previous
        for name in ("train_step", "test_step", "compute_metrics"):
            if name not in self._installed:
                continue
            previous = self._installed[name]
            if previous is None:
                model.__dict__.pop(name, None)
            else:
                setattr(model, name, previous)
        self._installed = {}
        # evaluate/predict after fit take the same batches as fit did.
        metadata_keys.keep_stripping(model)

    def _make_step(self, mode: str, original_step: Callable) -> Callable:
        state_arguments = self.state_arguments

        def step(*args):
            *state, data = args
            x = keras.utils.unpack_x_y_sample_weight(data)[0]
            self.step_begins(mode, x)
            return self.step_ends(mode, x, captured_step(*args))

        def captured_step(*args):
            *state, data = args
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            model_x, metadata = metadata_keys.strip_metadata(x, self.unwrap)
            data = keras.utils.pack_x_y_sample_weight(model_x, y, sample_weight)
            self.step_ran[mode] = True
            if len(state) != state_arguments or not self.wants_capture(mode, x):
                return self._run_step(mode, metadata, original_step, *state, data)
            self._seen.clear()
            self._stash.clear()
            try:
                result = self._run_step(mode, metadata, original_step, *state, data)
                seen = dict(self._seen)
            finally:
                self._seen.clear()
                self._stash.clear()
            if "y_pred" not in seen:
                # A custom step that never called compute_metrics.
                seen = {"y": y, "y_pred": None}
                self.host.warn(
                    "no_y_pred",
                    "the model's train_step does not call compute_metrics(x, y, "
                    "y_pred); predictions and loss are not logged",
                )
            if self.image_source is not None:
                if seen.get("image") is None:
                    self.host.disable(
                        mode,
                        f"the layer {self.image_source.name!r} was not called in the "
                        f"model's step; pass image_layer= naming the layer whose "
                        f"output to show, or image_layer=False to show x",
                    )
                    return result
                # The picture as the next layer received it, beside x's metadata.
                metadata = {**metadata, metadata_keys.SOURCE_IMAGE: seen["image"]}
            try:
                return self._capture(
                    mode, x, metadata, seen["y"], seen["y_pred"], result
                )
            except specs.CaptureError as error:
                self.host.disable(mode, str(error))
            except Exception as error:  # never let logging stop training
                self.host.disable(
                    mode,
                    f"the capture failed inside the step ({type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''})",
                )
            return result

        step.tb_batch_images_wrapper = True
        return step

    def _run_step(self, mode: str, metadata: dict, original_step: Callable, *args):
        """Runs the model's step; its compute_metrics sees which mode and ids."""
        self._running = (mode, metadata)
        try:
            return original_step(*args)
        finally:
            self._running = None

    # -- per backend -----------------------------------------------------------------
    def step_begins(self, mode: str, x: Any) -> None:
        """Called as each step starts (in the step: traced, or eager)."""

    def step_ends(self, mode: str, x: Any, result: Any) -> Any:
        """Called with each step's result; returns the result Keras gets."""
        return result

    def record_in_step(self, mode, metadata, x, y, y_pred, image) -> None:
        """Called inside the model's `compute_metrics` (where a step may change its
        metrics state), with the step's metadata, `x`, `y`, `y_pred` and the source
        layer's output (or None)."""

    def wants_capture(self, mode: str, x: Any) -> bool:
        """Whether this call of the step should compute the capture at all."""
        return self.host.capturing(mode)

    def _capture(self, mode, x, metadata, y, y_pred, result):
        """Captures the chosen samples of this step; returns the step's result."""
        raise NotImplementedError

    def begin_fit(self, start_step: int) -> None:
        """on_train_begin: the global step training starts at."""

    def begin_validation(self) -> None:
        """on_test_begin during fit: validation counts its batches from 0."""

    def read_step(self) -> int | None:
        """The exact global training step, where the backend counts it; else None."""
        return None

    def is_writer(self) -> bool:
        """False where another process writes (multi-worker, multi-process)."""
        return True

    def num_replicas(self) -> int:
        return 1

    def before_execution(self, mode: str, args: tuple) -> Any:
        """Called before each execution of the mode's function (`args`: what Keras
        passes it); returns a token for `after_execution`."""
        return None

    def prepare_call(self, mode: str, token: Any, args: tuple) -> tuple:
        """The arguments the execution runs with (an adapter may change its state)."""
        return args

    def after_execution(
        self, mode: str, token: Any, result: Any
    ) -> list[dict[str, Any]]:
        """The samples captured by the execution that just ran (numpy, one per step).

        `result` is what the function returned; an adapter may take its own entries
        out of it before Keras sees it.
        """
        return []

    def selector(self, mode: str) -> SampleSelector | None:
        raise NotImplementedError

    def wrap_function(self, mode: str) -> None:
        """Wraps model.train_function/test_function (built by now)."""
        name = FUNCTION_NAMES[mode]
        model = self.model
        function = getattr(model, name, None)
        if function is None or getattr(function, "tb_batch_images_wrapper", False):
            return
        host = self.host
        make = getattr(model, f"make_{name}")

        def wrapped(*args):
            if not host.owns_current_fit():
                # A later fit()/evaluate() without this logger (after ours ended,
                # normally or by an exception): build the model's own function.
                host.finish()
                model.train_function = model.test_function = None
                make(force=True)
                return getattr(model, name)(*args)
            token = self.before_execution(mode, args)
            try:
                logs = function(*self.prepare_call(mode, token, args))
            except StopIteration:
                raise  # the end of the data: Keras's normal control flow
            except BaseException as error:
                if _is_end_of_data(error):
                    raise
                if isinstance(error, (TypeError, ValueError)):
                    explain_strings(error)
                host.finish()  # KeyboardInterrupt or an error: keep what was logged
                raise
            items = self.after_execution(mode, token, logs)
            if not self.step_ran.get(mode):
                host.unsupported(
                    f"the model's {name} never called its {_STEP_NAMES[mode]} (a "
                    f"custom make_{name}, or a trainer that calls the class's step "
                    f"instead of the instance's, like Keras's NNX path)"
                )
            host.collected(mode, items)
            return logs

        wrapped.tb_batch_images_wrapper = True
        setattr(model, name, wrapped)


def uses_xla(model: keras.Model) -> bool:
    """Whether the model's compiled step runs under XLA (`jit_compile=True`)."""
    if getattr(model, "run_eagerly", False):
        return False
    jit = getattr(model, "jit_compile", False)
    return bool(jit) and jit != "auto"


def _is_end_of_data(error: BaseException) -> bool:
    return type(error).__name__ == "OutOfRangeError"
