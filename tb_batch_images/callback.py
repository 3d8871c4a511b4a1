"""`BatchImageLogger`: the Keras callback that logs the real training batches."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tb_batch_images import capture, predictions
from tb_batch_images import format as fmt
from tb_batch_images import pixels as pixel_utils
from tb_batch_images.writer import BackgroundWriter, CapturedBatch, merge_batches

_log = logging.getLogger("tb_batch_images")

IMAGE_FORMATS = ("png", "jpeg")


class BatchImageLogger(keras.callbacks.Callback):
    """Logs the images a model trains on, batch by batch, to TensorBoard.

    At the chosen steps, the logger copies some samples of the real batch, as the model
    received them (after every `tf.data` map, augmentation and shuffle), together with
    their labels, the model's outputs from the training forward pass and the per-sample
    loss. A background thread turns them into images and writes them to
    `log_dir/train` (and `log_dir/validation`), the directories
    `keras.callbacks.TensorBoard` uses, so both show up under the same runs. Open
    TensorBoard's "Batch Images" tab to browse them, or read them back with
    `tb_batch_images.read_batches(log_dir)`.

    Filenames travel in the batch: make `x` a dict with the image, plus a string
    `"filename"` or an integer `"sample_id"` (an index into `filenames=`). The logger
    strips both keys before the model sees `x`. Under `jit_compile=True` (the default
    on GPU) only `"sample_id"` can travel.

    Logging never stops training: problems (an unwritable `log_dir`, an input that is
    no image, a full queue) give one warning each, and what was dropped is counted in
    the log.

    Args:
        log_dir: directory to write to, any `tf.io.gfile` path (local, `gs://`, ...).
            Use the same `log_dir` as `keras.callbacks.TensorBoard`.
        every_n_steps: log one batch every this many global steps, starting at step 0.
            Defaults to 100. `0` disables the periodic schedule.
        log_steps: extra global steps to log: an iterable of ints, or a function
            `step -> bool`. Defaults to None.
        samples_per_batch: how many samples of a logged batch to keep. Defaults to 16.
        selection: which samples: `"first"` (default), `"random"` or
            `"highest_loss"` (the hardest samples of the batch).
        class_names: names of the classes, indexed by class id. Defaults to None.
        filenames: a sequence mapping the integer `x["sample_id"]` to a filename.
        image_key: the key (or index) of the image in `x` when `x` holds several
            inputs. Defaults to None: found automatically.
        max_image_size: longest side of a logged image, in pixels; larger inputs are
            downscaled (never upscaled). Defaults to 256.
        image_format: `"png"` (default, lossless) or `"jpeg"`.
        value_range: `(low, high)`: the input values shown as black and white. Defaults
            to None: uint8 as is; floats in [0, 1], [-1, 1] or [0, 255] recognised per
            batch; anything else (e.g. mean/std normalised) stretched per sample and
            flagged `rescaled`.
        to_pixels: a function from a float batch `[n, h, w, c]` to uint8 pixels, for
            inputs no range describes (e.g. undo your normalisation). Overrides
            `value_range`.
        log_validation: also log validation batches during `fit`. Defaults to True.
        validation_batches: how many batches of each validation run to log. Defaults
            to 1.
        top_k: how many classes to record per sample with their probability. Defaults
            to 5.
        max_queue: batches waiting for the background writer at most; more are
            dropped and counted. Defaults to 8.

    Example:

    ```python
    import keras
    import numpy as np
    import tensorflow as tf
    from tb_batch_images import BatchImageLogger

    paths = [f"img_{i}.png" for i in range(64)]
    images = np.random.rand(64, 32, 32, 3).astype("float32")
    labels = np.random.randint(0, 3, size=64)
    dataset = tf.data.Dataset.from_tensor_slices(
        ({"image": images, "filename": paths}, labels)
    ).batch(16)

    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Flatten(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(
        dataset,
        epochs=2,
        callbacks=[
            keras.callbacks.TensorBoard("logs/run1"),
            BatchImageLogger("logs/run1", every_n_steps=2,
                             class_names=["cat", "dog", "bird"]),
        ],
    )
    ```
    """

    def __init__(
        self,
        log_dir: str,
        every_n_steps: int = 100,
        log_steps: Iterable[int] | Callable[[int], bool] | None = None,
        samples_per_batch: int = 16,
        selection: str = "first",
        class_names: Sequence[str] | None = None,
        filenames: Sequence[str] | None = None,
        image_key: str | int | None = None,
        max_image_size: int = 256,
        image_format: str = "png",
        value_range: tuple[float, float] | None = None,
        to_pixels: Callable[[np.ndarray], np.ndarray] | None = None,
        log_validation: bool = True,
        validation_batches: int = 1,
        top_k: int = 5,
        max_queue: int = 8,
    ):
        super().__init__()
        if not isinstance(log_dir, str) or not log_dir:
            raise ValueError(
                f"log_dir must be a non-empty path string, got {log_dir!r}"
            )
        _check_int("every_n_steps", every_n_steps, minimum=0)
        _check_int("samples_per_batch", samples_per_batch, minimum=1)
        _check_int("max_image_size", max_image_size, minimum=1)
        _check_int("validation_batches", validation_batches, minimum=0)
        _check_int("top_k", top_k, minimum=1)
        _check_int("max_queue", max_queue, minimum=1)
        if selection not in capture.SELECTIONS:
            raise ValueError(
                f"selection must be one of {capture.SELECTIONS}, got {selection!r}"
            )
        if image_format not in IMAGE_FORMATS:
            raise ValueError(
                f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}"
            )
        if value_range is not None:
            low, high = (float(v) for v in value_range)
            if not (math.isfinite(low) and math.isfinite(high) and high > low):
                raise ValueError(
                    f"value_range must be (low, high) with low < high, got {value_range!r}"
                )
            value_range = (low, high)
        if to_pixels is not None and not callable(to_pixels):
            raise ValueError("to_pixels must be a function from floats to uint8 pixels")
        if log_steps is not None and not callable(log_steps):
            try:
                log_steps = frozenset(int(s) for s in log_steps)
            except (TypeError, ValueError):
                raise ValueError(
                    "log_steps must be an iterable of ints or a function step -> bool"
                ) from None
        self.log_dir = log_dir
        self.every_n_steps = every_n_steps
        self.log_steps = log_steps
        self.samples_per_batch = samples_per_batch
        self.selection = selection
        self.class_names = (
            None if class_names is None else [str(c) for c in class_names]
        )
        self.filenames = None if filenames is None else list(filenames)
        self.image_key = image_key
        self.max_image_size = max_image_size
        self.image_format = image_format
        self.value_range = value_range
        self.to_pixels = to_pixels
        self.log_validation = log_validation
        self.validation_batches = validation_batches
        self.top_k = top_k
        self.max_queue = max_queue

        self._writer: BackgroundWriter | None = None
        self._buffers: dict[str, capture.ModeBuffers | None] = {}
        self._disabled: dict[str, str] = {}
        self._warned: set[str] = set()
        self._warning_texts: list[str] = []
        self._installed: dict[str, Any] = {}
        self._in_fit = False
        self._fit_history = None
        self._pending_validation: list[CapturedBatch] = []
        self._epoch = 0
        self._epoch_base = 0
        self._train_begin_step = 0
        self._test_begin_step = 0
        self._global_step = 0
        self._task = predictions.RAW
        self._from_logits = False

    # -- Keras lifecycle, in order ------------------------------------------------
    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        self._install(model)

    def on_train_begin(self, logs=None) -> None:
        self._in_fit = True
        # The History object of this fit() tells our wrappers which fit() is running.
        self._fit_history = getattr(self.model, "history", None)
        self._global_step = _optimizer_step(self.model)
        self._epoch_base = self._global_step
        self._task, self._from_logits = predictions.task_from_loss(
            getattr(self.model, "loss", None)
        )
        self._buffers = {}
        self._disabled = {}
        if not _is_chief(self.model.distribute_strategy):
            # Multi-worker training: only the chief captures and writes. The wrapped
            # steps still strip the metadata keys; nothing else runs here.
            self._disabled = {"train": "not the chief", "validation": "not the chief"}
            return
        if self._writer is None:
            self._writer = BackgroundWriter(
                self.log_dir, self._build_elements, self.max_queue, self._warn
            )
        self._wrap_function("train")

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch = epoch
        buffers = self._buffers.get("train")
        if buffers is not None:
            self._global_step = buffers.read_counter()
        self._epoch_base = self._global_step

    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        self._train_begin_step = batch

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        self._global_step = self._epoch_base + batch + 1

    def on_test_begin(self, logs=None) -> None:
        if not (self._in_fit and self.log_validation and self.validation_batches):
            return
        if self._writer is None:  # not the chief worker
            return
        self._wrap_function("validation")
        train_buffers = self._buffers.get("train")
        if train_buffers is not None:  # exact, even after a short last execution
            self._global_step = train_buffers.read_counter()
        buffers = self._buffers.get("validation")
        if buffers is not None:
            buffers.set_counter(0)

    def on_test_batch_begin(self, batch: int, logs=None) -> None:
        self._test_begin_step = batch

    def on_test_end(self, logs=None) -> None:
        if self._pending_validation and self._writer is not None:
            self._writer.submit(merge_batches(self._pending_validation))
        self._pending_validation = []

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        train_buffers = self._buffers.get("train")
        if train_buffers is not None:
            self._global_step = train_buffers.read_counter()
        if self._writer is not None:
            # Bounded by max_queue: at most a few batches left to write.
            self._writer.flush(status_extra=self._status_extra())

    def on_train_end(self, logs=None) -> None:
        self._finish()

    def _finish(self) -> None:
        """Writes what is queued, stops the writer and restores the model.

        Called by on_train_end, and when fit() ends with an exception or
        KeyboardInterrupt inside a training step (Keras then skips on_train_end).
        """
        self._in_fit = False
        self._uninstall()
        if self._writer is not None:
            self._writer.close(timeout=60, status_extra=self._status_extra())
            self._writer = None

    def __del__(self):
        writer = getattr(self, "_writer", None)
        if writer is not None:
            try:
                writer.close(timeout=5)
            except Exception:
                pass

    # -- installing the capture -----------------------------------------------------
    def _install(self, model: keras.Model) -> None:
        """Wraps train_step/test_step so the next make_*_function picks them up."""
        if self._installed.get("model") is model:
            return
        self._uninstall()
        self._installed = {"model": model}
        unwrap = _model_takes_single_tensor(model)
        for mode, step_name, function_name in (
            ("train", "train_step", "train_function"),
            ("validation", "test_step", "test_function"),
        ):
            original = getattr(model, step_name)
            self._installed[step_name] = model.__dict__.get(step_name)
            setattr(model, step_name, self._make_step(mode, original, unwrap))
            # make_*_function returns early when a function exists: rebuild it.
            setattr(model, function_name, None)

    def _uninstall(self) -> None:
        """Restores the model's own train_step/test_step.

        The functions built from our steps stay on the model: rebuilding them here
        would cost a second or more at the end of every fit(). Our wrapped functions
        rebuild clean functions themselves the next time they are called outside
        this logger's fit() (see `_wrap_function`).
        """
        model = self._installed.get("model")
        if model is None:
            return
        for step_name in ("train_step", "test_step"):
            previous = self._installed.get(step_name)
            if previous is None:
                model.__dict__.pop(step_name, None)
            else:
                setattr(model, step_name, previous)
        self._installed = {}

    def _make_step(self, mode: str, original_step: Callable, unwrap: bool) -> Callable:
        model = self.model

        def step(data):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            model_x, metadata = capture.strip_metadata(x, unwrap)
            data = keras.utils.pack_x_y_sample_weight(model_x, y, sample_weight)
            buffers = self._buffers.get(mode)
            if buffers is None:
                return original_step(data)
            seen: dict[str, Any] = {}
            had_own = "compute_metrics" in model.__dict__
            compute_metrics = model.compute_metrics

            def recording_compute_metrics(x_, y_, y_pred, sample_weight=None):
                seen["y"], seen["y_pred"] = y_, y_pred
                return compute_metrics(x_, y_, y_pred, sample_weight=sample_weight)

            model.compute_metrics = recording_compute_metrics
            try:
                logs = original_step(data)
            finally:
                if had_own:
                    model.compute_metrics = compute_metrics
                else:
                    del model.compute_metrics
            if "y_pred" not in seen:
                # A custom step that never called compute_metrics: predict on the
                # batch (only the captured steps pay for it, inside the cond).
                seen["y"], seen["y_pred"] = y, None
                self._warn(
                    "no_y_pred",
                    "the model's train_step does not call compute_metrics(x, y, y_pred);"
                    " predictions and loss are not logged",
                )
            image = capture.select_image(x, buffers.layout)
            buffers.capture(image, metadata, seen["y"], seen["y_pred"])
            return logs

        return step

    def _wrap_function(self, mode: str) -> None:
        """Wraps model.train_function/test_function (built by now) for arming."""
        name = "train_function" if mode == "train" else "test_function"
        function = getattr(self.model, name, None)
        if function is None or getattr(function, "_tb_batch_images", False):
            return

        def wrapped(iterator):
            if not self._in_fit or getattr(self.model, "history", None) is not (
                self._fit_history
            ):
                # A later fit()/evaluate() without this logger (after ours ended,
                # normally or by an exception): build the model's own function.
                self._finish()
                self.model.train_function = self.model.test_function = None
                getattr(self.model, f"make_{name}")(force=True)
                return getattr(self.model, name)(iterator)
            if mode not in self._buffers and mode not in self._disabled:
                self._create_buffers(mode, iterator)
            buffers = self._buffers.get(mode)
            wanted, extra = self._wanted(mode) if buffers is not None else ([], [])
            if buffers is not None and (extra or buffers.armed):
                buffers.arm(extra)  # a host write only around irregular steps
            try:
                logs = function(iterator)
            except (StopIteration, tf.errors.OutOfRangeError):
                raise  # the end of the data: Keras's normal control flow
            except BaseException:
                self._finish()  # KeyboardInterrupt or an error: keep what was logged
                raise
            if wanted:
                self._collect(mode, buffers, wanted)
            return logs

        wrapped._tb_batch_images = True
        setattr(self.model, name, wrapped)

    def _create_buffers(self, mode: str, iterator: Any) -> None:
        model = self.model
        spec = getattr(iterator, "element_spec", None)
        if spec is None:
            self._disable(mode, "the data iterator has no element_spec")
            return
        spec = tf.nest.map_structure(_one_replica_spec, spec)
        x_spec, y_spec, sample_weight_spec = keras.utils.unpack_x_y_sample_weight(spec)
        # Errors the user must fix to run at all: raised, with what to do.
        capture.check_sample_weight_spec(sample_weight_spec)
        capture.check_metadata_specs(x_spec, _uses_xla(model))
        try:
            layout = capture.layout_for(
                x_spec,
                self.image_key,
                self.max_image_size,
                keras.config.image_data_format(),
            )
        except capture.CaptureError as error:
            self._disable(mode, str(error))
            return
        start = self._global_step if mode == "train" else 0
        with model.distribute_strategy.scope():
            self._buffers[mode] = capture.ModeBuffers(
                layout,
                slots=max(1, int(getattr(model, "steps_per_execution", 1) or 1)),
                samples=self.samples_per_batch,
                selection=self.selection,
                loss_fn=capture.per_sample_loss_fn(getattr(model, "loss", None)),
                start_counter=start,
                every_n=self.every_n_steps if mode == "train" else 0,
                below=0 if mode == "train" else self.validation_batches,
            )

    def _disable(self, mode: str, reason: str) -> None:
        self._buffers[mode] = None
        self._disabled[mode] = reason
        self._warn(
            "not_image",
            f"BatchImageLogger turned itself off for {mode}: {reason}",
        )
        if self._writer is not None:
            self._writer.count_drop(mode, "not_image")

    # -- scheduling and collecting --------------------------------------------------
    def _is_extra_step(self, step: int) -> bool:
        """A step of the user's log_steps (the regular schedule aside)."""
        if self.log_steps is None:
            return False
        if callable(self.log_steps):
            return bool(self.log_steps(step))
        return step in self.log_steps

    def _wanted(self, mode: str) -> tuple[list[int], list[int]]:
        """(every step the next execution captures, those off the regular schedule)."""
        slots = self._buffers[mode].slots
        if mode == "validation":
            first = self._test_begin_step
            return [
                b for b in range(first, first + slots) if b < self.validation_batches
            ], []
        first = self._epoch_base + self._train_begin_step
        steps = range(first, first + slots)
        extra = [s for s in steps if self._is_extra_step(s)]
        regular = [
            s for s in steps if self.every_n_steps and s % self.every_n_steps == 0
        ]
        return sorted(set(regular) | set(extra)), extra

    def _collect(
        self, mode: str, buffers: capture.ModeBuffers, expected: list[int]
    ) -> None:
        try:
            captured = buffers.collect(expected)
        except Exception as error:  # never let logging stop training
            self._warn("collect", f"could not read the captured batch ({error})")
            return
        strategy = self.model.distribute_strategy
        for item in captured:
            if mode == "train":
                step, batch = item["counter"], item["counter"] - self._epoch_base
            else:
                step, batch = self._global_step, item["counter"]
            filenames = None
            if item["filenames"] is not None:
                filenames = [
                    n.decode("utf-8", errors="replace") for n in item["filenames"]
                ]
            captured_batch = CapturedBatch(
                mode=mode,
                step=int(step),
                epoch=self._epoch,
                batch=int(batch),
                wall_time=time.time(),
                batch_size=item["batch_size"],
                positions=item["positions"],
                images=item["images"],
                image_stats=item["image_stats"],
                labels=item["labels"],
                outputs=item["outputs"],
                output_stats=item["output_stats"],
                losses=item["losses"],
                sample_ids=item["sample_ids"],
                filenames=filenames,
                num_replicas=int(strategy.num_replicas_in_sync),
            )
            if mode == "train":
                self._writer.submit(captured_batch)
            else:  # written together at on_test_end: one record per step
                self._pending_validation.append(captured_batch)

    # -- the background thread's work ---------------------------------------------------
    def _build_elements(
        self, batch: CapturedBatch, sequence: int, dropped: dict[str, int]
    ) -> list[bytes]:
        """Record + encoded images for one batch (runs on the writer thread)."""
        buffers = self._buffers.get(batch.mode)
        layout = buffers.layout
        pixels, flags, used_range = pixel_utils.to_uint8(
            batch.images,
            batch.image_stats,
            layout.input_dtype,
            self.value_range,
            self.to_pixels,
        )
        if used_range is None and self.to_pixels is None:
            self._warn(
                "rescaled",
                "the input values match no known range ([0, 1], [-1, 1], [0, 255]); "
                "images are stretched per sample and flagged 'rescaled'. Pass "
                "to_pixels= (e.g. undo mean/std normalisation) or value_range=.",
            )
        images: list[bytes] = []
        samples = []
        output_shape = buffers.output_shape
        task = self._task
        if output_shape is not None and len(output_shape) > 1:
            task = predictions.RAW  # a dense map (e.g. segmentation): shown raw
        for i in range(len(batch.positions)):
            encoded, shape = pixel_utils.encode(
                pixels[i], self.max_image_size, self.image_format
            )
            images.append(encoded)
            fields, label_flags = predictions.describe_sample(
                task,
                self._from_logits,
                _sample_values(batch.labels, i, buffers.label_shape),
                _sample_values(batch.outputs, i, output_shape),
                None if batch.output_stats is None else batch.output_stats[i],
                output_shape,
                self.class_names,
                self.top_k,
            )
            sample_id = None if batch.sample_ids is None else int(batch.sample_ids[i])
            samples.append(
                {
                    "position": int(batch.positions[i]),
                    "batch": int(
                        batch.batch
                        if batch.sample_batches is None
                        else batch.sample_batches[i]
                    ),
                    "sample_id": sample_id,
                    "filename": self._filename(batch, i, sample_id),
                    **fields,
                    "loss": (
                        None
                        if batch.losses is None
                        else predictions.finite_or_none(batch.losses[i])
                    ),
                    "flags": flags[i] + label_flags,
                    "image_shape": shape,
                }
            )
        num_classes = None
        if output_shape and task != predictions.RAW:
            num_classes = int(np.prod(output_shape))
            if task == predictions.BINARY and num_classes > 1:
                task = predictions.MULTILABEL
            elif task == predictions.BINARY:
                num_classes = 2
        record = {
            "mode": batch.mode,
            "step": batch.step,
            "epoch": batch.epoch,
            "batch": batch.batch,
            "wall_time": batch.wall_time,
            "sequence": sequence,
            "batch_size": batch.batch_size,
            "samples_logged": len(samples),
            "selection": self.selection,
            "replica": batch.replica,
            "num_replicas": batch.num_replicas,
            "task": task,
            "class_names": self.class_names,
            "num_classes": num_classes,
            "image_key": _key_text(layout.image_key),
            "input_shape": layout.input_shape,
            "input_dtype": layout.input_dtype,
            "input_layout": layout.layout,
            "value_range": list(used_range) if used_range else None,
            "image_format": self.image_format,
            "dropped": dropped,
            "samples": samples,
        }
        return [fmt.encode_record(record), *images]

    def _filename(
        self, batch: CapturedBatch, i: int, sample_id: int | None
    ) -> str | None:
        if batch.filenames is not None:
            return batch.filenames[i]
        if sample_id is not None and self.filenames is not None:
            if 0 <= sample_id < len(self.filenames):
                return str(self.filenames[sample_id])
            self._warn(
                "sample_id_range",
                f"sample_id {sample_id} is outside filenames (len {len(self.filenames)})",
            )
        return None

    def _status_extra(self) -> dict[str, Any]:
        return {"step": self._global_step, "warnings": list(self._warning_texts)}

    def _warn(self, kind: str, message: str) -> None:
        """One warning per kind, and remembered for the status record."""
        if kind in self._warned:
            return
        self._warned.add(kind)
        self._warning_texts.append(message)
        warnings.warn(f"tb_batch_images: {message}", RuntimeWarning, stacklevel=2)
        _log.warning("%s", message)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _optimizer_step(model: keras.Model) -> int:
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    try:
        return int(np.asarray(iterations))
    except (TypeError, ValueError):
        return 0


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    """False on the non-chief workers of multi-worker training (they write nothing)."""
    return bool(getattr(strategy.extended, "should_save_summary", True))


def _uses_xla(model: keras.Model) -> bool:
    if getattr(model, "run_eagerly", False):
        return False
    jit = getattr(model, "jit_compile", False)
    return bool(jit) and jit != "auto"


def _model_takes_single_tensor(model: keras.Model) -> bool:
    """Whether x with one key left after stripping metadata should be unwrapped."""
    if isinstance(model, keras.Sequential):
        return True
    inputs = getattr(model, "_inputs_struct", None)
    if inputs is None:
        return False
    return not isinstance(inputs, (dict, list, tuple))


def _sample_values(
    values: np.ndarray | None, i: int, shape: list[int] | None
) -> np.ndarray | None:
    if values is None or shape is None:
        return None
    size = int(np.prod(shape)) if shape else 1
    return values[i][: min(size, values.shape[1])]


def _one_replica_spec(spec: Any) -> Any:
    """A distributed iterator's PerReplicaSpec -> the spec of one replica's share."""
    value_specs = getattr(spec, "_value_specs", None)
    return value_specs[0] if value_specs else spec


def _key_text(key: Any) -> str | None:
    return None if key is None else str(key)
