"""`CapturedBatch`: what the training thread copied out of one step, as numpy.

The one type every part of the writer side passes on: the adapters collect the
arrays a step captured (`STEP_ARRAYS`, one row per chosen sample), the logger makes a
`CapturedBatch` of them (`CapturedBatch.from_step`), the watchlist makes one of an
epoch's captures, and the background writer turns it into a record
(`tb_batch_images.host.record`). Its per-sample fields are declared once, here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


def _per_sample(*, step: bool = True) -> Any:
    """A field with one row per logged sample (`step`: filled inside the step)."""
    return dataclasses.field(default=None, metadata={"per_sample": True, "step": step})


@dataclasses.dataclass
class CapturedBatch:
    """The logged samples of one step (or of one epoch's watchlist captures)."""

    mode: str
    step: int
    epoch: int
    batch: int
    wall_time: float
    batch_size: int
    replica: int = 0
    num_replicas: int = 1
    # The flight recorder's step scalars (`capture.flight.SCALARS`: trigger code,
    # batch loss, running mean, running deviation, non-finite samples), or None.
    flight: np.ndarray | None = None
    # -- per sample, from the step (`tb_batch_images.capture.selector`) ---------------
    positions: np.ndarray = _per_sample()  # [n] int, index in the batch
    images: np.ndarray = _per_sample()  # [n, h, w, c], maybe downscaled in the step
    image_stats: np.ndarray = _per_sample()  # [n, 4]: finite min, max, nan?, inf?
    labels: np.ndarray | None = _per_sample()  # [n, label_size] float
    outputs: np.ndarray | None = _per_sample()  # [n, output_size] float
    output_stats: np.ndarray | None = _per_sample()  # [n, 3]: min, max, mean
    losses: np.ndarray | None = _per_sample()  # [n] float
    sample_ids: np.ndarray | None = _per_sample()  # [n] int
    filenames: list[str] | None = _per_sample()  # x["filename"] (TensorFlow only)
    head_losses: np.ndarray | None = _per_sample()  # [n, heads], several outputs
    # [n, 4] int: true height, width, stored height, width (sizes unknown when traced)
    image_sizes: np.ndarray | None = _per_sample()
    # [n, h, w] float: label and output maps at the stored picture's size (dense
    # outputs only, `tb_batch_images.capture.dense_maps`)
    label_maps: np.ndarray | None = _per_sample()
    output_maps: np.ndarray | None = _per_sample()
    # Detection (`tb_batch_images.capture.boxes`): [n, max_boxes, 4] boxes in the
    # format they came in, [n, max_boxes] classes (-1: no box), [n] counts before the
    # cut; the predicted boxes alike, with [n, max_boxes] scores.
    boxes: np.ndarray | None = _per_sample()
    box_classes: np.ndarray | None = _per_sample()
    box_counts: np.ndarray | None = _per_sample()
    predicted_boxes: np.ndarray | None = _per_sample()
    predicted_box_classes: np.ndarray | None = _per_sample()
    predicted_box_scores: np.ndarray | None = _per_sample()
    predicted_box_counts: np.ndarray | None = _per_sample()
    # -- per sample, known on the host ------------------------------------------------
    sample_batches: np.ndarray | None = _per_sample(step=False)  # [n] batch of each
    devices: np.ndarray | None = _per_sample(step=False)  # [n] (keras.distribution)
    processes: np.ndarray | None = _per_sample(step=False)  # [n] process of each

    @classmethod
    def from_step(
        cls,
        item: dict[str, Any],
        *,
        mode: str,
        step: int,
        epoch: int,
        batch: int,
        wall_time: float,
        num_replicas: int = 1,
    ) -> CapturedBatch:
        """The batch of one step's `item` (an adapter's `STEP_ARRAYS` + origin)."""
        arrays = {name: item.get(name) for name in PER_SAMPLE}
        if arrays["filenames"] is not None:
            arrays["filenames"] = [
                name.decode("utf-8", errors="replace")
                if isinstance(name, bytes)
                else str(name)
                for name in arrays["filenames"]
            ]
        return cls(
            mode=mode,
            step=int(step),
            epoch=int(epoch),
            batch=int(batch),
            wall_time=wall_time,
            batch_size=int(item["batch_size"]),
            num_replicas=num_replicas,
            flight=item.get("flight"),
            **arrays,
        )

    @property
    def trigger_code(self) -> int:
        """The flight recorder's trigger of this step (0: none, or no recorder)."""
        if self.flight is None:
            return 0
        value = float(self.flight[0])
        return int(value) if value == value else 0


PER_SAMPLE = tuple(
    f.name for f in dataclasses.fields(CapturedBatch) if f.metadata.get("per_sample")
)
# The per-sample arrays a step's capture returns (`SampleSelector.take`'s keys).
STEP_ARRAYS = tuple(
    f.name
    for f in dataclasses.fields(CapturedBatch)
    if f.metadata.get("per_sample") and f.metadata.get("step")
)


# The predicted boxes' arrays, less their "predicted_" prefix.
BOX_PREDICTION_ARRAYS = ("boxes", "box_classes", "box_scores", "box_counts")


def slot_items(arrays: dict[str, Any], expected: list[int], slots: int) -> list:
    """The captured steps (one dict each: counter, batch size, `STEP_ARRAYS`, flight)
    among `expected`, from numpy copies of a backend's per-step slot buffers
    (`arrays`, named as `SampleSelector.slot_arrays`; step s in slot s % slots).

    Step counters are unique within a fit's mode, so a slot holding an expected
    count was filled by that step; an expected step that did not run (a short last
    execution) is simply absent."""
    filled = arrays["filled_step"]
    captured = []
    for step in expected:
        slot = step % slots
        if int(filled[slot]) != step:
            continue
        count = int(arrays["count"][slot])
        item: dict[str, Any] = {
            "counter": step,
            "batch_size": int(arrays["batch_size"][slot]),
        }
        for name in STEP_ARRAYS:
            value = arrays.get(name)
            item[name] = None if value is None else value[slot, :count]
        if "flight" in arrays:
            item["flight"] = arrays["flight"][slot]
        captured.append(item)
    return captured


def merge_batches(batches: list[CapturedBatch]) -> CapturedBatch:
    """One record for several batches of a validation run (one summary per step).

    TensorBoard keeps one value per (run, tag, step), and every batch of a validation
    run happens at the same training step: their samples share one record.
    """
    if len(batches) == 1:
        return batches[0]
    merged: dict[str, Any] = {}
    for name in PER_SAMPLE:
        values = [getattr(b, name) for b in batches]
        if any(v is None for v in values):
            merged[name] = None
        elif name == "images":
            merged[name] = _joined_images(values)
        elif name == "filenames":
            merged[name] = [filename for names in values for filename in names]
        else:
            merged[name] = np.concatenate(values)
    merged["sample_batches"] = np.concatenate(
        [np.full(len(b.positions), b.batch) for b in batches]
    )
    return dataclasses.replace(
        batches[0], batch_size=sum(b.batch_size for b in batches), **merged
    )


def _joined_images(images: list[np.ndarray]) -> np.ndarray:
    """Concatenated; batches of different sizes (`image_sizes` says each) padded."""
    height = max(i.shape[1] for i in images)
    width = max(i.shape[2] for i in images)
    padded = [
        np.pad(i, [(0, 0), (0, height - i.shape[1]), (0, width - i.shape[2]), (0, 0)])
        for i in images
    ]
    return np.concatenate(padded)
