"""`read_batches`: the logged batches of every run under a log directory.

Reads through TensorBoard's own event-file loading (the event multiplexer), so it
works on any `tf.io.gfile` path that TensorBoard can read. Every record is checked by
`tb_batch_images.validate`, as the plugin checks it: a step whose record cannot be used
comes back with `error` set and no samples, rather than raising.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.util import tensor_util

from tb_batch_images import format as fmt
from tb_batch_images import validate


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
    wanted = fmt.KIND_WATCHLIST if watchlist else fmt.KIND_BATCHES
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
            if fmt.parse_plugin_content(content)["kind"] != wanted:
                continue
            events = sorted(multiplexer.Tensors(run_name, tag), key=lambda e: e.step)
            for event in events:
                yield _batch(run_name, event)


def _batch(run: str, event: Any) -> LoggedBatch:
    try:
        elements = tensor_util.make_ndarray(event.tensor_proto).reshape(-1)
    except (ValueError, TypeError) as error:
        elements, problem = [], f"not a blob sequence ({error})"
    else:
        problem = None if len(elements) else "empty value: no record"
    checked = (
        validate.check_batch_record(bytes(elements[0]))
        if problem is None
        else validate.Checked(record=None, error=problem)
    )
    mode = run.rsplit("/", 1)[-1]
    if checked.record is None:
        return LoggedBatch(
            run=run,
            mode=mode if mode in fmt.MODE_DIRS else "train",
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
        mode=record.get("mode", mode if mode in fmt.MODE_DIRS else "train"),
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
    )


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


# Columns that hold whole numbers (read as int; -1 where none).
_INTEGER_COLUMNS = ("count", "forgetting", "label", "predicted_instead")


@dataclasses.dataclass
class SampleStatsEpoch:
    """The statistics of every sample of one run after one epoch (docs/format.md).

    `columns` maps each name of `SAMPLE_STATS_COLUMNS` to a float32 array indexed by
    sample id; `filenames` maps sample ids to filenames when the logger had them.
    """

    run: str
    epoch: int
    step: int
    num_samples: int
    class_names: list[str] | None
    filenames: list[str] | None
    columns: dict[str, np.ndarray]
    record: dict[str, Any]

    def suspects(self, k: int = 20) -> list[int]:
        """The sample ids of the k highest suspect scores, most suspect first."""
        score = np.nan_to_num(self.columns["suspect_score"], nan=-np.inf)
        return [int(i) for i in np.argsort(-score, kind="stable")[:k]]


class SampleStatsRows(list):
    """Rows (dicts) per (run, epoch, sample); `.epochs` holds the column arrays."""

    def __init__(self, rows: list[dict[str, Any]], epochs: list[SampleStatsEpoch]):
        super().__init__(rows)
        self.epochs = epochs

    def to_pandas(self) -> Any:
        """A pandas DataFrame of the rows (pandas is an optional dependency)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("to_pandas() needs pandas: pip install pandas") from None
        return pandas.DataFrame(list(self))


def read_sample_stats(
    logdir: str, run: str | None = None, include_unseen: bool = False
) -> SampleStatsRows:
    """Every sample's training statistics, one row per (run, epoch, sample).

    Each row has `run`, `epoch`, `step`, `sample_id`, `filename` and every column of
    `SAMPLE_STATS_COLUMNS` (see docs/format.md). Samples never seen in training
    (count 0) are left out unless `include_unseen=True`.
    """
    epochs = list(_sample_stats_epochs(logdir, run))
    rows: list[dict[str, Any]] = []
    for table in epochs:
        count = table.columns["count"]
        ids = range(table.num_samples) if include_unseen else np.flatnonzero(count)
        for sample_id in ids:
            row: dict[str, Any] = {
                "run": table.run,
                "epoch": table.epoch,
                "step": table.step,
                "sample_id": int(sample_id),
                "filename": (
                    table.filenames[sample_id]
                    if table.filenames and sample_id < len(table.filenames)
                    else None
                ),
            }
            for name, values in table.columns.items():
                value = float(values[sample_id])
                if name in _INTEGER_COLUMNS and np.isfinite(value):
                    value = int(value)
                row[name] = value
            rows.append(row)
    return SampleStatsRows(rows, epochs)


def _sample_stats_epochs(logdir: str, run: str | None) -> Iterator[SampleStatsEpoch]:
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
            if fmt.parse_plugin_content(content)["kind"] != fmt.KIND_SAMPLE_STATS:
                continue
            events = sorted(multiplexer.Tensors(run_name, tag), key=lambda e: e.step)
            for event in events:
                elements = tensor_util.make_ndarray(event.tensor_proto)
                yield decode_sample_stats(run_name, [bytes(e) for e in elements])


def decode_sample_stats(run: str, elements: list[bytes]) -> SampleStatsEpoch:
    """One sample-stats value (its blob sequence) -> SampleStatsEpoch."""
    record = fmt.decode_record(elements[0])
    if record.get("stats_version", 1) > fmt.SAMPLE_STATS_VERSION:
        raise ValueError(
            f"sample stats version {record['stats_version']} is newer than this "
            f"reader ({fmt.SAMPLE_STATS_VERSION}); upgrade tb-batch-images"
        )
    names = record["columns"]
    num_samples = int(record["num_samples"])
    matrix = np.frombuffer(elements[1], "<f4").reshape(len(names), num_samples)
    filenames = json.loads(elements[2]) if len(elements) > 2 and elements[2] else None
    return SampleStatsEpoch(
        run=run,
        epoch=int(record.get("epoch", 0)),
        step=int(record.get("step", 0)),
        num_samples=num_samples,
        class_names=record.get("class_names"),
        filenames=filenames,
        columns={name: matrix[i] for i, name in enumerate(names)},
        record=record,
    )
