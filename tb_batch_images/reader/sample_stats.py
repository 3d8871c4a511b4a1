"""`read_sample_stats`: every sample's training statistics under a log directory.

One row per (run, epoch, sample), read through TensorBoard's own event-file loading,
decoded by the contract (`tb_batch_images.contract.decode_sample_stats`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from tensorboard.util import tensor_util

from tb_batch_images import contract
from tb_batch_images.contract import SampleStatsEpoch
from tb_batch_images.reader.events import plugin_values

# Columns that hold whole numbers (read as int; -1 where none).
_INTEGER_COLUMNS = (
    "count",
    "forgetting",
    "label",
    "predicted_instead",
    "last_predicted",
)


def _pandas_frame(rows: list[dict[str, Any]], columns: Any = None) -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError("to_pandas() needs pandas: pip install pandas") from None
    return pandas.DataFrame(rows, columns=columns)


class Suspects(list):
    """Ranked suspects, most suspect first: one dict per sample with the fields of
    `contract.SUSPECT_FIELDS` (rank, run, epoch, sample_id, filename, the given label
    and its name, the class predicted instead and its name, `non_finite`, the
    scores). Export with `to_csv`, or `to_pandas`; clean the next run's data with
    `tb_batch_images.cleaning` (`exclude` / `relabel`)."""

    def to_csv(self, path: str | None = None) -> str:
        """The rows as CSV text (the same as the Dataset view's download); also
        written to `path` when given (any `tf.io.gfile` path is not needed: a local
        file)."""
        text = contract.suspects_csv(list(self))
        if path is not None:
            with open(path, "w", encoding="utf-8", newline="") as file:
                file.write(text)
        return text

    def to_pandas(self) -> Any:
        """A pandas DataFrame of the rows (pandas is an optional dependency)."""
        return _pandas_frame(list(self), columns=list(contract.SUSPECT_FIELDS))

    @property
    def filenames(self) -> list[str]:
        """The suspects' filenames (those that have one), most suspect first."""
        return [row["filename"] for row in self if row["filename"] is not None]

    @property
    def sample_ids(self) -> list[int]:
        return [row["sample_id"] for row in self]


class SampleStatsRows(list):
    """Rows (dicts) per (run, epoch, sample); `.epochs` holds the column arrays."""

    def __init__(self, rows: list[dict[str, Any]], epochs: list[SampleStatsEpoch]):
        super().__init__(rows)
        self.epochs = epochs

    def to_pandas(self) -> Any:
        """A pandas DataFrame of the rows (pandas is an optional dependency)."""
        return _pandas_frame(list(self))

    def suspects(
        self, k: int | None = 100, run: str | None = None, epoch: int | None = None
    ) -> Suspects:
        """The `k` most suspect samples of one run at one epoch (default: the run's
        latest statistics), most suspect first, as `Suspects` rows; `k=None`: every
        sample seen. Samples whose statistics are not finite (a NaN or inf output)
        come first, marked `non_finite`; samples never seen are left out.

        `run` is needed when the log directory holds several runs with statistics.
        """
        table = self.epoch_table(run, epoch)
        return Suspects(table.suspect_rows(k))

    def epoch_table(self, run: str | None = None, epoch: int | None = None) -> Any:
        """The `SampleStatsEpoch` of `run` at `epoch` (default: its latest)."""
        runs = sorted({table.run for table in self.epochs})
        if not runs:
            raise ValueError("no sample statistics were read")
        if run is None:
            if len(runs) > 1:
                raise ValueError(f"several runs have statistics, pass run=: {runs}")
            run = runs[0]
        tables = [t for t in self.epochs if t.run == run]
        if not tables:
            raise ValueError(f"run {run!r} has no statistics; runs: {runs}")
        if epoch is None:
            return max(tables, key=lambda t: (t.step, t.epoch))
        chosen = [t for t in tables if t.epoch == epoch]
        if not chosen:
            epochs = sorted({t.epoch for t in tables})
            raise ValueError(
                f"run {run!r} has no statistics at epoch {epoch}: {epochs}"
            )
        return max(chosen, key=lambda t: t.step)


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
    for run_name, event in plugin_values(logdir, run, contract.SERIES_SAMPLE_STATS):
        elements = tensor_util.make_ndarray(event.tensor_proto)
        yield contract.decode_sample_stats(run_name, [bytes(e) for e in elements])
