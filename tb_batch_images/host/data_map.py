"""The data map on the host: the accumulators of `capture.sample_stats.SampleStats`
turned into the columns of the format (docs/format.md, "Sample statistics"), and the
suspect score. Plain numpy, once per epoch.

**The suspect score** (chosen on a panel of datasets, noise kinds and trainings:
benchmarks/README.md, "The label-error panel"): the mean of two things over the
epochs, each epoch weighted by how far apart the model put the samples then:

    suspect_score = 1 - (weighted_confidence + weighted_correct) / 2

where `weighted_confidence` is the epochs' mean probability of the given label and
`weighted_correct` their fraction of right predictions, each epoch `e` weighing
`spread_e ** SPREAD_POWER`, `spread_e` being the variance over the samples of that
epoch's probability of the given label. Why: a flipped label is told apart from a
clean one when the model has learnt the clean samples but not yet memorised the
flipped ones, and that is when the probabilities are most spread (clean near 1,
flipped near 0). A model still learning (underfit) spreads them more with every
epoch, so the last epochs weigh most; a model that memorises its training labels
spreads them most before it learns the flipped ones by heart, and then less and less
(all near 1), so those middle epochs weigh most and the memorised ones hardly count.
Neither the mean over every epoch (Cartography's confidence, the score before: early,
untrained epochs dominate a short training) nor the last epoch (a memorised label
looks clean) does both. The fraction right counts "how long it took to learn the
given label", which stays apart when the probabilities of a memorising model all
approach 1.

`EpochWeighting` keeps the weighted sums on the host, from each epoch's difference of
the device's running sums: O(num_samples) numpy per epoch end, nothing per step.
"""

from __future__ import annotations

import numpy as np

from tb_batch_images.contract import names

# Each epoch weighs spread ** SPREAD_POWER: the panel's choice among 1, 2, 4 and 8
# (4 and 8 ranked alike; 1 and 2 let the unhelpful epochs weigh too much).
SPREAD_POWER = 4


class EpochWeighting:
    """Each sample's mean probability of its given label, and fraction right, over the
    epochs, each epoch weighed by the spread of that epoch's probabilities.

    `add(accumulators)` at each epoch end (the device's running sums since the fit
    began); an epoch's own values are the differences from the previous call.
    """

    def __init__(self, num_samples: int):
        n = int(num_samples)
        self._count = np.zeros(n)
        self._sum_p = np.zeros(n)
        self._right = np.zeros(n)
        self.weight = np.zeros(n)
        self.weighted_p = np.zeros(n)
        self.weighted_right = np.zeros(n)
        self.spreads: list[float] = []  # each epoch's spread, for the curious

    def add(self, accumulators: dict[str, np.ndarray]) -> None:
        count = accumulators["count"].astype(np.float64)
        sum_p = accumulators["mean_p"].astype(np.float64) * count
        right = accumulators["correct"].astype(np.float64)
        new = count - self._count
        seen = new > 0
        if seen.any():
            with np.errstate(invalid="ignore", divide="ignore"):
                p = (sum_p[seen] - self._sum_p[seen]) / new[seen]
                hits = (right[seen] - self._right[seen]) / new[seen]
            finite = p[np.isfinite(p)]
            spread = float(np.var(finite)) if len(finite) > 1 else 0.0
            # Never 0: a training whose every epoch has the same spread (or none)
            # weighs its epochs alike.
            weight = max(spread, 1e-6) ** SPREAD_POWER
            self.spreads.append(spread)
            self.weight[seen] += weight
            self.weighted_p[seen] += weight * p  # a NaN stays NaN: ranked first
            self.weighted_right[seen] += weight * np.clip(hits, 0.0, 1.0)
        self._count, self._sum_p, self._right = count, sum_p, right

    def columns(self) -> dict[str, np.ndarray]:
        """`weighted_confidence` and `weighted_correct` (NaN: never seen)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            weight = np.where(self.weight > 0, self.weight, np.nan)
            return {
                "weighted_confidence": self.weighted_p / weight,
                "weighted_correct": self.weighted_right / weight,
            }


def derive(
    accumulators: dict[str, np.ndarray], weighting: EpochWeighting | None = None
) -> tuple[dict[str, np.ndarray], int]:
    """(the columns of `names.SAMPLE_STATS_COLUMNS` as float32 [num_samples], dropped).

    `accumulators`: `SampleStats.read()`; `weighting`: this fit's `EpochWeighting`,
    with this epoch added (None: one made from these accumulators alone, as if the
    fit were one epoch). Means of a sample never seen are NaN; its count is 0. A
    sample whose output was ever non-finite has NaN means, and so a NaN suspect
    score (`contract.rank_suspects` puts it first).
    """
    counts = accumulators["count"].astype(np.float64)
    dropped = int(round(float(accumulators["dropped"])))
    if weighting is None:
        weighting = EpochWeighting(len(counts))
        weighting.add(accumulators)
    with np.errstate(invalid="ignore", divide="ignore"):
        seen = counts > 0
        mean = np.where(seen, 1.0, np.nan)
        instead = accumulators["last_wrong"].astype(np.float64)
        class_counts = accumulators.get("class_counts")
        if class_counts is not None:
            instead = np.where(
                class_counts.max(axis=1) > 0, class_counts.argmax(axis=1), -1
            )
        last_correct = accumulators["last_correct"]
        columns = {
            "count": counts,
            "confidence": accumulators["mean_p"] * mean,
            "variability": np.sqrt(np.maximum(accumulators["m2_p"], 0) / counts) * mean,
            "correct": accumulators["correct"] / counts,
            "margin": accumulators["margin_sum"] / counts,
            "forgetting": accumulators["forgotten"],
            "last_loss": np.where(seen, accumulators["last_loss"], np.nan),
            "last_correct": np.where(seen, last_correct, np.nan),
            "label": np.where(seen, accumulators["last_label"], -1),
            "predicted_instead": np.where(seen, instead, -1),
            # The class predicted at the last appearance (the confusion matrix).
            "last_predicted": np.where(
                seen,
                np.where(
                    last_correct > 0.5,
                    accumulators["last_label"],
                    accumulators["last_wrong"],
                ),
                -1,
            ),
        }
        for name, values in weighting.columns().items():
            columns[name] = np.where(seen, values, np.nan)
    columns["suspect_score"] = suspect_scores(columns)
    return {
        name: np.asarray(columns[name], np.float32)
        for name in names.SAMPLE_STATS_COLUMNS
    }, dropped


def suspect_scores(columns: dict[str, np.ndarray]) -> np.ndarray:
    """How likely each sample's label is wrong, in [0, 1] (NaN: never seen, or a
    non-finite output): `1 - (weighted_confidence + weighted_correct) / 2` (the
    module's docstring says why)."""
    confidence = np.asarray(columns["weighted_confidence"], np.float64)
    correct = np.asarray(columns["weighted_correct"], np.float64)
    return 1.0 - (confidence + correct) / 2.0
