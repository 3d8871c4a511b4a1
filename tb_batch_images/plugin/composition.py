"""The plugin's side of the composition: the loss curve and any step's file list.

Reads the `batch_images_composition` values (docs/format.md, "Composition") through the
data provider. A block's content never changes (a run, step and wall time name it):
its decoded steps, losses and triggers are cached, so a run of 1,000,000 steps (1,000
blocks) is read once; the sample ids (element 2) are read only for the step asked.

`loss_curve` answers the curve downsampled for drawing: the range asked is cut into
`buckets` columns of equal step width, each with its first and last step, the min and
max finite loss, the step of the max (a spike is its bucket's max), how many steps
had a non-finite loss and whether one was triggered; with no more steps than buckets,
one bucket per step. The anomalies (every triggered step) and the logged steps come
whole: lookup is never downsampled.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

import numpy as np
from tensorboard import errors
from tensorboard.data import provider

from tb_batch_images import contract
from tb_batch_images.contract import composition as blocks
from tb_batch_images.plugin import store

MAX_BUCKETS = 10_000
DEFAULT_BUCKETS = 1_000
MAX_ANOMALIES = 10_000


@dataclasses.dataclass(frozen=True)
class _Block:
    step: int
    wall_time: float
    keys: tuple[str, ...]
    rows: np.ndarray  # STEP_ROW
    header: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RunCurve:
    """Every step of one run's composition, in step order."""

    steps: np.ndarray  # int64
    losses: np.ndarray  # float32, NaN: not finite or unknown
    triggers: np.ndarray  # uint8 codes
    block_of: np.ndarray  # index into `blocks` of each step
    blocks: tuple[_Block, ...]


