"""The logger at work on one model: adapter, data map, writer, schedule and warnings.

`BatchImageLogger` follows Keras's lifecycle and hands each event to its
`CaptureSession`. The session is what the adapters and the data map talk to
(`capture.backends.CaptureHost`): which steps to capture, what was captured, what
went wrong. It turns captured steps into `CapturedBatch`es for the background writer
and builds their records there (`encode_batch`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tb_batch_images import contract
from tb_batch_images.capture import backends, flight, keras_internals, losses
from tb_batch_images.capture.batch import CapturedBatch, merge_batches
from tb_batch_images.capture.selector import SampleSelector
from tb_batch_images.host import record
from tb_batch_images.host.composition import CompositionLog
from tb_batch_images.host.writer import BackgroundWriter
from tb_batch_images.logger.data_map import DataMapTracker
from tb_batch_images.logger.options import LoggerOptions

_log = logging.getLogger("tb_batch_images")


class CaptureSession:
    """Implements `capture.backends.CaptureHost` for one `BatchImageLogger`."""

    def __init__(self, options: LoggerOptions):
        self.settings = options
        self.options = options.capture()
        self.schedule = options.schedule()
        self.global_step = 0
        self.epoch = 0
        self.model: keras.Model | None = None
        self.adapter: backends.Adapter | None = None
        self.data_map: DataMapTracker | None = None
        self.writer: BackgroundWriter | None = None
        self._record_options = options.record(keras.backend.backend())
        self._disabled: dict[str, str] = {}
        self._warned: set[str] = set()
        self._warning_texts: list[str] = []
        self._in_fit = False
        self._fit_history = None
        self._selectors: dict[str, SampleSelector | None] = {}
        self._pending_validation: list[CapturedBatch] = []
        self._task, self._from_logits = "raw", False
        self.flight: flight.FlightRecorder | None = None
        self.composition = (
            CompositionLog(filenames=options.filenames)
            if options.log_composition
            else None
        )

    # -- the model ------------------------------------------------------------------
    def install(self, model: keras.Model) -> None:
        """Wraps the model's steps (set_model); a setup the logger cannot capture
        from gives one warning, and training goes on without it."""
        if self.adapter is not None and self.adapter.model is model:
            return
        self.uninstall()
        self.model = model
        try:
            adapter = backends.adapter_for(model, self)
            adapter.install()
        except backends.Unsupported as reason:
            self.unsupported(str(reason))
            return
        self.adapter = adapter
        self.data_map = DataMapTracker.create(
            model, self.settings.data_map(), adapter, self.warn
        )
        adapter.data_map = self.data_map
        self._install_flight(model, adapter)

    def _install_flight(self, model: keras.Model, adapter: backends.Adapter) -> None:
        """The flight recorder (triggers, composition) joins the model's metrics."""
        settings = self.settings.triggers()
        if not (settings.any or self.settings.log_composition):
            return
        problem = None
        if not keras_internals.can_attach_metrics(model):
            problem = (
                f"Keras {keras_internals.KERAS_VERSION} keeps the model's metrics "
                f"where the logger cannot add its recorder"
            )
        elif keras.backend.backend() == "tensorflow" and adapter.num_replicas() > 1:
            problem = "a tf.distribute strategy with several replicas"
        if problem is not None:
            self.warn(
                "flight_off",
                f"the triggers (non-finite, spike) and the per-step composition are "
                f"off: {problem}",
            )
            return
        if keras.backend.backend() == "tensorflow":
            with model.distribute_strategy.scope():
                recorder = flight.FlightRecorder(settings)
        else:
            recorder = flight.FlightRecorder(settings)
        keras_internals.attach_metric(model, recorder)
        self.flight = recorder
        adapter.attach_flight(recorder)

    def uninstall(self) -> None:
        if self.flight is not None and self.model is not None:
            keras_internals.detach_metric(self.model, self.flight)
        self.flight = None
        if self.data_map is not None:
            self.data_map.uninstall()
            self.data_map = None
        if self.adapter is not None:
            self.adapter.uninstall()
            self.adapter = None

    # -- fit ------------------------------------------------------------------------
    def begin_fit(self, model: keras.Model) -> None:
        self._in_fit = True
        # The History object of this fit() tells our wrappers which fit() is running.
        self._fit_history = getattr(model, "history", None)
        self.global_step = _optimizer_step(model)
        self.schedule.epoch_base = self.global_step
        if self.composition is not None:
            self.composition.begin_fit()
        self._disabled = {}
        adapter = self.adapter
        loss = getattr(model, "loss", None)
        if adapter is None:
            self._task, self._from_logits = losses.task_from_loss(loss)
            self._disabled = dict.fromkeys(("train", "validation"), "unsupported")
            return
        adapter.begin_fit(self.global_step)
        if adapter.heads is not None:  # several outputs: the logged head's loss
            loss = adapter.heads.losses[adapter.heads.chosen]
        self._task, self._from_logits = losses.task_from_loss(loss)
        if self.data_map is not None:
            self.data_map.begin_fit(self.global_step)
        if not adapter.is_writer():
            # Multi-worker / multi-process training: only the chief (process 0)
            # writes. The wrapped steps still strip the metadata keys.
            return
        if self.writer is None:
            self.writer = BackgroundWriter(
                self.settings.log_dir,
                self._batch_elements,
                self.settings.max_queue,
                self.warn,
            )
        adapter.wrap_function("train")

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sync_step()
        self.schedule.epoch_base = self.global_step

    def end_train_batch(self, batch: int) -> None:
        self.global_step = self.schedule.epoch_base + batch + 1
        if self.data_map is not None:  # the steps so far said whether it is off
            self.data_map.say_why(self.capturing("train"))

    def begin_validation(self) -> None:
        settings = self.settings
        if not (
            self._in_fit and settings.log_validation and settings.validation_batches
        ):
            return
        if self.writer is None or self.adapter is None:  # not the chief
            return
        self.adapter.wrap_function("validation")
        self.sync_step()  # exact, even after a short last execution
        self.adapter.begin_validation()

    def end_validation(self) -> None:
        if self._pending_validation and self.writer is not None:
            self.writer.submit(merge_batches(self._pending_validation))
        self._pending_validation = []

    def end_epoch(self, epoch: int) -> None:
        self.sync_step()
        if self.adapter is not None:
            self.adapter.flight_flush()
        if self.composition is not None and self.composition.due():
            self._write_composition(force=True)
        if self.data_map is not None:
            self.data_map.say_why(self.capturing("train"))
            self.data_map.write(
                epoch, self.global_step, self.writer, self.batch_encoder
            )
        if self.writer is not None:
            # Bounded by max_queue: at most a few batches left to write.
            self.writer.flush(status_extra=self._status_extra())

    def finish(self) -> None:
        """Writes what is queued, stops the writer and restores the model.

        Called at the end of fit, and when fit() ends with an exception or
        KeyboardInterrupt inside a training step (Keras then skips on_train_end).
        """
        self._in_fit = False
        if self.adapter is not None:
            try:
                self.adapter.flight_flush()
            except Exception as error:  # the device may be gone: keep what we have
                self.warn("composition", f"could not read the last steps ({error})")
        self._write_composition(force=True)
        if self.data_map is not None:
            self.data_map.write(
                self.epoch,
                self.global_step,
                self.writer,
                self.batch_encoder,
                final=True,
            )
        status = self._status_extra()  # before uninstall forgets the data map
        self.uninstall()
        if self.writer is not None:
            self.writer.close(timeout=60, status_extra=status)
            self.writer = None

    def close_quietly(self) -> None:
        """Stops the writer when the logger is garbage collected."""
        writer = self.writer
        if writer is not None:
            try:
                writer.close(timeout=5)
            except Exception:
                pass

    def sync_step(self) -> None:
        step = None if self.adapter is None else self.adapter.read_step()
        if step is not None:
            self.global_step = step

    # -- CaptureHost ----------------------------------------------------------------
    def owns_current_fit(self) -> bool:
        """Whether the fit() now running is the one this logger is part of."""
        model = self.model
        return self._in_fit and getattr(model, "history", None) is self._fit_history

    def capturing(self, mode: str) -> bool:
        return mode not in self._disabled

    def disable(self, mode: str, reason: str) -> None:
        self._disabled[mode] = reason
        self.warn(
            "not_image",
            f"BatchImageLogger turned itself off for {mode}: {reason}",
        )
        if self.writer is not None:
            self.writer.count_drop(mode, "not_image")

    def unsupported(self, reason: str) -> None:
        """One warning; the logger is off for this fit and training goes on."""
        self._disabled = dict.fromkeys(("train", "validation"), reason)
        self.warn(
            "unsupported",
            f"BatchImageLogger is off: it does not support {reason}. Training "
            f"goes on without it.",
        )

    def collected(self, mode: str, items: list[dict[str, Any]]) -> None:
        """Hands the samples an execution captured to the writer."""
        if not items or self.writer is None:
            return
        # The writer thread builds records after fit() may have ended: keep what it
        # needs to read the arrays (layout, label and output shapes).
        self._selectors[mode] = selector = self.adapter.selector(mode)
        self._prepare_display(selector)
        replicas = self.adapter.num_replicas()
        epoch_base = self.schedule.epoch_base
        triggered = False
        for item in items:
            if mode == "train":
                step, batch = item["counter"], item["counter"] - epoch_base
            else:
                step, batch = self.global_step, item["counter"]
            captured = CapturedBatch.from_step(
                item,
                mode=mode,
                step=step,
                epoch=self.epoch,
                batch=batch,
                wall_time=time.time(),
                num_replicas=replicas,
            )
            if mode == "train":
                self.writer.submit(captured)
                triggered = triggered or captured.trigger_code > 0
            else:  # written together at the end of validation: one record per step
                self._pending_validation.append(captured)
        if triggered:  # before a later callback can stop training: on disk now
            self._write_composition(force=True)
            self.writer.flush(status_extra=self._status_extra())

    def composed(self, rows: dict[str, Any]) -> None:
        """Takes the composition of training steps; writes full blocks."""
        if self.composition is None or self.writer is None:
            return
        self.composition.add(rows)
        self._write_composition(force=False)

    def _write_composition(self, force: bool) -> None:
        if self.composition is None or self.writer is None:
            return
        for first_step, elements in self.composition.blocks(force):
            self.writer.submit_summary(
                "train",
                contract.COMPOSITION_TAG,
                contract.SERIES_COMPOSITION,
                first_step,
                elements,
            )

    def warn(self, key: str, message: str) -> None:
        """One warning per key, and remembered for the status record."""
        if key in self._warned:
            return
        self._warned.add(key)
        self._warning_texts.append(message)
        warnings.warn(f"tb_batch_images: {message}", RuntimeWarning, stacklevel=2)
        _log.warning("%s", message)

    # -- records -------------------------------------------------------------------
    def batch_encoder(
        self,
        batch: CapturedBatch,
        sequence: int,
        selector: SampleSelector,
        selection: str,
    ) -> Callable[[], list[bytes]]:
        """On the training thread, a function building `batch`'s record on the writer
        thread (the watchlist's batches: another selector, another selection)."""
        self._prepare_display(selector)
        options = dataclasses.replace(self._record_options, selection=selection)
        writer = self.writer

        def build() -> list[bytes]:
            dropped = writer.dropped(batch.mode) if writer is not None else {}
            return self._elements(batch, sequence, dropped, selector, options)

        return build

    def _batch_elements(
        self, batch: CapturedBatch, sequence: int, dropped: dict[str, int]
    ) -> list[bytes]:
        """The writer's `build_elements` for the batches the schedule captured."""
        selector = self._selectors[batch.mode]
        return self._elements(batch, sequence, dropped, selector, self._record_options)

    def _elements(
        self,
        batch: CapturedBatch,
        sequence: int,
        dropped: dict[str, int],
        selector: SampleSelector,
        options: record.RecordOptions,
    ) -> list[bytes]:
        """Record + encoded images of one batch (on the writer thread)."""
        return record.build_elements(
            batch,
            sequence,
            dropped,
            selector,
            options,
            self._task,
            self._from_logits,
            self.warn,
        )

    def _prepare_display(self, selector: SampleSelector | None) -> None:
        """How to undo the preprocessing layers for display, read on the training
        thread before the writer thread needs it."""
        if self.adapter is not None and selector is not None:
            self.adapter.prepare_display(selector.layout)

    def _status_extra(self) -> dict[str, Any]:
        extra = {"step": self.global_step, "warnings": list(self._warning_texts)}
        off = None if self.data_map is None else self.data_map.off_reason
        if off is not None:  # the Dataset view says why it has nothing to show
            extra["data_map_off"] = off
        return extra


def _optimizer_step(model: keras.Model) -> int:
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    try:
        return int(np.asarray(keras.ops.convert_to_numpy(iterations)))
    except (TypeError, ValueError, AttributeError):
        return 0
