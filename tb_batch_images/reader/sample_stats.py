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
_INTEGER_COLUMNS = ("count", "forgetting", "label", "predicted_instead")


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
    for run_name, event in plugin_values(logdir, run, contract.SERIES_SAMPLE_STATS):
        elements = tensor_util.make_ndarray(event.tensor_proto)
        yield contract.decode_sample_stats(run_name, [bytes(e) for e in elements])