class CompositionData:
    """Reads and caches the composition of the runs of one data provider."""

    def __init__(self, data: store.BatchImagesData):
        self.data = data
        self.provider = data.provider
        self._blocks: dict[tuple[str, int, float], _Block] = {}
        self._curves: dict[str, tuple[tuple, RunCurve]] = {}
        self._filenames: dict[tuple[str, int, float], list[str] | None] = {}
        self._lock = threading.Lock()

    def runs(self, ctx: Any, experiment: str) -> list[str]:
        listing = self.provider.list_blob_sequences(
            ctx, experiment_id=experiment, plugin_name=contract.PLUGIN_NAME
        )
        return sorted(
            run
            for run, tags in listing.items()
            if contract.COMPOSITION_TAG in tags
            and _kind(tags[contract.COMPOSITION_TAG]) == contract.SERIES_COMPOSITION
        )

    def curve(self, ctx: Any, experiment: str, run: str) -> RunCurve:
        """The run's steps; NotFoundError when it has no composition."""
        listing = self.provider.list_blob_sequences(
            ctx,
            experiment_id=experiment,
            plugin_name=contract.PLUGIN_NAME,
            run_tag_filter=provider.RunTagFilter(
                runs=[run], tags=[contract.COMPOSITION_TAG]
            ),
        )
        metadatum = listing.get(run, {}).get(contract.COMPOSITION_TAG)
        if metadatum is None:
            # A run of this plugin without composition (validation, an older logger,
            # log_composition=False): an empty curve; a run it does not know: 404.
            # Known: any value of this plugin (format version 3 lists its steps as
            # tensors, the index entries; older logs and status records as blobs).
            known = run in self.provider.list_blob_sequences(
                ctx, experiment_id=experiment, plugin_name=contract.PLUGIN_NAME
            ) or run in self.provider.list_tensors(
                ctx, experiment_id=experiment, plugin_name=contract.PLUGIN_NAME
            )
            if not known:
                raise errors.NotFoundError(f"unknown run {run!r}")
            return _joined(())
        fingerprint = (
            metadatum.max_step,
            metadatum.max_wall_time,
            metadatum.max_length,
        )
        with self._lock:
            cached = self._curves.get(run)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        data = self.provider.read_blob_sequences(
            ctx,
            experiment_id=experiment,
            plugin_name=contract.PLUGIN_NAME,
            downsample=store.READ_ALL,
            run_tag_filter=provider.RunTagFilter(
                runs=[run], tags=[contract.COMPOSITION_TAG]
            ),
        )
        datums = sorted(
            data.get(run, {}).get(contract.COMPOSITION_TAG, []), key=lambda d: d.step
        )
        found = list(
            self.data.pool_map(lambda datum: self._block(ctx, run, datum), datums)
        )
        good = tuple(block for block in found if block is not None)
        curve = _joined(good)
        with self._lock:
            self._curves[run] = (fingerprint, curve)
        return curve

    def _block(self, ctx: Any, run: str, datum: Any) -> _Block | None:
        key = (run, int(datum.step), float(datum.wall_time))
        with self._lock:
            cached = self._blocks.get(key)
        if cached is not None:
            return cached
        keys = tuple(blob.blob_key for blob in datum.values)
        try:
            header = blocks.decode_header(
                self.provider.read_blob(ctx, blob_key=keys[0])
            )
            rows = blocks.decode_rows(
                header, self.provider.read_blob(ctx, blob_key=keys[1])
            )
        except (IndexError, ValueError, errors.NotFoundError):
            return None  # an unreadable block: its steps are missing from the curve
        block = _Block(key[1], key[2], keys, rows, header)
        with self._lock:
            self._blocks[key] = block
        return block

    def step(self, ctx: Any, experiment: str, run: str, step: int) -> dict[str, Any]:
        """One step's loss, trigger and sample ids (with filenames where known)."""
        curve = self.curve(ctx, experiment, run)
        index = int(np.searchsorted(curve.steps, step))
        if index >= len(curve.steps) or curve.steps[index] != step:
            raise errors.NotFoundError(f"run {run!r} has no step {step} recorded")
        block = curve.blocks[int(curve.block_of[index])]
        row = int(np.searchsorted(block.rows["step"], step))
        ids: list[int] = []
        if block.header.get("width") and len(block.keys) > 2:
            try:
                matrix = blocks.decode_ids(
                    block.header, self.provider.read_blob(ctx, blob_key=block.keys[2])
                )
            except (ValueError, errors.NotFoundError):
                matrix = None
            if matrix is not None:
                values = matrix[row]
                ids = [int(i) for i in values[values >= 0]]
        names = self._filenames_of(ctx, run, curve, int(curve.block_of[index]))
        filenames = None
        if names is not None:
            filenames = [names[i] if 0 <= i < len(names) else None for i in ids]
        code = int(curve.triggers[index])
        return {
            "run": run,
            "step": int(step),
            "loss": _number(curve.losses[index]),
            "loss_finite": bool(np.isfinite(curve.losses[index])),
            "trigger": _trigger_name(code),
            "sample_ids": ids,
            "filenames": filenames,
        }

    def _filenames_of(
        self, ctx: Any, run: str, curve: RunCurve, block_index: int
    ) -> list[str] | None:
        """The filenames the logger wrote with the latest block at or before this
        one that has them (element 3, once per fit)."""
        for block in reversed(curve.blocks[: block_index + 1]):
            if not block.header.get("has_filenames") or len(block.keys) < 4:
                continue
            key = (run, block.step, block.wall_time)
            with self._lock:
                if key in self._filenames:
                    return self._filenames[key]
            try:
                names = json.loads(self.provider.read_blob(ctx, blob_key=block.keys[3]))
            except (ValueError, errors.NotFoundError):
                names = None
            if not isinstance(names, list):
                names = None
            else:
                names = [str(name)[:4096] for name in names]
            with self._lock:
                self._filenames[key] = names
            return names
        return None


def _joined(found: tuple[_Block, ...]) -> RunCurve:
    if not found:
        empty = np.zeros(0, np.int64)
        return RunCurve(
            empty, np.zeros(0, np.float32), np.zeros(0, np.uint8), empty, ()
        )
    steps = np.concatenate([b.rows["step"] for b in found]).astype(np.int64)
    losses = np.concatenate([b.rows["loss"] for b in found]).astype(np.float32)
    triggers = np.concatenate([b.rows["trigger"] for b in found]).astype(np.uint8)
    block_of = np.concatenate(
        [np.full(len(b.rows), i, np.int64) for i, b in enumerate(found)]
    )
    order = np.argsort(steps, kind="stable")
    steps, losses, triggers, block_of = (
        steps[order],
        losses[order],
        triggers[order],
        block_of[order],
    )
    # A step written twice (a resumed run): the later block wins.
    keep = np.ones(len(steps), bool)
    keep[:-1] = steps[1:] != steps[:-1]
    return RunCurve(
        steps[keep], losses[keep], triggers[keep], block_of[keep], tuple(found)
    )


