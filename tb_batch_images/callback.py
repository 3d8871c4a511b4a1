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

from tb_batch_images import backends, core, pixels, predictions, record, sample_stats
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
    on GPU) only `"sample_id"` can travel, and so on the JAX and PyTorch backends,
    whose data adapters reject strings before any callback runs.

    Works on every Keras 3 backend (TensorFlow, JAX, PyTorch), under `tf.distribute`
    strategies and JAX's `keras.distribution` (only process 0 / the chief writes). A
    setup it cannot handle (e.g. a train function that bypasses the model's
    `train_step`) gives one warning and the logger turns itself off.

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
        image_layer: which picture to show when the model starts with preprocessing
            layers (`keras.layers.Random*`, `Rescaling`, `Normalization`, `Resizing`,
            `CenterCrop`, ..., or a `Sequential`/functional block made only of them).
            Defaults to None: the output of the last leading preprocessing layer, i.e.
            the picture as the first learning layer received it, taken from the
            training forward pass itself (so the random augmentations shown are the
            ones the model trained on). `Rescaling` and `Normalization` among those
            layers are undone for display from their own parameters. A layer name:
            that layer's output (a ValueError at fit start lists the layers if no
            layer has that name). `False`: show `x` as the model received it.
        output: for a model with several outputs (heads), the name of the one whose
            prediction and loss are shown: a key of the model's dict of outputs (the
            keys of `y` and of the compiled loss), or one of `model.output_names` for
            a list of outputs. Defaults to None: the one head whose compiled loss is a
            classification loss (cross-entropy), else the first head in the model's
            own order. Every head's per-sample loss is logged beside it. A name that
            is no output of the model raises a ValueError at fit start, listing them.
        max_image_size: longest side of a logged image, in pixels; larger inputs are
            downscaled (never upscaled; plain bilinear under TensorFlow's XLA, which
            has no antialiased resize). Defaults to 256. Images whose height and
            width are unknown when the step is traced (a `tf.data` pipeline that
            decodes files without resizing, where the model's `Input` does not fix
            the size either, e.g. `Input((None, None, 3))`) are fitted into it inside
            the step, each batch at its own size, and each sample records its true
            size; under TensorFlow the capture buffers then hold
            `max_image_size x max_image_size` pixels per sample.
        image_format: `"png"` (default, lossless) or `"jpeg"`.
        value_range: `(low, high)`: the input values shown as black and white. Defaults
            to None: uint8 as is; floats in [0, 1], [-1, 1] or [0, 255] recognised per
            batch; anything else (e.g. mean/std normalised) stretched per sample and
            flagged `rescaled`.
        to_pixels: a function from a float batch `[n, h, w, c]` to uint8 pixels, for
            inputs no range describes (e.g. undo your normalisation). Overrides
            `value_range`.
        preprocessing: `"caffe"`, `"torch"` or `"tf"`: the inputs went through
            `keras.applications.imagenet_utils.preprocess_input` in that mode (e.g.
            `keras.applications.resnet50.preprocess_input` is `"caffe"`: BGR with the
            ImageNet means subtracted), undone for display so the pictures show true
            colours. Defaults to None. Not with `to_pixels` or `value_range`. A preset
            that cannot apply (uint8 inputs; `"caffe"`/`"torch"` on inputs without 3
            channels) warns once and the automatic range is used.
        log_validation: also log validation batches during `fit`. Defaults to True.
        validation_batches: how many batches of each validation run to log. Defaults
            to 1.
        top_k: how many classes to record per sample with their probability. Defaults
            to 5.
        max_queue: batches waiting for the background writer at most; more are
            dropped and counted. Defaults to 8.
        sample_stats: the data map: statistics of every sample of every training
            batch (appearances, confidence and variability of the given label,
            fraction correct, margin, forgetting events, last loss, the class
            predicted instead, a suspected-label-error score), accumulated inside
            the compiled step and written once per epoch (read them with
            `tb_batch_images.read_sample_stats`). Needs an integer
            `x["sample_id"]` in the batches, their number (`num_samples=` or
            `filenames=`) and a classification head (softmax or one sigmoid
            output). Defaults to None: on where possible, a log message saying
            why where not. `True`: the same, with a warning where not. `False`:
            off. Device memory: about `40 + 4 * classes` bytes per sample.
        num_samples: how many sample ids there are (ids are `0..num_samples-1`).
            Defaults to None: `len(filenames)` when `filenames=` is given.
        watchlist: with the data map on, how many of the last epoch's top suspects
            to capture (picture, prediction, loss) the next time they appear in a
            training batch, inside the compiled step: no second forward pass.
            Written once per epoch under the `batch_images_watchlist` tag, so the
            gallery's Dataset view shows each suspect's picture. Defaults to 32;
            `0` turns it off. Device memory: `watchlist` pictures at their logged
            size, float32 unless uint8 (32 of 64x64x3: about 1.6 MB), plus 8 KiB
            each.

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
        image_layer: str | bool | None = None,
        output: str | None = None,
        max_image_size: int = 256,
        image_format: str = "png",
        value_range: tuple[float, float] | None = None,
        to_pixels: Callable[[np.ndarray], np.ndarray] | None = None,
        preprocessing: str | None = None,
        log_validation: bool = True,
        validation_batches: int = 1,
        top_k: int = 5,
        max_queue: int = 8,
        sample_stats: bool | None = None,
        num_samples: int | None = None,
        watchlist: int = 32,
    ):
        super().__init__()
        backends.strip_metadata_before_symbolic_build()
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
        if num_samples is not None:
            _check_int("num_samples", num_samples, minimum=1)
        _check_int("watchlist", watchlist, minimum=0)
        if sample_stats not in (None, True, False):
            raise ValueError(
                f"sample_stats must be None, True or False, got {sample_stats!r}"
            )
        if selection not in core.SELECTIONS:
            raise ValueError(
                f"selection must be one of {core.SELECTIONS}, got {selection!r}"
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
        pixels.check_preprocessing(preprocessing, to_pixels, value_range)
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
        if image_layer is not None and image_layer is not False:
            if not isinstance(image_layer, str):
                raise ValueError(
                    f"image_layer must be a layer name, None (automatic) or False "
                    f"(show x), got {image_layer!r}"
                )
        if output is not None and not isinstance(output, str):
            raise ValueError(
                f"output must be the name of one of the model's outputs, or None "
                f"(automatic), got {output!r}"
            )
        self.image_key = image_key
        self.image_layer = image_layer
        self.output = output
        self.max_image_size = max_image_size
        self.image_format = image_format
        self.value_range = value_range
        self.to_pixels = to_pixels
        self.preprocessing = preprocessing
        self.log_validation = log_validation
        self.validation_batches = validation_batches
        self.top_k = top_k
        self.max_queue = max_queue
        self.sample_stats = sample_stats
        self.num_samples = num_samples
        self.watchlist = watchlist
        self._stats = None  # a sample_stats.SampleStatsTracker while installed

        self._writer: BackgroundWriter | None = None
        self._adapter: backends.Adapter | None = None
        self._disabled: dict[str, str] = {}
        self._warned: set[str] = set()
        self._warning_texts: list[str] = []
        self._in_fit = False
        self._selectors: dict[str, core.SampleSelector | None] = {}
        self._record_options = record.RecordOptions(
            selection=selection,
            class_names=self.class_names,
            filenames=self.filenames,
            max_image_size=max_image_size,
            image_format=image_format,
            value_range=value_range,
            to_pixels=to_pixels,
            top_k=top_k,
            backend=keras.backend.backend(),
            preprocessing=preprocessing,
        )
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
        model = self._model  # not self.model: that forces a JAX state sync
        # The History object of this fit() tells our wrappers which fit() is running.
        self._fit_history = getattr(model, "history", None)
        self._global_step = _optimizer_step(model)
        self._epoch_base = self._global_step
        self._disabled = {}
        adapter = self._adapter
        loss = getattr(model, "loss", None)
        if adapter is None:
            self._task, self._from_logits = predictions.task_from_loss(loss)
            self._disabled = dict.fromkeys(("train", "validation"), "unsupported")
            return
        adapter.begin_fit(self._global_step)
        if adapter.heads is not None:  # several outputs: the logged head's loss
            loss = adapter.heads.losses[adapter.heads.chosen]
        self._task, self._from_logits = predictions.task_from_loss(loss)
        if self._stats is not None:
            self._stats.begin_fit()
        if not adapter.is_writer():
            # Multi-worker / multi-process training: only the chief (process 0)
            # writes. The wrapped steps still strip the metadata keys.
            return
        if self._writer is None:
            self._writer = BackgroundWriter(
                self.log_dir, self._build_elements, self.max_queue, self._warn
            )
        adapter.wrap_function("train")

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch = epoch
        self._sync_step()
        self._epoch_base = self._global_step

    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        self._train_begin_step = batch

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        self._global_step = self._epoch_base + batch + 1

    def on_test_begin(self, logs=None) -> None:
        if not (self._in_fit and self.log_validation and self.validation_batches):
            return
        if self._writer is None or self._adapter is None:  # not the chief
            return
        self._adapter.wrap_function("validation")
        self._sync_step()  # exact, even after a short last execution
        self._adapter.begin_validation()

    def on_test_batch_begin(self, batch: int, logs=None) -> None:
        self._test_begin_step = batch

    def on_test_end(self, logs=None) -> None:
        if self._pending_validation and self._writer is not None:
            self._writer.submit(merge_batches(self._pending_validation))
        self._pending_validation = []

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self._sync_step()
        if self._stats is not None:
            self._stats.write(epoch, self._global_step)
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
        if self._stats is not None:
            self._stats.write(self._epoch, self._global_step, final=True)
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

    # -- installing the capture (the adapters do the work) ---------------------------
    def _install(self, model: keras.Model) -> None:
        if self._adapter is not None and self._adapter.model is model:
            return
        self._uninstall()
        try:
            adapter = backends.adapter_for(model, self)
            adapter.install()
        except backends.Unsupported as reason:
            self._unsupported(str(reason))
            return
        self._adapter = adapter
        self._stats = sample_stats.SampleStatsTracker.create(model, self)
        adapter.sample_stats = self._stats

    def _uninstall(self) -> None:
        if self._stats is not None:
            self._stats.uninstall()
            self._stats = None
        if self._adapter is not None:
            self._adapter.uninstall()
            self._adapter = None

    def _unsupported(self, reason: str) -> None:
        """One warning; the logger is off for this fit and training goes on."""
        self._disabled = dict.fromkeys(("train", "validation"), reason)
        self._warn(
            "unsupported",
            f"BatchImageLogger is off: it does not support {reason}. Training "
            f"goes on without it.",
        )

    def _owns_current_fit(self) -> bool:
        """Whether the fit() now running is the one this logger is part of."""
        return self._in_fit and getattr(self._model, "history", None) is (
            self._fit_history
        )

    def _capturing(self, mode: str) -> bool:
        return mode not in self._disabled

    def _disable(self, mode: str, reason: str) -> None:
        self._disabled[mode] = reason
        self._warn(
            "not_image",
            f"BatchImageLogger turned itself off for {mode}: {reason}",
        )
        if self._writer is not None:
            self._writer.count_drop(mode, "not_image")

    def _sync_step(self) -> None:
        step = None if self._adapter is None else self._adapter.read_step()
        if step is not None:
            self._global_step = step

    # -- scheduling ---------------------------------------------------------------------
    def _in_graph_schedule(self, mode: str) -> tuple[int, int]:
        """(every_n, below): the regular schedule, for adapters that decide in-graph."""
        if mode == "train":
            return self.every_n_steps, 0
        return 0, self.validation_batches

    def _is_extra_step(self, step: int) -> bool:
        """A step of the user's log_steps (the regular schedule aside)."""
        if self.log_steps is None:
            return False
        if callable(self.log_steps):
            return bool(self.log_steps(step))
        return step in self.log_steps

    def _wants_step(self, mode: str, count: int) -> bool:
        """Whether to log this count (train: global step; validation: batch)."""
        if mode == "validation":
            return count < self.validation_batches
        regular = bool(self.every_n_steps) and count % self.every_n_steps == 0
        return regular or self._is_extra_step(count)

    def _wanted(self, mode: str, slots: int) -> tuple[list[int], list[int]]:
        """(every step the next execution captures, those off the regular schedule)."""
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

    # -- collecting -----------------------------------------------------------------------
    def _collected(self, mode: str, items: list[dict[str, Any]]) -> None:
        """Hands the samples an execution captured to the writer."""
        if not items or self._writer is None:
            return
        # The writer thread builds records after fit() may have ended: keep what it
        # needs to read the arrays (layout, label and output shapes).
        self._selectors[mode] = selector = self._adapter.selector(mode)
        if selector is not None:
            self._adapter.prepare_display(selector.layout)
        replicas = self._adapter.num_replicas()
        for item in items:
            if mode == "train":
                step, batch = item["counter"], item["counter"] - self._epoch_base
            else:
                step, batch = self._global_step, item["counter"]
            filenames = None
            if item.get("filenames") is not None:
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
                labels=item.get("labels"),
                outputs=item.get("outputs"),
                output_stats=item.get("output_stats"),
                losses=item.get("losses"),
                sample_ids=item.get("sample_ids"),
                filenames=filenames,
                num_replicas=replicas,
                devices=item.get("devices"),
                processes=item.get("processes"),
                head_losses=item.get("head_losses"),
                image_sizes=item.get("image_sizes"),
                label_maps=item.get("label_maps"),
                output_maps=item.get("output_maps"),
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
        return record.build_elements(
            batch,
            sequence,
            dropped,
            self._selectors[batch.mode],
            self._record_options,
            self._task,
            self._from_logits,
            self._warn,
        )

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
        return int(np.asarray(keras.ops.convert_to_numpy(iterations)))
    except (TypeError, ValueError, AttributeError):
        return 0
