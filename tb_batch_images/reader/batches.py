"""`read_batches`: the logged batches of every run under a log directory.

Reads through TensorBoard's own event-file loading (the event multiplexer), so it
works on any `tf.io.gfile` path that TensorBoard can read; format version 3 pack files
are read through `tf.io.gfile` too (TensorBoard's `tensorboard.compat.tf`). Every record
is checked by `tb_batch_images.contract.schema`, as the plugin checks it: a step whose
record cannot be used, or whose pack file is missing or damaged, comes back with
`error` set and no samples, rather than raising.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image
from tensorboard.compat import tf
from tensorboard.util import tensor_util

from tb_batch_images import contract
from tb_batch_images.reader.events import LoggedStep, batch_steps, plugin_values


@dataclasses.dataclass
class LoggedSample:
    """One sample of a logged batch. `record` holds its checked fields (docs/format.md)."""

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
    image: np.ndarray | None  # uint8 [height, width, channels]; None if undecodable
    record: dict[str, Any]
    # Dense outputs (the batch record's `masks`): uint8 [height, width] masks, as
    # docs/format.md says how to read them; None when the sample has none.
    label_mask: np.ndarray | None = None
    prediction_mask: np.ndarray | None = None
    # Object detection (docs/format.md, "Boxes"): "label" [K, 4] float32 xyxy in the
    # pixels of `image`, "label_classes" [K]; where predicted boxes were logged also
    # "prediction" [P, 4], "prediction_classes" [P], "prediction_scores" [P] (NaN:
    # none). None when the sample has no boxes. The checks and scores are in
    # `record["boxes"]`.
    boxes: dict[str, np.ndarray] | None = None

    @property
    def culprit(self) -> bool:
        """On a triggered batch: this sample is what triggered it (docs/format.md)."""
        return bool(self.record.get("culprit", False))


@dataclasses.dataclass
class LoggedBatch:
    """One logged step of one run.

    `error` is None, or why the step's record cannot be used (then `samples` is empty
    and the other fields are defaults). `warnings` says what the validator dropped,
    clamped or cut (docs/format.md, "Validation").
    """

    run: str
    mode: str
    step: int
    epoch: int | None
    batch: int | None
    wall_time: float
    batch_size: int
    samples: list[LoggedSample]
    record: dict[str, Any]
    error: str | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def trigger(self) -> str | None:
        """Why the batch was logged: `"schedule"`, `"non_finite"` or `"spike"`
        (None for records written before triggers existed, and watchlist batches)."""
        return self.record.get("trigger")


def read_batches(
    logdir: str, run: str | None = None, watchlist: bool = False
) -> Iterator[LoggedBatch]:
    """Yields every logged batch under `logdir` (searched recursively).

    Batches come run by run (sorted by name), each run's in step order. Every step is
    read (no sampling). `run` restricts to one run, named relative to `logdir` as
    TensorBoard names it (e.g. `"train"` or `"exp1/validation"`). `watchlist=True`
    yields the watchlist captures instead (`batch_images_watchlist`: one batch per
    epoch, the last epoch's top suspects as they next appeared in training batches;
    each sample's `record["batch"]` is the batch it was captured in).
    """
    if watchlist:
        for run_name, event in plugin_values(logdir, run, contract.SERIES_WATCHLIST):
            yield _batch(run_name, event)
        return
    for run_name, run_dir, steps in batch_steps(logdir, run):
        for logged in steps:
            if logged.entry is None:
                yield _batch(run_name, logged.event)
            else:
                yield _pack_batch(run_name, run_dir, logged)


def _pack_batch(run: str, run_dir: str, logged: LoggedStep) -> LoggedBatch:
    """A version 3 step: its pack file, read and checked against its entry."""
    entry = logged.entry
    try:
        elements = contract.read_pack(run_dir, entry, _read_file)
    except contract.PackError as error:
        mode = run.rsplit("/", 1)[-1]
        return LoggedBatch(
            run=run,
            mode=entry.mode or (mode if mode in contract.MODE_DIRS else "train"),
            step=logged.step,
            epoch=entry.epoch,
            batch=entry.batch,
            wall_time=entry.wall_time or logged.wall_time,
            batch_size=entry.batch_size or 0,
            samples=[],
            record={},
            error=f"picture lost: {error}",
        )
    return _batch(run, logged.event, elements)


def _read_file(path: str, limit: int) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as file:
        return file.read(limit)


def _batch(run: str, event: Any, elements: list[bytes] | None = None) -> LoggedBatch:
    """A logged step from its elements (record, images): a version 2 value's, or
    (`elements`) a version 3 pack's."""
    problem = None
    if elements is None:
        try:
            elements = tensor_util.make_ndarray(event.tensor_proto).reshape(-1)
        except (ValueError, TypeError) as error:
            elements, problem = [], f"not a blob sequence ({error})"
    if problem is None and not len(elements):
        problem = "empty value: no record"
    checked = (
        contract.check_batch_record(bytes(elements[0]))
        if problem is None
        else contract.Checked(record=None, error=problem)
    )
    mode = run.rsplit("/", 1)[-1]
    if checked.record is None:
        return LoggedBatch(
            run=run,
            mode=mode if mode in contract.MODE_DIRS else "train",
            step=int(event.step),
            epoch=None,
            batch=None,
            wall_time=event.wall_time,
            batch_size=0,
            samples=[],
            record={},
            error=checked.error,
        )
    record = checked.record
    warnings = list(checked.warnings)
    images = [bytes(data) for data in elements[1:]]
    if len(record["samples"]) > len(images):
        warnings.append(
            f"{len(record['samples'])} samples but {len(images)} images: some have none"
        )
    samples = [
        _sample(sample, images[index] if index < len(images) else None, warnings)
        for index, sample in enumerate(record["samples"])
    ]
    for sample in samples:
        for field in ("label_mask", "prediction_mask"):
            index = sample.record.get(field)
            if index is not None:
                mask = _decoded(images[index] if index < len(images) else None)
                if mask is None:
                    warnings.append(f"{field} of sample {sample.position}: no image")
                setattr(sample, field, None if mask is None else mask[..., 0])
    return LoggedBatch(
        run=run,
        mode=record.get("mode", mode if mode in contract.MODE_DIRS else "train"),
        step=int(event.step),
        epoch=record.get("epoch", 0),
        batch=record.get("batch", 0),
        wall_time=record.get("wall_time", event.wall_time),
        batch_size=record.get("batch_size", len(samples)),
        samples=samples,
        record=record,
        warnings=warnings,
    )


def _sample(
    sample: dict[str, Any], image_bytes: bytes | None, warnings: list[str]
) -> LoggedSample:
    image = _decoded(image_bytes, warnings, f"image of sample {sample['position']}")
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
        boxes=_boxes(sample.get("boxes")),
    )


