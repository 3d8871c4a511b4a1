"""Background writing of captured batches to TensorBoard event files.

The training thread hands a `CapturedBatch` (numpy copies, `tb_batch_images.capture.batch`) to `BackgroundWriter.submit`,
which never blocks: when the bounded queue is full the batch is dropped and counted. A
daemon thread, at the process's normal CPU priority (`WRITER_NICE`), turns each batch
into its record and encoded images (with the `build_elements` function it was given) and
writes one summary per batch with `tf.summary`, flushing after each. So a killed process
loses at most `max_queue + 1` batches: those waiting in the queue and the one being
encoded. `flush` (epoch end) and `close` (train end) wait for the queue.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tb_batch_images import contract
from tb_batch_images.capture.batch import CapturedBatch

_log = logging.getLogger("tb_batch_images")

_STOP = object()

# The writer thread's niceness (Linux, per thread): 0 runs it at the priority training
# has. It used to be 19 (lowest): on two cores busy with training that starved it and
# every-batch logging dropped batches (benchmarks/README.md, "A writer that keeps up").
# The overhead benchmark sets it back with --writer-nice for comparison.
WRITER_NICE = 0


def write_summary(
    summary_writer: Any, tag: str, series_kind: str, step: int, elements: list[bytes]
) -> None:
    """Writes one blob-sequence summary (rank-1 string tensor) and flushes."""
    with summary_writer.as_default():
        tf.summary.write(
            tag=tag,
            tensor=tf.constant(elements, dtype=tf.string),
            step=step,
            metadata=contract.summary_metadata(series_kind),
        )
    summary_writer.flush()


class BackgroundWriter:
    """A daemon thread with a bounded queue that writes batches for several modes.

    Args:
        log_dir: the user's log directory; modes write to its sub-directories.
        build_elements: turns a `CapturedBatch` plus its sequence number into the list
            of tensor elements (record, images). Runs on the writer thread.
        max_queue: batches waiting at most; more are dropped and counted.
        warn: called with (key, message) for problems; one message per key.
    """

    def __init__(
        self,
        log_dir: str,
        build_elements: Callable[[CapturedBatch, int, dict[str, int]], list[bytes]],
        max_queue: int,
        warn: Callable[[str, str], None],
    ):
        self._log_dir = log_dir
        self._build_elements = build_elements
        self._warn = warn
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._writers: dict[str, Any] = {}
        self._written: dict[str, int] = {}
        self._dropped: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._nice = WRITER_NICE
        self._thread = threading.Thread(
            target=self._run, name="tb_batch_images-writer", daemon=True
        )
        self._thread.start()
        # Drain the queue if the process exits without on_train_end (an exception,
        # KeyboardInterrupt): atexit runs before daemon threads are stopped.
        atexit.register(self.close, 30.0)

    # -- training thread ------------------------------------------------------
    def submit(self, batch: CapturedBatch) -> bool:
        """Queues a batch without blocking; returns False if it was dropped."""
        try:
            self._queue.put_nowait(batch)
            return True
        except queue.Full:
            self.count_drop(batch.mode, "queue_full")
            self._warn(
                "queue_full",
                "the background writer is behind; batches are being dropped "
                "(log fewer steps or samples, or raise max_queue)",
            )
            return False

    def submit_summary(
        self,
        mode: str,
        tag: str,
        series_kind: str,
        step: int,
        elements: list[bytes] | Callable[[], list[bytes]],
    ) -> None:
        """Queues one value (e.g. sample statistics); waits for room.

        `elements` may be a function making them, called on the writer thread.
        """
        self._put_control(("summary", mode, tag, series_kind, step, elements))

    def count_drop(self, mode: str, reason: str, count: int = 1) -> None:
        with self._lock:
            per_mode = self._dropped.setdefault(mode, _zero_drops())
            per_mode[reason] = per_mode.get(reason, 0) + count

    def dropped(self, mode: str) -> dict[str, int]:
        with self._lock:
            return dict(self._dropped.get(mode, _zero_drops()))

    def written(self, mode: str) -> int:
        """Batches of `mode` written so far."""
        return self._written.get(mode, 0)

    def flush(self, timeout: float = 60.0, status_extra: dict | None = None) -> None:
        """Waits until queued batches are written, then writes status records."""
        done = threading.Event()
        self._put_control(("flush", done, status_extra or {}))
        if not done.wait(timeout):
            self._warn(
                "flush_timeout",
                f"the background writer did not finish within {timeout:.0f}s",
            )

    def close(self, timeout: float = 60.0, status_extra: dict | None = None) -> None:
        """Flushes, writes status and stops the thread. Safe to call twice."""
        atexit.unregister(self.close)
        if not self._thread.is_alive():
            return
        self.flush(timeout, status_extra)
        self._put_control(_STOP)
        self._thread.join(timeout)

    def _put_control(self, item: Any) -> None:
        # Control items must not be dropped: wait for room, but not forever.
        try:
            self._queue.put(item, timeout=60)
        except queue.Full:
            self._warn("flush_timeout", "the background writer is stuck; giving up")

    # -- writer thread --------------------------------------------------------
    def _run(self) -> None:
        _set_priority(self._nice)
        while True:
            item = self._queue.get()
            if item is _STOP:
                self._close_writers()
                return
            if isinstance(item, tuple) and item and item[0] == "flush":
                _, done, extra = item
                self._write_status(extra)
                done.set()
                continue
            if isinstance(item, tuple) and item and item[0] == "summary":
                self._write_value(*item[1:])
                continue
            self._write_batch(item)

    def _writer_for(self, mode: str) -> Any:
        if mode not in self._writers:
            path = self._log_dir.rstrip("/") + "/" + contract.MODE_DIRS[mode]
            tf.io.gfile.makedirs(path)
            self._writers[mode] = tf.summary.create_file_writer(
                path, max_queue=1, flush_millis=1000
            )
        return self._writers[mode]

    def _write_batch(self, batch: CapturedBatch) -> None:
        mode = batch.mode
        try:
            elements = self._build_elements(
                batch, self._written.get(mode, 0), self.dropped(mode)
            )
        except Exception as error:  # an input we cannot turn into pixels
            self.count_drop(mode, "error")
            self._warn(
                "encode", f"could not encode a batch ({type(error).__name__}: {error})"
            )
            return
        if elements is None:
            self.count_drop(mode, "not_image")
            return
        try:
            write_summary(
                self._writer_for(mode),
                contract.BATCHES_TAG,
                contract.SERIES_BATCHES,
                batch.step,
                elements,
            )
            self._written[mode] = self._written.get(mode, 0) + 1
        except Exception as error:
            self.count_drop(mode, "error")
            self._warn(
                "write",
                f"could not write to {self._log_dir!r} ({type(error).__name__}: "
                f"{_first_line(error)}); training goes on without batch images",
            )

    def _write_value(
        self, mode: str, tag: str, series_kind: str, step: int, elements
    ) -> None:
        try:
            if callable(elements):
                elements = elements()
            write_summary(self._writer_for(mode), tag, series_kind, step, elements)
        except Exception as error:
            self._warn("write", f"could not write {tag} ({_first_line(error)})")

    def _write_status(self, extra: dict) -> None:
        extra = dict(extra)
        step = int(extra.pop("step", 0))
        with self._lock:
            modes = set(self._writers) | set(self._dropped)
        if extra.get("data_map_off"):  # the Dataset view reads it from the train run
            modes.add("train")
        modes = sorted(modes)
        for mode in modes:
            record = {
                "mode": mode,
                "wall_time": time.time(),
                "batches_written": self._written.get(mode, 0),
                "dropped": self.dropped(mode),
                **extra,
            }
            try:
                write_summary(
                    self._writer_for(mode),
                    contract.STATUS_TAG,
                    contract.SERIES_STATUS,
                    step,
                    [contract.encode_record(record)],
                )
            except Exception as error:
                self._warn("write", f"could not write status ({_first_line(error)})")

    def _close_writers(self) -> None:
        for summary_writer in self._writers.values():
            try:
                summary_writer.close()
            except Exception as error:  # disk full at close: nothing more to do
                _log.debug("closing writer failed: %s", error)


def _set_priority(nice: int) -> None:
    """Sets this thread's niceness (Linux: per thread); 0 leaves it as it is."""
    if not nice:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except (AttributeError, OSError):
        pass  # not supported here: the queue bound still keeps training unblocked


def _zero_drops() -> dict[str, int]:
    return {"queue_full": 0, "error": 0, "not_image": 0}


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
