"""The JSON answers of the plugin's routes (docs/api.md), built from checked records."""

from __future__ import annotations

from typing import Any

from tb_batch_images.plugin import store
from tb_batch_images.plugin.image_keys import image_key


def batch(run: str, tag: str, info: store.StepInfo) -> dict[str, Any]:
    """The `Batch` of docs/api.md: the checked record, with an image key per sample."""
    if info.error:
        return {
            "run": run,
            "tag": tag,
            "step": info.ref.step,
            "error": info.error,
            "warnings": [],
            "samples": [],
        }
    if info.lost:
        return lost_batch(run, tag, info)
    record = info.record()
    images = info.images
    batch = {key: value for key, value in record.items() if key != "samples"}
    batch.update(
        run=run,
        tag=tag,
        step=info.ref.step,
        error=None,
        lost=None,
        warnings=list(info.warnings),
    )

    def image_of(index: Any) -> str | None:
        """The image key of blob image `index`, None when the step has no such image."""
        if type(index) is int and 0 <= index < images:
            return image_key(run, tag, info.ref, index)
        return None

    batch["samples"] = [
        {
            **sample,
            "image": image_of(index),
            "label_mask_image": image_of(sample.get("label_mask")),
            "prediction_mask_image": image_of(sample.get("prediction_mask")),
        }
        for index, sample in enumerate(record.get("samples", []))
    ]
    return batch


def lost_batch(run: str, tag: str, info: store.StepInfo) -> dict[str, Any]:
    """A step whose pack is lost: what its index entry says, and a tile per sample
    with no picture (`lost`), so the page shows "picture lost" where they were."""
    return {
        "run": run,
        "tag": tag,
        "step": info.ref.step,
        "error": None,
        "lost": info.lost,
        "warnings": [f"picture lost: {info.lost}"],
        "mode": info.mode,
        "epoch": info.epoch,
        "batch": info.batch,
        "wall_time": info.wall_time,
        "sequence": info.sequence,
        "batch_size": info.batch_size,
        "samples_logged": info.samples_logged,
        "samples": [
            {
                "position": index,
                "image": None,
                "label_mask_image": None,
                "prediction_mask_image": None,
                "lost": True,
            }
            for index in range(info.samples_logged)
        ],
    }


def appearance(
    series: store.Series,
    info: store.StepInfo,
    index: int,
    sample: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """One `Appearance` of docs/api.md: sample `index` of a logged step.

    `extra` holds what the route adds after the run and tag (`/history`: the mode;
    `/sample`, `/sample_pictures`: the source, batch or watchlist).
    """
    return {
        "run": series.run,
        "tag": series.tag,
        **extra,
        "step": info.ref.step,
        "epoch": info.epoch,
        "batch": sample.get("batch", info.batch),
        "index": index,
        **{field: sample.get(field) for field in store.HISTORY_FIELDS},
        "image": image_key(series.run, series.tag, info.ref, index),
    }
