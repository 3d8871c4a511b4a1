"""The sample-statistics value of the on-disk format (docs/format.md, "Sample statistics").

One value per epoch under `SAMPLE_STATS_TAG`: element 0 a JSON header, element 1 the
columns of `SAMPLE_STATS_COLUMNS` as little-endian float32 `[columns, num_samples]`,
element 2 the filenames (a JSON list) or empty. The writer encodes it
(`encode_sample_stats`), every reader decodes it (`decode_sample_stats`), and both rank
suspects the same way (`rank_suspects`). The readers' views of one epoch live here
too, so that the Python reader, the plugin and its CSV export agree: the ranked
suspects as rows (`SampleStatsEpoch.suspect_rows`, `suspects_csv`), whether the
ranking is worth reading yet (`reliability`), and the confusion matrix of the last
appearances with per-class accuracy and loss (`confusion`, `class_summary`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from typing import Any

import numpy as np

from tb_batch_images.contract.names import (
    SAMPLE_STATS_COLUMNS,
    SAMPLE_STATS_VERSION,
    SERIES_SAMPLE_STATS,
)
from tb_batch_images.contract.records import decode_record, encode_record

# The suspect ranking is not worth reading before this many epochs, or while the
# model's accuracy on its training labels is below chance + NEAR_CHANCE of the way
# to 1 (SampleStatsEpoch.reliability).
MIN_EPOCHS = 3
NEAR_CHANCE = 0.25

# A suspect row's statistics (SampleStatsEpoch.suspect_rows), after its identity.
_ROW_COLUMNS = (
    "suspect_score",
    "label",
    "predicted_instead",
    "confidence",
    "weighted_confidence",
    "weighted_correct",
    "variability",
    "correct",
    "margin",
    "forgetting",
    "last_loss",
    "count",
)
_WHOLE_COLUMNS = ("label", "predicted_instead", "forgetting", "count")
# A seen sample with one of these non-finite had a non-finite output (NaN, inf).
_FINITE_COLUMNS = ("suspect_score", "confidence", "margin", "last_loss")
# The fields of a suspect row, in CSV order.
SUSPECT_FIELDS = (
    "rank",
    "run",
    "epoch",
    "sample_id",
    "filename",
    "label",
    "label_name",
    "predicted_instead",
    "predicted_instead_name",
    "non_finite",
    "suspect_score",
    "confidence",
    "weighted_confidence",
    "weighted_correct",
    "variability",
    "correct",
    "margin",
    "forgetting",
    "last_loss",
    "count",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


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

    @property
    def num_classes(self) -> int:
        return int(self.record.get("num_classes") or 0)

    def column(self, name: str) -> np.ndarray:
        """A column by name; NaN everywhere where this value lacks it (older logs)."""
        values = self.columns.get(name)
        if values is None:
            return np.full(self.num_samples, np.nan, np.float32)
        return values

    def suspects(self, k: int = 20) -> list[int]:
        """The sample ids of the k most suspect samples, most suspect first: those
        with a non-finite statistic first, then by suspect score (never seen: out)."""
        ranked = rank_suspects(self.columns["suspect_score"], k, self.column("count"))
        return [int(i) for i in ranked]

    def class_name(self, index: float | None) -> str | None:
        """The name of a class index (None: no names, or no class)."""
        if index is None or not math.isfinite(index) or index < 0:
            return None
        names = self.class_names or []
        return str(names[int(index)]) if int(index) < len(names) else None

    def suspect_rows(self, k: int | None = 100) -> list[dict[str, Any]]:
        """The ranked suspects as rows (`SUSPECT_FIELDS`), most suspect first; every
        sample seen when `k` is None."""
        count = self.column("count")
        if k is None:
            k = int(np.sum(count > 0))
        ids = rank_suspects(self.columns["suspect_score"], k, count)
        rows = []
        for rank, sample_id in enumerate(ids.tolist()):
            value = {name: float(self.column(name)[sample_id]) for name in _ROW_COLUMNS}
            row: dict[str, Any] = {
                "rank": rank + 1,
                "run": self.run,
                "epoch": self.epoch,
                "sample_id": int(sample_id),
                "filename": (
                    str(self.filenames[sample_id])
                    if self.filenames and sample_id < len(self.filenames)
                    else None
                ),
                "label_name": self.class_name(value["label"]),
                "predicted_instead_name": self.class_name(value["predicted_instead"]),
                "non_finite": not all(
                    math.isfinite(value[name]) for name in _FINITE_COLUMNS
                ),
            }
            for name in _ROW_COLUMNS:
                number = value[name]
                if name in _WHOLE_COLUMNS:
                    row[name] = (
                        int(number) if math.isfinite(number) and number >= 0 else None
                    )
                else:
                    row[name] = number if math.isfinite(number) else None
            rows.append({name: row[name] for name in SUSPECT_FIELDS})
        return rows

    def reliability(self) -> dict[str, Any]:
        """Whether the suspect ranking is worth reading yet: `{"reliable": bool,
        "reasons": [...], "accuracy": float | None, "chance": float}`.

        Not yet after fewer than `MIN_EPOCHS` epochs (the first epochs rank samples
        by how early the model happened to learn them), nor while the model is right
        on its own training labels not much more often than chance (a guessing model
        ranks noise): accuracy at the last appearance below `chance + (1 - chance) *
        NEAR_CHANCE`.
        """
        seen = self.column("count") > 0
        classes = self.num_classes
        chance = 1.0 / classes if classes > 0 else 0.5
        right = self.column("last_correct")[seen]
        right = right[np.isfinite(right)]
        accuracy = float(np.mean(right)) if len(right) else None
        reasons = []
        epochs = self.epoch + 1
        if epochs < MIN_EPOCHS:
            reasons.append(
                f"only {epochs} epoch{'s' if epochs != 1 else ''} trained: the ranking "
                f"settles after {MIN_EPOCHS} or more"
            )
        if accuracy is None:
            reasons.append("no sample was seen yet")
        elif accuracy < chance + (1 - chance) * NEAR_CHANCE:
            reasons.append(
                f"the model is right on {accuracy:.0%} of its training samples, near "
                f"chance ({chance:.0%}): it is still guessing"
            )
        return {
            "reliable": not reasons,
            "reasons": reasons,
            "accuracy": accuracy,
            "chance": chance,
        }

    def confusion(self) -> list[list[int]] | None:
        """The confusion matrix of the last appearances, `[given][predicted]` counts
        over the samples seen (None: a value without `last_predicted`, older logs)."""
        if "last_predicted" not in self.columns:
            return None
        classes = self.num_classes
        given, predicted = self.columns["label"], self.columns["last_predicted"]
        ok = (self.column("count") > 0) & (given >= 0) & (given < classes)
        ok &= (predicted >= 0) & (predicted < classes)
        matrix = np.zeros((classes, classes), np.int64)
        np.add.at(matrix, (given[ok].astype(int), predicted[ok].astype(int)), 1)
        return matrix.tolist()

    def class_summary(self) -> list[dict[str, Any]]:
        """Per given class: samples seen, right at their last appearance, accuracy
        and the mean `last_loss` (of the finite ones)."""
        given = self.column("label")
        seen = self.column("count") > 0
        right = self.column("last_correct")
        loss = self.column("last_loss")
        summary = []
        for index in range(self.num_classes):
            mine = seen & (given == index)
            losses = loss[mine]
            losses = losses[np.isfinite(losses)]
            total = int(mine.sum())
            hits = int(np.sum(right[mine] > 0.5))
            summary.append(
                {
                    "class": index,
                    "samples": total,
                    "right": hits,
                    "accuracy": hits / total if total else None,
                    "loss": float(losses.mean()) if len(losses) else None,
                }
            )
        return summary


def rank_suspects(
    suspect_score: np.ndarray, k: int, count: np.ndarray | None = None
) -> np.ndarray:
    """The ids of the `k` most suspect samples, most suspect first.

    With `count` (appearances): samples never seen are left out, and a seen sample
    whose score is not finite (its output was NaN or inf at some appearance) ranks
    first, by id; then the highest scores, ties by id. Without `count`, a NaN
    score means never seen and ranks last.
    """
    score = np.asarray(suspect_score, np.float64)
    k = max(int(k), 0)
    if count is None:
        return np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")[:k]
    seen = np.asarray(count, np.float64) > 0
    first = np.flatnonzero(seen & ~np.isfinite(score))
    ids = np.flatnonzero(seen & np.isfinite(score))
    rest = ids[np.argsort(-score[ids], kind="stable")]
    return np.concatenate([first, rest]).astype(np.int64)[:k]


def suspects_csv(rows: list[dict[str, Any]]) -> str:
    """Suspect rows as CSV text: `SUSPECT_FIELDS`, a header line first.

    A text cell a spreadsheet would read as a formula (starting with `=`, `+`, `-`,
    `@`, a tab or a carriage return) gets a leading `'`.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUSPECT_FIELDS)
    for row in rows:
        cells = []
        for name in SUSPECT_FIELDS:
            value = row.get(name)
            if value is None:
                cells.append("")
            elif isinstance(value, bool):
                cells.append("true" if value else "false")
            elif isinstance(value, str):
                cells.append(
                    "'" + value if value.startswith(_FORMULA_STARTS) else value
                )
            else:
                cells.append(repr(value) if isinstance(value, float) else str(value))
        writer.writerow(cells)
    return buffer.getvalue()


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
