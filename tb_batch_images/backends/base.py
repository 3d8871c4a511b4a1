"""What every adapter shares: wrapping the model's steps and functions.

The step wrapper strips the metadata keys from `x`, runs the model's own step and hands
the step's tensors (`x`, `y`, and the `y_pred` the step passed to `compute_metrics`,
i.e. the training forward pass) to the backend's `_capture`. When the model starts with
preprocessing layers (`core.find_image_source`), the last one's `call` is wrapped to
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
from typing import Any

import keras

from tb_batch_images import core, predictions
from tb_batch_images import format as fmt

MODES = ("train", "validation")
# Under JAX the stashed output leaves the differentiated forward pass inside y_pred
# (the aux output of jax.value_and_grad), wrapped in a dict with these keys.
STASHED_Y_PRED = "_tb_batch_images_y_pred"
STASHED_IMAGE = "_tb_batch_images_image"
_STEP_NAMES = {"train": "train_step", "validation": "test_step"}
FUNCTION_NAMES = {"train": "train_function", "validation": "test_function"}


class Unsupported(Exception):
    """A backend, trainer or distribution the logger cannot capture from."""


class Adapter:
    """Wraps one model's steps for one backend. Subclasses fill in the capture."""

    backend = "?"
    # How many leading positional arguments the backend's train_step takes before data.
    state_arguments = 0

    def __init__(self, model: keras.Model, logger: Any):
        self.model = model
        self.logger = logger
        self.unwrap = core.model_takes_single_tensor(model)
        self._installed: dict[str, Any] = {}
        self._seen: dict[str, Any] = {}
        self._stash: dict[str, Any] = {}  # the source layer's output, this step
        self.step_ran: dict[str, bool] = {}
        self.image_source: core.ImageSource | None = None
        self.heads: core.Heads | None = None
        self._undo_ready = False
        self._undo: Callable | None = None
        # Set by the logger: per-sample statistics, updated in every train step.
        self.sample_stats: Any = None
        self._running: tuple[str, dict] | None = None  # (mode, metadata) in a step

    # -- installing ------------------------------------------------------------------
    def install(self) -> None:
        """Wraps train_step/test_step so the next make_*_function picks them up."""
        model = self.model
        self.check_supported()
        self.image_source = core.find_image_source(
            model, getattr(self.logger, "image_layer", None)
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
            running, stats = self._running, self.sample_stats
            if stats is not None and running is not None and running[0] == "train":
                stats.update(running[1], y, y_pred, x=x, image=image)
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
        self.heads = core.find_heads(self.model, getattr(self.logger, "output", None))

    def new_selector(self, layout: core.InputLayout) -> core.SampleSelector:
        logger = self.logger
        loss = getattr(self.model, "loss", None)
        heads = self.heads
        return core.SampleSelector(
            layout,
            samples=logger.samples_per_batch,
            selection=logger.selection,
            loss_fn=core.per_sample_loss_fn(loss),
            heads=heads,
            task=predictions.task_from_loss(
                loss if heads is None else heads.losses[heads.chosen]
            )[0],
        )

    def source_layout(self, layout: core.InputLayout, source_spec: Any) -> Any:
        """`layout` (from `x`) redone for the source layer's output, or None."""
        if self.image_source is None:
            return layout
        spec = core.spec_of(source_spec) if source_spec is not None else None
        if spec is None:
            return None
        if layout.dynamic_size:  # the layer's output varies with its input
            spec = core.unknown_size(spec)
        logger = self.logger
        source = core.layout_for(
            spec, None, logger.max_image_size, keras.config.image_data_format()
        )
        return dataclasses.replace(
            source,
            image_key=layout.image_key,
            has_sample_id=layout.has_sample_id,
            has_filename=layout.has_filename,
            image_source=self.image_source.name,
            source_input_dtype=layout.input_dtype,
        )

    def prepare_display(self, layout: core.InputLayout) -> None:
        """On the host: how to undo the source chain's Rescaling/Normalization.

        Read once from the layers (their parameters are fixed while training) and
        given to every layout of a source (train, validation, each fit).
        """
        if self.image_source is None or layout.image_source is None:
            return
        if not self._undo_ready:
            self._undo_ready = True
            try:
                self._undo = core.undo_value_layers(self.image_source.chain)
            except Exception as error:  # shown in the layer's units instead
                self._undo = None
                self.logger._warn(
                    "undo_layers",
                    f"could not read the preprocessing layers' parameters ({error}); "
                    f"pictures are shown in {self.image_source.name}'s output units",
                )
        layout.undo = self._undo

    def check_supported(self) -> None:
        """Raises Unsupported for setups this backend cannot capture from."""

    def uninstall(self) -> None:
        """Restores the model's own train_step/test_step/compute_metrics.

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

    def _make_step(self, mode: str, original_step: Callable) -> Callable:
        state_arguments = self.state_arguments

        def step(*args):
            *state, data = args
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            model_x, metadata = core.strip_metadata(x, self.unwrap)
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
                self.logger._warn(
                    "no_y_pred",
                    "the model's train_step does not call compute_metrics(x, y, "
                    "y_pred); predictions and loss are not logged",
                )
            if self.image_source is not None:
                if seen.get("image") is None:
                    self.logger._disable(
                        mode,
                        f"the layer {self.image_source.name!r} was not called in the "
                        f"model's step; pass image_layer= naming the layer whose "
                        f"output to show, or image_layer=False to show x",
                    )
                    return result
                # The picture as the next layer received it, beside x's metadata.
                metadata = {**metadata, core.SOURCE_IMAGE: seen["image"]}
            try:
                return self._capture(
                    mode, x, metadata, seen["y"], seen["y_pred"], result
                )
            except core.CaptureError as error:
                self.logger._disable(mode, str(error))
            except Exception as error:  # never let logging stop training
                self.logger._disable(
                    mode,
                    f"the capture failed inside the step ({type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''})",
                )
            return result

        step._tb_batch_images = True
        return step

    def _run_step(self, mode: str, metadata: dict, original_step: Callable, *args):
        """Runs the model's step; its compute_metrics sees which mode and ids."""
        self._running = (mode, metadata)
        try:
            return original_step(*args)
        finally:
            self._running = None

    # -- per backend -----------------------------------------------------------------
    def wants_capture(self, mode: str, x: Any) -> bool:
        """Whether this call of the step should compute the capture at all."""
        return self.logger._capturing(mode)

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

    def before_execution(self, mode: str, iterator: Any) -> Any:
        """Called before each execution of the mode's function; returns a token."""
        return None

    def after_execution(
        self, mode: str, token: Any, result: Any
    ) -> list[dict[str, Any]]:
        """The samples captured by the execution that just ran (numpy, one per step).

        `result` is what the function returned; an adapter may take its own entries
        out of it before Keras sees it.
        """
        return []

    def selector(self, mode: str) -> core.SampleSelector | None:
        raise NotImplementedError

    def wrap_function(self, mode: str) -> None:
        """Wraps model.train_function/test_function (built by now)."""
        name = FUNCTION_NAMES[mode]
        model = self.model
        function = getattr(model, name, None)
        if function is None or getattr(function, "_tb_batch_images", False):
            return
        logger = self.logger
        make = getattr(model, f"make_{name}")

        def wrapped(*args):
            if not logger._owns_current_fit():
                # A later fit()/evaluate() without this logger (after ours ended,
                # normally or by an exception): build the model's own function.
                logger._finish()
                model.train_function = model.test_function = None
                make(force=True)
                return getattr(model, name)(*args)
            token = self.before_execution(mode, args[-1])
            try:
                logs = function(*args)
            except StopIteration:
                raise  # the end of the data: Keras's normal control flow
            except BaseException as error:
                if _is_end_of_data(error):
                    raise
                if isinstance(error, (TypeError, ValueError)):
                    _explain_strings(error)
                logger._finish()  # KeyboardInterrupt or an error: keep what was logged
                raise
            items = self.after_execution(mode, token, logs)
            if not self.step_ran.get(mode):
                logger._unsupported(
                    f"the model's {name} never called its {_STEP_NAMES[mode]} (a "
                    f"custom make_{name}, or a trainer that calls the class's step "
                    f"instead of the instance's, like Keras's NNX path)"
                )
            logger._collected(mode, items)
            return logs

        wrapped._tb_batch_images = True
        setattr(model, name, wrapped)


def _is_end_of_data(error: BaseException) -> bool:
    return type(error).__name__ == "OutOfRangeError"


def strip_metadata_before_symbolic_build() -> None:
    """Makes Keras's symbolic build see `x` without the metadata keys.

    On JAX and PyTorch, `fit` builds the model and its compiled metrics by calling it
    symbolically on the first batch *before* any callback runs (`set_model` included),
    so a `Sequential` model would reject `x["sample_id"]` there. This wraps the
    trainer's `_symbolic_build` (once per process, when a BatchImageLogger is made) to
    drop the metadata keys from that first batch, exactly as the logger's step
    wrapper does for every step. Models that declare an input named `sample_id` or
    `filename` are left alone.
    """
    from keras.src.trainers import trainer as trainer_module

    trainer_class = trainer_module.Trainer
    original = trainer_class.__dict__.get("_symbolic_build")
    if original is None or getattr(original, "_tb_batch_images", False):
        return

    def _symbolic_build(self, iterator=None, data_batch=None):
        if data_batch is None and iterator is not None and _needs_build(self):
            try:
                for _, _, data_or_iterator in iterator:  # as Keras takes its first
                    if isinstance(data_or_iterator, (list, tuple)):
                        data_batch = data_or_iterator[0]
                    else:
                        data_batch = next(data_or_iterator)
                    break
            except (TypeError, ValueError) as error:
                _explain_strings(error)
                raise
        if data_batch is not None:
            data_batch = _without_metadata(self, data_batch)
        try:
            return original(self, iterator=iterator, data_batch=data_batch)
        except (TypeError, ValueError) as error:
            _explain_strings(error)
            raise

    _symbolic_build._tb_batch_images = True
    trainer_class._symbolic_build = _symbolic_build


def _needs_build(model: Any) -> bool:
    if not all(layer.built for layer in model._flatten_layers()):
        return True
    for part in (
        getattr(model, "_compile_metrics", None),
        getattr(model, "_compile_loss", None),
    ):
        if part is not None and not part.built:
            return True
    return False


def _without_metadata(model: Any, data_batch: Any) -> Any:
    try:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data_batch)
    except Exception:
        return data_batch
    if not isinstance(x, dict):
        return data_batch
    declared = {getattr(t, "name", None) for t in getattr(model, "inputs", None) or []}
    input_struct = getattr(model, "_inputs_struct", None)
    if isinstance(input_struct, dict):
        declared |= set(input_struct)
    if declared & set(fmt.METADATA_KEYS):
        return data_batch
    model_x, metadata = core.strip_metadata(x, core.model_takes_single_tensor(model))
    if not metadata:
        return data_batch
    return keras.utils.pack_x_y_sample_weight(model_x, y, sample_weight)


STRINGS_OFF_TENSORFLOW = (
    "tb_batch_images: on the {backend} backend, Keras cannot put strings in a batch "
    "(its data adapters accept numbers only), so filenames cannot travel in it, "
    "neither as x['filename'] nor as a third element. Put an integer x['sample_id'] (the index into your list of paths) in the batch instead, "
    "and pass the list as BatchImageLogger(..., filenames=paths)."
)


def _explain_strings(error: BaseException) -> None:
    """Adds what to do to Keras's own error when strings are in a JAX/torch batch."""
    backend = keras.backend.backend()
    text = str(error).lower()
    clues = ("dtype", "string", "abstract array")
    if backend != "tensorflow" and any(clue in text for clue in clues):
        error.add_note(STRINGS_OFF_TENSORFLOW.format(backend=backend))
