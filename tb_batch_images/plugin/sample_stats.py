"""The plugin's side of the data map: sample statistics read through the data provider.

Kept apart from `store` (logged batches) because it reads another tag of the
same plugin (`batch_images_sample_stats`, docs/format.md) and answers in columns: one
JSON list per statistic, indexed by sample id, which the gallery draws as is.

The pictures of samples (`sample_pictures`, `sample_detail`) come from the run's
watchlist captures (`batch_images_watchlist`) and from any logged batch of the run
that holds the sample id, read through `store.BatchImagesData` (cached records).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tensorboard import errors
from tensorboard.data import provider

from tb_batch_images import contract
from tb_batch_images.plugin import answers, store

SUSPECTS = 100  # ranked ids sent with each answer
MAX_PICTURE_IDS = 1000  # ids per /sample_pictures request
MAX_APPEARANCES = 50  # latest appearances per /sample answer


def runs_with_stats(data_provider: Any, ctx: Any, experiment: str) -> list[dict]:
    """[{run, epochs: [{epoch, step}]}] for every run with sample statistics."""
    listing = _listing(data_provider, ctx, experiment, None)
    if not listing:
        return []
    data = data_provider.read_blob_sequences(
        ctx,
        experiment_id=experiment,
        plugin_name=contract.PLUGIN_NAME,
        downsample=10**9,
        run_tag_filter=provider.RunTagFilter(
            runs=sorted(listing), tags=[contract.SAMPLE_STATS_TAG]
        ),
    )
    runs = []
    for run in sorted(listing):
        datums = data.get(run, {}).get(contract.SAMPLE_STATS_TAG, [])
        runs.append({"run": run, "steps": sorted(d.step for d in datums)})
    return runs


def _datums(data_provider: Any, ctx: Any, experiment: str, run: str) -> list[Any]:
    """The run's sample-stats values, by step; NotFoundError when it has none."""
    if not _listing(data_provider, ctx, experiment, run):
        raise errors.NotFoundError(f"run {run!r} has no sample statistics")
    data = data_provider.read_blob_sequences(
        ctx,
        experiment_id=experiment,
        plugin_name=contract.PLUGIN_NAME,
        downsample=10**9,
        run_tag_filter=provider.RunTagFilter(
            runs=[run], tags=[contract.SAMPLE_STATS_TAG]
        ),
    )
    datums = sorted(
        data.get(run, {}).get(contract.SAMPLE_STATS_TAG, []), key=lambda d: d.step
    )
    if not datums:
        raise errors.NotFoundError(f"run {run!r} has no sample statistics")
    return datums


def _table(data_provider: Any, ctx: Any, run: str, datum: Any) -> Any:
    blobs = [data_provider.read_blob(ctx, blob_key=b.blob_key) for b in datum.values]
    try:
        return contract.decode_sample_stats(run, blobs)
    except (ValueError, KeyError, IndexError) as error:
        raise errors.InvalidArgumentError(
            f"unreadable sample statistics: {error}"
        ) from None


def _chosen(
    data_provider: Any, ctx: Any, experiment: str, run: str, step: int | None
) -> tuple[list, Any, Any]:
    """(every datum of `run`, the one at `step` (default: the latest), its table)."""
    datums = _datums(data_provider, ctx, experiment, run)
    chosen = (
        datums[-1]
        if step is None
        else next((d for d in datums if d.step == step), None)
    )
    if chosen is None:
        raise errors.NotFoundError(f"run {run!r} has no sample statistics at {step}")
    return datums, chosen, _table(data_provider, ctx, run, chosen)


def sample_stats(
    data_provider: Any, ctx: Any, experiment: str, run: str, step: int | None
) -> dict[str, Any]:
    """The statistics of `run` at `step` (default: the latest), as JSON columns."""
    datums, chosen, table = _chosen(data_provider, ctx, experiment, run, step)
    score = table.columns["suspect_score"]
    seen = table.column("count") > 0
    earlier = [d for d in datums if d.step <= chosen.step]
    return {
        "run": run,
        "step": int(chosen.step),
        "steps": [int(d.step) for d in datums],
        "epoch": table.epoch,
        "num_samples": table.num_samples,
        "num_classes": table.record.get("num_classes"),
        "head": table.record.get("head"),
        "dropped": table.record.get("dropped", 0),
        "stats_version": table.record.get("stats_version", 1),
        "class_names": table.class_names,
        "filenames": table.filenames,
        "columns": {name: _json_list(v) for name, v in table.columns.items()},
        "suspects": table.suspects(SUSPECTS),
        "non_finite": int(np.sum(seen & ~np.isfinite(score))),
        "reliability": table.reliability(),
        "confusion": table.confusion(),
        "classes": table.class_summary(),
        "class_trend": [
            _class_trend_point(data_provider, ctx, run, datum) for datum in earlier
        ],
    }


def suspects_csv(
    data_provider: Any, ctx: Any, experiment: str, run: str, step: int | None
) -> tuple[str, str]:
    """(the CSV of every seen sample of `run` at `step`, ranked; a file name)."""
    _, _, table = _chosen(data_provider, ctx, experiment, run, step)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in run).strip("_")
    filename = f"suspects_{name or 'run'}_epoch{table.epoch}.csv"
    return contract.suspects_csv(table.suspect_rows(None)), filename


