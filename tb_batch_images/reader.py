"""`read_batches`: the logged batches of every run under a log directory.

Reads through TensorBoard's own event-file loading (the event multiplexer), so it
works on any `tf.io.gfile` path that TensorBoard can read.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.util import tensor_util

from tb_batch_images import format as fmt


@dataclasses.dataclass
class LoggedSample:
    """One sample of a logged batch. `record` holds every field of docs/format.md."""

    position: int
    sample_id: int | None
    filename: str | None
    label: Any
    label_name: str | None
    prediction: Any
    prediction_name: str | None
    confidence: float | None
    correct: bool | None
    top_k: list[dict[str, Any]]
    loss: float | None
    flags: list[str]
    image: np.ndarray  # uint8 [height, width, channels]
    record: dict[str, Any]


@dataclasses.dataclass
class LoggedBatch:
    """One logged step of one run."""

    run: str
    mode: str
    step: int
    epoch: int
    batch: int
    wall_time: float
    batch_size: int
    samples: list[LoggedSample]
    record: dict[str, Any]


def read_batches(logdir: str, run: str | None = None) -> Iterator[LoggedBatch]:
    """Yields every logged batch under `logdir` (searched recursively).

    Batches come run by run (sorted by name), each run's in step order. Every step is
    read (no sampling). `run` restricts to one run, named relative to `logdir` as
    TensorBoard names it (e.g. `"train"` or `"exp1/validation"`).
    """
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance={fmt.PLUGIN_NAME: 0}
    )
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    runs = multiplexer.PluginRunToTagToContent(fmt.PLUGIN_NAME)
    for run_name in sorted(runs):
        if run is not None and run_name != run:
            continue
        for tag, content in runs[run_name].items():
            if fmt.parse_plugin_content(content)["kind"] != fmt.KIND_BATCHES:
                continue
            events = sorted(multiplexer.Tensors(run_name, tag), key=lambda e: e.step)
            for event in events:
                yield _batch(run_name, event)


def _batch(run: str, event: Any) -> LoggedBatch:
    elements = tensor_util.make_ndarray(event.tensor_proto)
    record = fmt.decode_record(bytes(elements[0]))
    samples = [
        _sample(sample, bytes(data))
        for sample, data in zip(record.get("samples", []), elements[1:], strict=False)
    ]
    return LoggedBatch(
        run=run,
        mode=record.get("mode", "train"),
        step=int(event.step),
        epoch=record.get("epoch", 0),
        batch=record.get("batch", 0),
        wall_time=record.get("wall_time", event.wall_time),
        batch_size=record.get("batch_size", len(samples)),
        samples=samples,
        record=record,
    )


def _sample(sample: dict[str, Any], image_bytes: bytes) -> LoggedSample:
    image = np.asarray(Image.open(io.BytesIO(image_bytes)))
    if image.ndim == 2:
        image = image[..., np.newaxis]
    return LoggedSample(
        position=sample.get("position"),
        sample_id=sample.get("sample_id"),
        filename=sample.get("filename"),
        label=sample.get("label"),
        label_name=sample.get("label_name"),
        prediction=sample.get("prediction"),
        prediction_name=sample.get("prediction_name"),
        confidence=sample.get("confidence"),
        correct=sample.get("correct"),
        top_k=sample.get("top_k", []),
        loss=sample.get("loss"),
        flags=sample.get("flags", []),
        image=image,
        record=sample,
    )
