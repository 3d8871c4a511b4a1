"""Background writing of captured batches: pack files and TensorBoard event files.

The training thread hands a `CapturedBatch` (numpy copies, `tb_batch_images.capture.batch`) to `BackgroundWriter.submit`,
which never blocks: when the bounded queue is full the batch is dropped and counted. A
daemon thread, at the process's normal CPU priority (`WRITER_NICE`), turns each batch
into its record and encoded images (with the `build_elements` function it was given),
writes them as one pack file (format version 3, `contract.packs`) and closes it, then
appends the step's small index entry to the run's event file (`event_file.EventFile`),
flushed after each on a local disk. So a killed process loses at most `max_queue + 1`
batches: those waiting in the queue and the one being encoded (its pack, if written,
has no entry and is never shown). `flush` (epoch end) and `close` (train end) wait for
the queue.

Everything goes through TensorFlow's file systems (`tf.io.gfile`), so any path
TensorFlow can write works (`gs://...`). On such remote storage every flush of an
event file uploads the whole file again, so there the event file is flushed every
`REMOTE_FLUSH_SECONDS` and at each epoch end, not after every step: a killed process
may lose the entries of that long (their packs stay, unnamed).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tb_batch_images import contract
from tb_batch_images.capture.batch import CapturedBatch
from tb_batch_images.host.event_file import EventFile, string_tensor

_log = logging.getLogger("tb_batch_images")

_STOP = object()

# The writer thread's niceness (Linux, per thread): 0 runs it at the priority training
# has. It used to be 19 (lowest): on two cores busy with training that starved it and
# every-batch logging dropped batches (benchmarks/README.md, "A writer that keeps up").
# The overhead benchmark sets it back with --writer-nice for comparison.
WRITER_NICE = 0

# How often the event file is flushed on remote storage (each flush uploads the whole
# file again there); the epoch end flushes too.
REMOTE_FLUSH_SECONDS = 30


def is_local_path(path: str) -> bool:
    """Whether a log directory is on the local disk (no scheme, or file://)."""
    return not contract.is_remote(path)


def new_writer_id() -> str:
    """A random writer id: 16 hex digits, in the name of every pack this writer makes."""
    return secrets.token_hex(8)


def open_event_file(run_dir: str) -> EventFile:
    """The event file a writer appends to in `run_dir`: flushed after every value on
    the local disk, every `REMOTE_FLUSH_SECONDS` on remote storage."""
    local = is_local_path(run_dir)
    return EventFile(run_dir, None if local else REMOTE_FLUSH_SECONDS)


def write_pack(path: str, pack: bytes) -> None:
    """Writes one pack file, whole, and closes it (one upload on object stores)."""
    with tf.io.gfile.GFile(path, "wb") as file:
        file.write(pack)


def write_index_entry(event_file: EventFile, step: int, entry: bytes) -> None:
    """Appends a step's index entry (a rank-0 string tensor) to the event file."""
    event_file.write(
        contract.index_tag(step), string_tensor(entry), step, contract.index_metadata()
    )


def write_step(
    event_file: EventFile,
    run_dir: str,
    writer_id: str,
    step: int,
    elements: list[bytes],
    *,
    made_dirs: set[str],
) -> None:
    """One logged step in format version 3: its pack file, closed, then its entry.

    `elements` are `build_elements`'s (the JSON record, pictures, masks). The entry is
    written only once the pack is whole, so an entry never names a partial file.
    `made_dirs`: the pack folders this writer has made (one `makedirs` per 1,000
    steps).
    """
    pack = contract.encode_pack(elements)
    path = run_dir.rstrip("/") + "/" + contract.pack_relpath(writer_id, step)
    folder = path.rsplit("/", 1)[0]
    if folder not in made_dirs:
        tf.io.gfile.makedirs(folder)
        made_dirs.add(folder)
    write_pack(path, pack)
    entry = contract.encode_index_entry(
        writer=writer_id, step=step, pack=pack, record=_record_fields(elements)
    )
    write_index_entry(event_file, step, entry)


def _record_fields(elements: list[bytes]) -> dict[str, Any]:
    """The record of element 0, or {} when it is none (the entry then lists no
    fields of it; readers show the record's own error)."""
    try:
        record = json.loads(elements[0])
    except (IndexError, ValueError, RecursionError):
        return {}
    return record if isinstance(record, dict) else {}


def write_value(
    event_file: EventFile, tag: str, series_kind: str, step: int, elements: list[bytes]
) -> None:
    """Appends one blob-sequence value (a rank-1 string tensor): status records,
    sample statistics, watchlist captures."""
    event_file.write(
        tag, string_tensor(elements), step, contract.summary_metadata(series_kind)
    )


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
        # Random per writer: a restarted run writing the same steps again makes new
        # files, and its entries name only them (docs/format.md, "Restarts").
        self.writer_id = new_writer_id()
        self._pack_dirs: set[str] = set()
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

    def _run_dir(self, mode: str) -> str:
        return self._log_dir.rstrip("/") + "/" + contract.MODE_DIRS[mode]

    def _writer_for(self, mode: str) -> EventFile:
        if mode not in self._writers:
            self._writers[mode] = open_event_file(self._run_dir(mode))
        return self._writers[mode]

    def _write_step(self, mode: str, step: int, elements: list[bytes]) -> None:
        write_step(
            self._writer_for(mode),
            self._run_dir(mode),
            self.writer_id,
            step,
            elements,
            made_dirs=self._pack_dirs,
        )

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
            self._write_step(mode, batch.step, elements)
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
            write_value(self._writer_for(mode), tag, series_kind, step, elements)
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
                event_file = self._writer_for(mode)
                write_value(
                    event_file,
                    contract.STATUS_TAG,
                    contract.SERIES_STATUS,
                    step,
                    [contract.encode_record(record)],
                )
                event_file.flush()  # remote storage: the epoch end's upload
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