def loss_curve(
    curve: RunCurve,
    logged_steps: list[int],
    start: int | None,
    end: int | None,
    buckets: int,
) -> dict[str, Any]:
    """The `LossCurve` answer of docs/api.md (`run` added by the route)."""
    steps, losses = curve.steps, curve.losses
    total = len(steps)
    first = int(steps[0]) if total else 0
    last = int(steps[-1]) if total else 0
    low = first if start is None else max(first, start)
    high = last if end is None else min(last, end)
    i0 = int(np.searchsorted(steps, low, side="left"))
    i1 = int(np.searchsorted(steps, high, side="right"))
    part_steps, part_losses = steps[i0:i1], losses[i0:i1]
    part_triggers = curve.triggers[i0:i1]
    columns = _buckets(part_steps, part_losses, part_triggers, low, high, buckets)
    anomalies = np.flatnonzero(curve.triggers)[:MAX_ANOMALIES]
    finite = losses[np.isfinite(losses)]
    return {
        "total_steps": total,
        "first_step": first,
        "last_step": last,
        "start": low,
        "end": high,
        "loss_range": (
            [float(finite.min()), float(finite.max())] if len(finite) else None
        ),
        "buckets": columns,
        "anomalies": [
            {
                "step": int(steps[i]),
                "trigger": _trigger_name(int(curve.triggers[i])),
                "loss": _number(losses[i]),
            }
            for i in anomalies
        ],
        "logged": [int(s) for s in logged_steps],
    }


def _buckets(steps, losses, triggers, low: int, high: int, count: int) -> dict:
    """Columns of equal step width over [low, high]: see the module docstring."""
    if not len(steps):
        names = ("first", "last", "min", "max", "max_step", "non_finite", "trigger")
        return {name: [] for name in names}
    if len(steps) <= count:
        starts = np.arange(len(steps))
    else:
        edges = np.linspace(low, high + 1, count + 1)
        starts = np.unique(np.searchsorted(steps, edges[:-1], side="left"))
        starts = starts[starts < len(steps)]
    ends = np.append(starts[1:], len(steps))
    finite = np.isfinite(losses)
    low_values = np.where(finite, losses, np.inf)
    high_values = np.where(finite, losses, -np.inf)
    mins = np.minimum.reduceat(low_values, starts)
    maxs = np.maximum.reduceat(high_values, starts)
    bad = np.add.reduceat((~finite).astype(np.int64), starts)
    trig = np.maximum.reduceat(triggers.astype(np.int64), starts)
    # The step of each bucket's max: the first index in the bucket holding it.
    bucket_of = np.repeat(np.arange(len(starts)), ends - starts)
    hits = np.flatnonzero(high_values == maxs[bucket_of])
    first_hit = np.full(len(starts), -1, np.int64)
    unique, where = np.unique(bucket_of[hits], return_index=True)
    first_hit[unique] = hits[where]
    max_step = np.where(first_hit >= 0, steps[np.maximum(first_hit, 0)], steps[starts])
    return {
        "first": steps[starts].tolist(),
        "last": steps[ends - 1].tolist(),
        "min": [_number(v) for v in mins],
        "max": [_number(v) for v in maxs],
        "max_step": max_step.tolist(),
        "non_finite": bad.tolist(),
        "trigger": [_trigger_name(int(c)) for c in trig],
    }


def _trigger_name(code: int) -> str | None:
    codes = contract.TRIGGER_CODES
    return codes[code] if 0 < code < len(codes) else None


def _number(value: Any) -> float | None:
    value = float(value)
    return float(f"{value:.7g}") if np.isfinite(value) else None


def _kind(metadatum: Any) -> str:
    return contract.parse_plugin_content(metadatum.plugin_content)["kind"]
