"""One TensorBoard event file, written as `tf.summary` writes it, without an op per value.

An event file is a TFRecord file of `Event` protos: a header event (`file_version`),
then one event per summary value. `tf.summary.write` makes each value through a
TensorFlow op (~0.25 ms a value, more on a busy machine, holding the interpreter
while the training thread wants it); here the `Event` is built as a proto and
appended with `tf.io.TFRecordWriter` (~0.01 ms), through TensorFlow's file systems,
so any `tf.io.gfile` path works. The bytes are those `tf.summary` writes: the file
name (`events.out.tfevents.<time>.<host>.<pid>.<n>.v2`), the header, the values with
their `SummaryMetadata` (on the first value of each tag in the file, as TensorBoard
reads it), string tensors as `tf.constant` makes them.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Sequence

import tensorflow as tf
from tensorboard.compat.proto import (
    event_pb2,
    summary_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)

_COUNTER = itertools.count()


def string_tensor(elements: bytes | Sequence[bytes]) -> tensor_pb2.TensorProto:
    """A string tensor: rank 0 for one `bytes`, rank 1 for a sequence of them."""
    if isinstance(elements, bytes):
        return tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(),
            string_val=[elements],
        )
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(elements))]
        ),
        string_val=list(elements),
    )


class EventFile:
    """Appends summary values to a new event file in `run_dir`.

    Args:
        run_dir: the run directory (made if missing).
        flush_seconds: None flushes after every value (a local disk: a killed process
            loses nothing written); a number flushes at most that often, and on
            `flush()` (remote storage, where each flush uploads the whole file again).
    """

    def __init__(self, run_dir: str, flush_seconds: float | None = None):
        tf.io.gfile.makedirs(run_dir)
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
            f".{os.getpid()}.{next(_COUNTER)}.v2"
        )
        self.path = run_dir.rstrip("/") + "/" + name
        self._file = tf.io.TFRecordWriter(self.path)
        self._flush_seconds = flush_seconds
        self._flushed = time.monotonic()
        self._tagged: set[str] = set()
        header = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
        self._file.write(header.SerializeToString())
        self.flush()

    def write(
        self,
        tag: str,
        tensor: tensor_pb2.TensorProto,
        step: int,
        metadata: summary_pb2.SummaryMetadata,
    ) -> None:
        """Appends one value at `step` (its metadata only on the tag's first value)."""
        value = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
        if tag not in self._tagged:
            value.metadata.CopyFrom(metadata)
            self._tagged.add(tag)
        event = event_pb2.Event(
            wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=[value])
        )
        self._file.write(event.SerializeToString())
        if self._flush_seconds is None:
            self._file.flush()
        elif time.monotonic() - self._flushed >= self._flush_seconds:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self._flushed = time.monotonic()

    def close(self) -> None:
        self._file.close()
