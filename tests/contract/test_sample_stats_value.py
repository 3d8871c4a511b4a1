"""The sample-statistics value of the contract: ranking, suspect rows, CSV, old values.

Pure numpy, no training: the readers (plugin, `read_sample_stats`) and the writer's
watchlist rank with `rank_suspects`, and the Dataset view's CSV and
`read_sample_stats(...).suspects()` are built from `suspect_rows` and `suspects_csv`.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from tb_batch_images import contract
from tb_batch_images.contract import names
from tb_batch_images.contract.records import encode_record
from tb_batch_images.contract.sample_stats import rank_suspects


def _value(columns: dict[str, list[float]], **header) -> contract.SampleStatsEpoch:
    count = len(next(iter(columns.values())))
    full = {
        name: np.asarray(columns.get(name, [np.nan] * count), np.float32)
        for name in names.SAMPLE_STATS_COLUMNS
    }
    record = {"epoch": 4, "step": 40, "num_samples": count, "num_classes": 3, **header}
    elements = contract.encode_sample_stats(
        full, record, [f"dir/{i}.png" for i in range(count)]
    )
    return contract.decode_sample_stats("run/train", elements)


def test_non_finite_scores_rank_first_and_never_seen_samples_stay_out():
    score = np.array([0.1, np.nan, 0.9, np.nan, 0.5, np.inf, 0.9])
    count = np.array([1, 1, 1, 0, 1, 1, 2])
    assert rank_suspects(score, 10, count).tolist() == [1, 5, 2, 6, 4, 0]
    assert rank_suspects(score, 2, count).tolist() == [1, 5]
    # Without counts (older callers): NaN means never seen, last.
    assert rank_suspects(score, 10).tolist()[-2:] == [1, 3]


def test_suspect_rows_and_their_csv():
    table = _value(
        {
            "count": [2, 2, 0, 2],
            "suspect_score": [0.2, np.nan, np.nan, 0.7],
            "confidence": [0.8, np.nan, np.nan, 0.3],
            "label": [0, 1, -1, 2],
            "predicted_instead": [-1, 0, -1, 1],
            "last_loss": [0.2, np.nan, np.nan, 1.2],
            "margin": [0.5, np.nan, np.nan, -0.4],
            "forgetting": [0, 1, 0, 0],
        },
        class_names=["=cat", "dog", "bird"],
    )
    rows = table.suspect_rows(None)
    assert [r["sample_id"] for r in rows] == [1, 3, 0]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[0]["non_finite"] and not rows[1]["non_finite"]
    assert rows[1]["filename"] == "dir/3.png" and rows[1]["label_name"] == "bird"
    assert rows[1]["predicted_instead_name"] == "dog" and rows[1]["label"] == 2
    assert rows[2]["predicted_instead"] is None  # never wrong
    assert rows[0]["suspect_score"] is None  # NaN becomes an empty cell
    text = contract.suspects_csv(rows)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert list(parsed[0]) == list(contract.SUSPECT_FIELDS)
    assert [p["sample_id"] for p in parsed] == ["1", "3", "0"]
    assert parsed[0]["non_finite"] == "true" and parsed[0]["suspect_score"] == ""
    assert parsed[2]["label_name"] == "'=cat"  # not a spreadsheet formula
    assert float(parsed[1]["suspect_score"]) == np.float32(0.7)


def test_reliability_says_too_few_epochs_and_a_guessing_model():
    seen = {"count": [1] * 6, "suspect_score": [0.5] * 6, "label": [0, 1, 2] * 2}
    early = _value({**seen, "last_correct": [1, 1, 1, 1, 1, 0]}, epoch=1)
    report = early.reliability()
    assert not report["reliable"] and "only 2 epochs" in report["reasons"][0]
    guessing = _value({**seen, "last_correct": [1, 0, 0, 1, 0, 0]})
    report = guessing.reliability()
    assert not report["reliable"] and "near chance" in report["reasons"][0]
    learnt = _value({**seen, "last_correct": [1, 1, 1, 1, 0, 1]})
    report = learnt.reliability()
    assert report["reliable"] and report["reasons"] == []
    assert report["accuracy"] == np.float32(5 / 6) and report["chance"] == 1 / 3


def test_confusion_matrix_and_per_class_summary():
    table = _value(
        {
            "count": [1, 1, 1, 1, 0],
            "label": [0, 0, 1, 2, -1],
            "last_predicted": [0, 2, 1, 1, -1],
            "last_correct": [1, 0, 1, 0, np.nan],
            "last_loss": [0.1, 2.0, 0.3, 1.5, np.nan],
        }
    )
    assert table.confusion() == [[1, 0, 1], [0, 1, 0], [0, 1, 0]]
    summary = table.class_summary()
    assert [c["accuracy"] for c in summary] == [0.5, 1.0, 0.0]
    assert summary[0]["loss"] == np.float32(0.1) / 2 + np.float32(2.0) / 2


def test_a_version_1_value_still_reads():
    """A value written before weighted_*/last_predicted: read, ranked, no matrix."""
    old_columns = names.SAMPLE_STATS_COLUMNS[:11]  # version 1's eleven
    assert old_columns[-1] == "suspect_score"
    matrix = np.stack(
        [
            np.array([2, 2, 0], np.float32),  # count
            *[np.full(3, 0.5, np.float32)] * 9,
            np.array([0.3, 0.6, np.nan], np.float32),  # suspect_score
        ]
    )
    record = {
        "epoch": 1,
        "step": 9,
        "num_samples": 3,
        "num_classes": 2,
        "kind": names.SERIES_SAMPLE_STATS,
        "stats_version": 1,
        "columns": list(old_columns),
        "dtype": "float32",
        "byte_order": "little",
    }
    table = contract.decode_sample_stats(
        "old", [encode_record(record), matrix.astype("<f4").tobytes(), b""]
    )
    assert table.suspects(5) == [1, 0]
    assert table.confusion() is None
    assert np.isnan(table.column("weighted_confidence")).all()
    assert [r["sample_id"] for r in table.suspect_rows(None)] == [1, 0]
    json.dumps(table.suspect_rows(None))  # JSON-safe
