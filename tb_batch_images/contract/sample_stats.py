"""The sample-statistics value of the on-disk format (docs/format.md, "Sample statistics").

One value per epoch under `SAMPLE_STATS_TAG`: element 0 a JSON header, element 1 the
columns of `SAMPLE_STATS_COLUMNS` as little-endian float32 `[columns, num_samples]`,
element 2 the filenames (a JSON list) or empty. The writer encodes it
(`encode_sample_stats`), every reader decodes it (`decode_sample_stats`), and both rank
suspects the same way (`rank_suspects`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from tb_batch_images.contract.names import (
    SAMPLE_STATS_COLUMNS,
    SAMPLE_STATS_VERSION,
    SERIES_SAMPLE_STATS,
)
from tb_batch_images.contract.records import decode_record, encode_record


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
        return [int(i) for i in rank_suspects(self.columns["suspect_score"], k)]


def rank_suspects(suspect_score: np.ndarray, k: int) -> np.ndarray:
    """The ids of the `k` highest suspect scores, highest first (never seen: last)."""
    score = np.nan_to_num(np.asarray(suspect_score, np.float64), nan=-np.inf)
    return np.argsort(-score, kind="stable")[: max(int(k), 0)]


def encode_sample_stats(
    columns: dict[str, np.ndarray], header: dict[str, Any], filenames: list | None
) -> list[bytes]:
    """The elements of one sample-stats value."""
    record = {
        **header,
        "kind": SERIES_SAMPLE_STATS,
        "stats_version": SAMPLE_STATS_VERSION,
        "columns": list(SAMPLE_STATS_COLUMNS),
        "dtype": "float32",
        "byte_order": "little",
    }
    matrix = np.stack([columns[name] for name in SAMPLE_STATS_COLUMNS])
    names = b"" if filenames is None else json.dumps(list(map(str, filenames)))
    if isinstance(names, str):
        names = names.encode("utf-8")
    return [encode_record(record), matrix.astype("<f4").tobytes(), names]


def decode_sample_stats(run: str, elements: list[bytes]) -> SampleStatsEpoch:
    """One sample-stats value (its blob sequence) -> SampleStatsEpoch."""
    record = decode_record(elements[0])
    if record.get("stats_version", 1) > SAMPLE_STATS_VERSION:
        raise ValueError(
            f"sample stats version {record['stats_version']} is newer than this "
            f"reader ({SAMPLE_STATS_VERSION}); upgrade tb-batch-images"
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