# Per-class accuracy and loss of each sample-stats value, by its blob keys (a value
# never changes): the Dataset view's loss trend reads every epoch of a run.
_TREND_CACHE: dict[tuple, dict[str, Any]] = {}
_TREND_CACHE_SIZE = 4096


def _class_trend_point(data_provider: Any, ctx: Any, run: str, datum: Any) -> dict:
    key = (run, int(datum.step), tuple(str(b.blob_key) for b in datum.values))
    found = _TREND_CACHE.get(key)
    if found is None:
        table = _table(data_provider, ctx, run, datum)
        classes = table.class_summary()
        found = {
            "epoch": table.epoch,
            "step": int(datum.step),
            "accuracy": [c["accuracy"] for c in classes],
            "loss": [
                None if c["loss"] is None else float(f"{c['loss']:.6g}")
                for c in classes
            ],
        }
        if len(_TREND_CACHE) >= _TREND_CACHE_SIZE:
            _TREND_CACHE.pop(next(iter(_TREND_CACHE)))
        _TREND_CACHE[key] = found
    return found


def sample_detail(
    data: store.BatchImagesData,
    ctx: Any,
    experiment: str,
    run: str,
    sample_id: int,
) -> dict[str, Any]:
    """One sample of a run: its statistics at every epoch, and its pictures.

    `epochs`: one row per sample-stats value of the run, `{epoch, step, <column>:
    value}`; `appearances`: the latest `MAX_APPEARANCES` times the sample was logged
    (watchlist captures and logged batches of the run), oldest first.
    """
    datums = _datums(data.provider, ctx, experiment, run)
    epochs, filename, num_samples = [], None, None
    for datum in datums:
        table = _table(data.provider, ctx, run, datum)
        num_samples = table.num_samples
        if not 0 <= sample_id < table.num_samples:
            continue
        if table.filenames and sample_id < len(table.filenames):
            filename = table.filenames[sample_id]
        row = {"epoch": table.epoch, "step": int(datum.step)}
        for name, values in table.columns.items():
            row[name] = _json_list(values[sample_id : sample_id + 1])[0]
        epochs.append(row)
    if not epochs:
        raise errors.NotFoundError(
            f"sample_id {sample_id} is outside [0, {num_samples}) of run {run!r}"
        )
    found = _appearances(data, ctx, experiment, run, {sample_id})
    appearances = found.get(sample_id, [])
    return {
        "run": run,
        "sample_id": sample_id,
        "filename": filename,
        "epochs": epochs,
        "appearances": appearances[-MAX_APPEARANCES:],
        "total": len(appearances),
    }


def sample_pictures(
    data: store.BatchImagesData,
    ctx: Any,
    experiment: str,
    run: str,
    sample_ids: list[int],
) -> dict[str, Any]:
    """The latest picture of each sample id in `run`: `{id: Appearance | null}`."""
    known = {series.run for series in data.all_series(ctx, experiment)}
    if run not in known:
        raise errors.NotFoundError(f"unknown run {run!r}")
    found = _appearances(data, ctx, experiment, run, set(sample_ids))
    return {
        "run": run,
        "pictures": {
            str(i): (found[i][-1] if found.get(i) else None) for i in sample_ids
        },
    }


def _appearances(
    data: store.BatchImagesData,
    ctx: Any,
    experiment: str,
    run: str,
    wanted: set[int],
) -> dict[int, list[dict[str, Any]]]:
    """{sample_id: [Appearance]} in `run`, by step (a watchlist capture after a
    logged batch of the same step)."""
    every = [
        series
        for series in data.all_series(ctx, experiment)
        if series.run == run and series.kind in contract.BATCH_SERIES
    ]
    found: dict[int, list[tuple[tuple, dict[str, Any]]]] = {}
    for series in every:
        infos = data.step_infos(ctx, series.run, series.tag, series.steps)
        for info in infos:
            if info.error or info.lost:
                continue
            hits = [
                (index, identity)
                for index, identity in enumerate(info.sample_ids)
                if identity in wanted
            ]
            if not hits:
                continue
            samples = info.record().get("samples", [])
            images = info.images
            for index, identity in hits:
                if index >= images:
                    continue  # no picture
                watch = series.kind == contract.SERIES_WATCHLIST
                appearance = answers.appearance(
                    series,
                    info,
                    index,
                    samples[index],
                    source="watchlist" if watch else "batch",
                )
                order = (info.ref.step, watch, series.tag, index)
                found.setdefault(identity, []).append((order, appearance))
    return {
        identity: [item for _, item in sorted(items, key=lambda pair: pair[0])]
        for identity, items in found.items()
    }


def _listing(data_provider: Any, ctx: Any, experiment: str, run: str | None) -> dict:
    listing = data_provider.list_blob_sequences(
        ctx,
        experiment_id=experiment,
        plugin_name=contract.PLUGIN_NAME,
        run_tag_filter=provider.RunTagFilter(
            runs=None if run is None else [run], tags=[contract.SAMPLE_STATS_TAG]
        ),
    )
    return {
        name: tags
        for name, tags in listing.items()
        if contract.SAMPLE_STATS_TAG in tags
        and contract.parse_plugin_content(
            tags[contract.SAMPLE_STATS_TAG].plugin_content
        )["kind"]
        == contract.SERIES_SAMPLE_STATS
    }


def _json_list(values: np.ndarray) -> list[float | None]:
    """Rounded to 6 significant digits (half the bytes); NaN becomes null."""
    return [
        None if not math.isfinite(v) else float(f"{v:.6g}") for v in values.tolist()
    ]
