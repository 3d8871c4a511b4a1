"""The data map on the host: the accumulators of `capture.sample_stats.SampleStats`
turned into the columns of the format (docs/format.md, "Sample statistics"), and the
suspect score. Plain numpy, once per epoch.
"""

from __future__ import annotations

import numpy as np

from tb_batch_images.capture.sample_stats import (
    LAST_CORRECT,
    LAST_LABEL,
    LAST_LOSS,
    LAST_WRONG,
)
from tb_batch_images.contract import names


def derive(accumulators: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """(the columns of `names.SAMPLE_STATS_COLUMNS` as float32 [num_samples], dropped).

    Means of a sample never seen are NaN; its count is 0.
    """
    counts_all = accumulators["counts"].astype(np.float64)
    counts = counts_all[:-1]
    dropped = int(round(counts_all[-1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        seen = counts > 0
        mean = np.where(seen, 1.0, np.nan)
        last = accumulators["last"].astype(np.float64)
        instead = last[:, LAST_WRONG].copy()
        class_counts = accumulators.get("class_counts")
        if class_counts is not None:
            instead = np.where(
                class_counts.max(axis=1) > 0, class_counts.argmax(axis=1), -1
            )
        columns = {
            "count": counts,
            "confidence": accumulators["mean_p"] * mean,
            "variability": np.sqrt(np.maximum(accumulators["m2_p"], 0) / counts) * mean,
            "correct": accumulators["correct"] / counts,
            "margin": accumulators["margin_sum"] / counts,
            "forgetting": accumulators["forgotten"],
            "last_loss": np.where(seen, last[:, LAST_LOSS], np.nan),
            "last_correct": np.where(seen, last[:, LAST_CORRECT], np.nan),
            "label": np.where(seen, last[:, LAST_LABEL], -1),
            "predicted_instead": np.where(seen, instead, -1),
        }
    columns["suspect_score"] = suspect_scores(
        columns["confidence"], columns["variability"], columns["margin"]
    )
    return {
        name: np.asarray(columns[name], np.float32)
        for name in names.SAMPLE_STATS_COLUMNS
    }, dropped


def suspect_scores(
    confidence: np.ndarray, variability: np.ndarray, margin: np.ndarray
) -> np.ndarray:
    """How likely each sample's label is wrong, in [0, 1] (NaN: never seen).

    `1 - confidence`: Dataset Cartography's hard-to-learn axis (the model rarely
    gave the given label much probability over the whole fit). On MNIST-5k with
    10-40% flipped labels it ranks as well as cleanlab's 5-fold cross-validated
    ranking and as well as, or better than, the margin (AUM) and `(1 - confidence)
    * (1 - variability)` (benchmarks/README.md); those are kept as columns.
    """
    del variability, margin
    return 1.0 - np.asarray(confidence, np.float64)