def _boxes(field: dict[str, Any] | None) -> dict[str, np.ndarray] | None:
    """A sample's `boxes` as arrays (the validator left only usable lists)."""
    if not isinstance(field, dict) or "label" not in field:
        return None

    def classes(values: list) -> np.ndarray:
        numbers = np.asarray(
            [np.nan if v is None else v for v in values], np.float64
        ).reshape(-1)
        whole = np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers))
        return numbers.astype(np.int64) if whole else numbers

    boxes = {
        "label": np.asarray(field["label"], np.float32).reshape(-1, 4),
        "label_classes": classes(field.get("label_classes", [])),
    }
    if "prediction" in field:
        boxes["prediction"] = np.asarray(field["prediction"], np.float32).reshape(-1, 4)
        boxes["prediction_classes"] = classes(field.get("prediction_classes", []))
        boxes["prediction_scores"] = np.asarray(
            [np.nan if v is None else v for v in field.get("prediction_scores", [])],
            np.float32,
        )
    return boxes


def _decoded(
    data: bytes | None, warnings: list[str] | None = None, what: str = ""
) -> np.ndarray | None:
    """An encoded image as uint8 [height, width, channels]; None if undecodable."""
    if data is None:
        return None
    try:
        image = np.asarray(Image.open(io.BytesIO(data)))
    except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError too
        if warnings is not None:
            warnings.append(f"{what}: {error}")
        return None
    return image[..., np.newaxis] if image.ndim == 2 else image
