"""The plugin's side of the data map: sample statistics read through the data provider.

Kept apart from `plugin_data` (logged batches) because it reads another tag of the
same plugin (`batch_images_sample_stats`, docs/format.md) and answers in columns: one
JSON list per statistic, indexed by sample id, which the gallery draws as is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tensorboard import errors
from tensorboard.data import provider

from tb_batch_images import format as fmt
from tb_batch_images.reader import decode_sample_stats

SUSPECTS = 100  # ranked ids sent with each answer


def runs_with_stats(data_provider: Any, ctx: Any, experiment: str) -> list[dict]:
    """[{run, epochs: [{epoch, step}]}] for every run with sample statistics."""
    listing = _listing(data_provider, ctx, experiment, None)
    if not listing:
        return []
    data = data_provider.read_blob_sequences(
        ctx,
        experiment_id=experiment,
        plugin_name=fmt.PLUGIN_NAME,
        downsample=10**9,
        run_tag_filter=provider.RunTagFilter(
            runs=sorted(listing), tags=[fmt.SAMPLE_STATS_TAG]
        ),
    )
    runs = []
    for run in sorted(listing):
        datums = data.get(run, {}).get(fmt.SAMPLE_STATS_TAG, [])
        runs.append({"run": run, "steps": sorted(d.step for d in datums)})
    return runs


def sample_stats(
    data_provider: Any, ctx: Any, experiment: str, run: str, step: int | None
) -> dict[str, Any]:
    """The statistics of `run` at `step` (default: the latest), as JSON columns."""
    if not _listing(data_provider, ctx, experiment, run):
        raise errors.NotFoundError(f"run {run!r} has no sample statistics")
    data = data_provider.read_blob_sequences(
        ctx,
        experiment_id=experiment,
        plugin_name=fmt.PLUGIN_NAME,
        downsample=10**9,
        run_tag_filter=provider.RunTagFilter(runs=[run], tags=[fmt.SAMPLE_STATS_TAG]),
    )
    datums = sorted(
        data.get(run, {}).get(fmt.SAMPLE_STATS_TAG, []), key=lambda d: d.step
    )
    if not datums:
        raise errors.NotFoundError(f"run {run!r} has no sample statistics")
    chosen = (
        datums[-1]
        if step is None
        else next((d for d in datums if d.step == step), None)
    )
    if chosen is None:
        raise errors.NotFoundError(f"run {run!r} has no sample statistics at {step}")
    blobs = [data_provider.read_blob(ctx, blob_key=b.blob_key) for b in chosen.values]
    try:
        table = decode_sample_stats(run, blobs)
    except (ValueError, KeyError, IndexError) as error:
        raise errors.InvalidArgumentError(
            f"unreadable sample statistics: {error}"
        ) from None
    return {
        "run": run,
        "step": int(chosen.step),
        "steps": [int(d.step) for d in datums],
        "epoch": table.epoch,
        "num_samples": table.num_samples,
        "num_classes": table.record.get("num_classes"),
        "head": table.record.get("head"),
        "dropped": table.record.get("dropped", 0),
        "class_names": table.class_names,
        "filenames": table.filenames,
        "columns": {name: _json_list(v) for name, v in table.columns.items()},
        "suspects": table.suspects(SUSPECTS),
    }


def _listing(data_provider: Any, ctx: Any, experiment: str, run: str | None) -> dict:
    listing = data_provider.list_blob_sequences(
        ctx,
        experiment_id=experiment,
        plugin_name=fmt.PLUGIN_NAME,
        run_tag_filter=provider.RunTagFilter(
            runs=None if run is None else [run], tags=[fmt.SAMPLE_STATS_TAG]
        ),
    )
    return {
        name: tags
        for name, tags in listing.items()
        if fmt.SAMPLE_STATS_TAG in tags
        and fmt.parse_plugin_content(tags[fmt.SAMPLE_STATS_TAG].plugin_content)["kind"]
        == fmt.KIND_SAMPLE_STATS
    }


def _json_list(values: np.ndarray) -> list[float | None]:
    """Rounded to 6 significant digits (half the bytes); NaN becomes null."""
    return [
        None if not math.isfinite(v) else float(f"{v:.6g}") for v in values.tolist()
    ]
