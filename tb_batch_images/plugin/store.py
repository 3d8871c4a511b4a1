"""What the TensorBoard plugin knows of the logged batches, read through the data provider.

Everything comes from `context.data_provider` (`list_blob_sequences`,
`read_blob_sequences`, `read_blob`); nothing here touches the filesystem or TensorBoard's
multiplexer, so both `--load_fast=false` (in-process loader) and `--load_fast=true`
(the Rust data server) work the same.

Cost model, measured at 10 runs x 1,000 steps (see `benchmarks/README.md`):

- A logged step's content never changes: a (run, tag, step, wall time) names it. Its
  decoded record is cached (compressed, in a byte-bounded LRU), so element 0 of a step is
  read from the provider once.
- The set of steps of a run does change while training runs. It is cached per time
  series with the fingerprint `list_blob_sequences` gives (last step, last wall time,
  longest value), and read again only when that changed.
- Reads of many records (a run's first `/steps`, `/history`) run in parallel: over the
  Rust data server's gRPC channel each call waits ~40 ms when issued alone, but
  concurrent calls overlap almost completely.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import sys
import threading
import zlib
from collections.abc import Iterable
from concurrent import futures
from typing import Any

from tensorboard import errors
from tensorboard.data import provider

from tb_batch_images import contract

_log = logging.getLogger("tb_batch_images")

# `downsample=` for every read: the loaders' retention decides what is kept (the plugin
# loader raises it for batch_images); the plugin itself never drops steps.
READ_ALL = 10**9

# Parallel provider calls when many records must be read at once.
PARALLEL_READS = 16

# Decoded step records kept in memory, as compressed JSON plus a few fields.
DEFAULT_CACHE_BYTES = 128 * 1024 * 1024

# The run directories the logger writes, by their last path component.
_MODE_OF_DIR = {directory: mode for mode, directory in contract.MODE_DIRS.items()}

# Sample fields that `/history` reports for each appearance.
HISTORY_FIELDS = (
    "position",
    "filename",
    "sample_id",
    "label",
    "label_name",
    "prediction",
    "prediction_name",
    "confidence",
    "correct",
    "loss",
    "flags",
    "image_shape",
    "boxes",
)


@dataclasses.dataclass(frozen=True)
class StepRef:
    """Where one kept step's blobs are: element 0 is the record, then the images."""

    step: int
    wall_time: float  # of the summary event; with the step it names immutable content
    blob_keys: tuple[str, ...]  # the provider's opaque keys


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """One checked batch record: the fields listings need, and the record itself."""

    ref: StepRef
    error: str | None  # why the record could not be read, else None
    warnings: tuple[str, ...] = ()  # what the validator dropped, clamped or cut
    epoch: int | None = None
    batch: int | None = None
    wall_time: float | None = None  # when the batch was captured
    sequence: int | None = None
    batch_size: int | None = None
    samples_logged: int = 0
    mode: str | None = None
    mime_type: str = "image/png"
    dropped: dict[str, int] | None = None
    filenames: tuple[str | None, ...] = ()
    sample_ids: tuple[int | None, ...] = ()
    compressed_record: bytes = b""

    def record(self) -> dict[str, Any]:
        """The whole record, as `tb_batch_images.contract.schema` left it."""
        return json.loads(zlib.decompress(self.compressed_record))

    def summary(self) -> dict[str, Any]:
        """The `StepSummary` of docs/api.md."""
        return {
            "step": self.ref.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "wall_time": self.wall_time,
            "samples_logged": self.samples_logged,
            "batch_size": self.batch_size,
            "error": self.error,
        }

    def size(self) -> int:
        """Approximate bytes held, for the cache budget."""
        return 512 + len(self.compressed_record) + 96 * len(self.filenames)


@dataclasses.dataclass(frozen=True)
class Series:
    """The kept steps of one (run, tag) time series, as of one provider fingerprint."""

    run: str
    tag: str
    kind: str  # the series kind: contract.SERIES_*
    fingerprint: tuple[Any, ...]
    steps: tuple[StepRef, ...]  # ordered by step
    by_step: dict[int, StepRef]


def step_info_from_record(ref: StepRef, data: bytes) -> StepInfo:
    """Checks element 0 of a logged step (`tb_batch_images.contract.schema`).

    A record that cannot be used gives a StepInfo with `error`; one that can is kept
    as the validator left it, with its `warnings`.
    """
    checked = contract.check_batch_record(data)
    if checked.record is None:
        return StepInfo(ref=ref, error=checked.error)
    record = checked.record
    if checked.changed:
        # ASCII escapes: a lone surrogate (valid JSON, not UTF-8) stays encodable.
        data = json.dumps(record, allow_nan=False).encode("ascii")
    samples = record["samples"]
    warnings = checked.warnings
    images = max(len(ref.blob_keys) - 1, 0)
    if len(samples) > images:
        warnings += (f"{len(samples)} samples but {images} images: some have none",)
    return StepInfo(
        ref=ref,
        error=None,
        warnings=warnings,
        epoch=record.get("epoch"),
        batch=record.get("batch"),
        wall_time=_float_or_none(record.get("wall_time")),
        sequence=record.get("sequence"),
        batch_size=record.get("batch_size"),
        samples_logged=len(samples),
        mode=record.get("mode"),
        mime_type=contract.image_mime_type(record),
        dropped=record.get("dropped"),
        filenames=tuple(_interned(s.get("filename")) for s in samples),
        sample_ids=tuple(s.get("sample_id") for s in samples),
        compressed_record=zlib.compress(data, 1),
    )


class _ByteBoundedLru:
    """A thread-safe LRU mapping whose entries are weighed in bytes."""

    def __init__(self, max_bytes: int):
        self._max_bytes = max_bytes
        self._entries: collections.OrderedDict[Any, tuple[Any, int]] = (
            collections.OrderedDict()
        )
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Any, value: Any, size: int) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self._max_bytes and len(self._entries) > 1:
                _, (_, evicted_size) = self._entries.popitem(last=False)
                self._bytes -= evicted_size


class BatchImagesData:
    """Reads and caches the batch_images data of one TensorBoard data provider.

    Args:
        data_provider: `context.data_provider` of the TensorBoard instance.
        cache_bytes: memory budget for decoded step records.
    """

    def __init__(self, data_provider: Any, cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.provider = data_provider
        self._records = _ByteBoundedLru(cache_bytes)
        self._series: dict[tuple[str, str], Series] = {}
        self._lock = threading.Lock()
        self._pool = futures.ThreadPoolExecutor(
            max_workers=PARALLEL_READS, thread_name_prefix="batch_images_read"
        )

    def pool_map(self, function: Any, items: Iterable[Any]) -> Iterable[Any]:
        """`function` over `items` on the read pool (provider reads overlap)."""
        return self._pool.map(function, items)

    # -- time series ----------------------------------------------------------
    def all_series(self, ctx: Any, experiment: str) -> list[Series]:
        """Every batch_images time series now, each refreshed if it changed."""
        listing = self.provider.list_blob_sequences(
            ctx, experiment_id=experiment, plugin_name=contract.PLUGIN_NAME
        )
        self._forget_missing(listing)
        return self._refresh(ctx, experiment, listing)

    def batch_series(self, ctx: Any, experiment: str, run: str, tag: str) -> Series:
        """The current steps of a batches or watchlist series; NotFoundError if unknown.

        Only names the provider has listed are passed back to it: an unknown name is
        looked up in a full listing first.
        """
        with self._lock:
            known = (run, tag) in self._series
        listing = self.provider.list_blob_sequences(
            ctx,
            experiment_id=experiment,
            plugin_name=contract.PLUGIN_NAME,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag])
            if known
            else None,
        )
        if not known:
            self._forget_missing(listing)
        metadatum = listing.get(run, {}).get(tag)
        if metadatum is None or _kind(metadatum) not in contract.BATCH_SERIES:
            with self._lock:
                self._series.pop((run, tag), None)
            if not known and run not in listing:
                raise errors.NotFoundError(f"unknown run {run!r}")
            raise errors.NotFoundError(f"run {run!r} has no batch_images tag {tag!r}")
        refreshed = self._refresh(ctx, experiment, {run: {tag: metadatum}})
        if not refreshed:  # listed, but gone by the time it was read
            raise errors.NotFoundError(f"run {run!r} has no batch_images tag {tag!r}")
        return refreshed[0]

    def step_ref(
        self,
        ctx: Any,
        experiment: str,
        run: str,
        tag: str,
        step: int,
        wall_time: float | None = None,
    ) -> StepRef:
        """A kept step of a batches series (at `wall_time`, if given), else NotFoundError.

        A step already seen is answered from the cache without asking the provider:
        its content cannot change.
        """
        with self._lock:
            cached = self._series.get((run, tag))
        ref = cached.by_step.get(step) if cached is not None else None
        if ref is None or (wall_time is not None and ref.wall_time != wall_time):
            ref = self.batch_series(ctx, experiment, run, tag).by_step.get(step)
        if ref is None:
            raise errors.NotFoundError(f"run {run!r} has no step {step} (tag {tag!r})")
        if wall_time is not None and ref.wall_time != wall_time:
            raise errors.NotFoundError(
                f"no such image: step {step} of run {run!r} holds other content"
            )
        return ref

    def _forget_missing(self, listing: dict[str, dict[str, Any]]) -> None:
        present = {(run, tag) for run, tags in listing.items() for tag in tags}
        with self._lock:
            for key in list(self._series):
                if key not in present:
                    del self._series[key]

    def _refresh(
        self, ctx: Any, experiment: str, listing: dict[str, dict[str, Any]]
    ) -> list[Series]:
        """Series for every (run, tag) of a listing, reading only those that changed."""
        current: dict[tuple[str, str], tuple[str, tuple[Any, ...]]] = {}
        for run, tags in listing.items():
            for tag, metadatum in tags.items():
                kind = _kind(metadatum)
                fingerprint = (
                    metadatum.max_step,
                    metadatum.max_wall_time,
                    metadatum.max_length,
                )
                current[(run, tag)] = (kind, fingerprint)
        with self._lock:
            stale = [
                key
                for key, (_, fingerprint) in current.items()
                if key not in self._series
                or self._series[key].fingerprint != fingerprint
            ]
        if stale:
            data = self.provider.read_blob_sequences(
                ctx,
                experiment_id=experiment,
                plugin_name=contract.PLUGIN_NAME,
                downsample=READ_ALL,
                run_tag_filter=provider.RunTagFilter(
                    runs=sorted({run for run, _ in stale}),
                    tags=sorted({tag for _, tag in stale}),
                ),
            )
            with self._lock:
                for run, tag in stale:
                    datums = data.get(run, {}).get(tag)
                    if datums is None:
                        continue
                    kind, fingerprint = current[(run, tag)]
                    refs = tuple(
                        StepRef(
                            step=datum.step,
                            wall_time=datum.wall_time,
                            blob_keys=tuple(blob.blob_key for blob in datum.values),
                        )
                        for datum in sorted(datums, key=lambda datum: datum.step)
                    )
                    self._series[(run, tag)] = Series(
                        run=run,
                        tag=tag,
                        kind=kind,
                        fingerprint=fingerprint,
                        steps=refs,
                        by_step={ref.step: ref for ref in refs},
                    )
        with self._lock:
            return [self._series[key] for key in sorted(current) if key in self._series]

    # -- records --------------------------------------------------------------
    def step_infos(
        self, ctx: Any, run: str, tag: str, refs: Iterable[StepRef]
    ) -> list[StepInfo]:
        """The decoded records of `refs`, in order; missing ones read in parallel."""
        refs = list(refs)
        infos: list[StepInfo | None] = [
            self._records.get(_record_key(run, tag, ref)) for ref in refs
        ]
        missing = [index for index, info in enumerate(infos) if info is None]
        if len(missing) == 1:
            infos[missing[0]] = self._read_step_info(ctx, run, tag, refs[missing[0]])
        elif missing:
            read = self._pool.map(
                lambda index: self._read_step_info(ctx, run, tag, refs[index]), missing
            )
            for index, info in zip(missing, read, strict=True):
                infos[index] = info
        return infos  # type: ignore[return-value]

    def step_info(self, ctx: Any, run: str, tag: str, ref: StepRef) -> StepInfo:
        return self.step_infos(ctx, run, tag, [ref])[0]

    def _read_step_info(self, ctx: Any, run: str, tag: str, ref: StepRef) -> StepInfo:
        if not ref.blob_keys:
            info = StepInfo(ref=ref, error="empty value: no record")
        else:
            try:
                data = self.provider.read_blob(ctx, blob_key=ref.blob_keys[0])
            except errors.NotFoundError as error:  # dropped by retention since listed
                return StepInfo(
                    ref=ref, error=f"no longer kept by TensorBoard ({error})"
                )
            info = step_info_from_record(ref, data)
        self._records.put(_record_key(run, tag, ref), info, info.size())
        return info

    def read_image(self, ctx: Any, ref: StepRef, index: int) -> bytes:
        """The encoded bytes of image `index` (0-based) of a step."""
        if not 0 <= index < len(ref.blob_keys) - 1:
            raise errors.NotFoundError(f"step {ref.step} has no image {index}")
        return self.provider.read_blob(ctx, blob_key=ref.blob_keys[index + 1])

    # -- runs -----------------------------------------------------------------
    def statuses(self, ctx: Any, experiment: str) -> dict[str, dict[str, Any]]:
        """The latest usable status record of each run that has one."""
        found = {}
        for series in self.all_series(ctx, experiment):
            if series.kind == contract.SERIES_STATUS and series.steps:
                record = self._status_record(ctx, series)
                if record is not None:
                    found[series.run] = record
        return found

    def runs(self, ctx: Any, experiment: str) -> list[dict[str, Any]]:
        """The `Run` objects of docs/api.md, one per (run, batches tag)."""
        all_series = self.all_series(ctx, experiment)
        status_by_run: dict[str, Series] = {}
        for series in all_series:
            if series.kind == contract.SERIES_STATUS and series.steps:
                status_by_run[series.run] = series
        batches = [
            s for s in all_series if s.kind == contract.SERIES_BATCHES and s.steps
        ]
        # The last step of each series (always kept by retention) and the latest status.
        lasts = list(
            self._pool.map(
                lambda series: self.step_info(
                    ctx, series.run, series.tag, series.steps[-1]
                ),
                batches,
            )
        )
        statuses = {
            run: self._status_record(ctx, series)
            for run, series in status_by_run.items()
        }
        return [
            _run_summary(series, last, statuses.get(series.run))
            for series, last in zip(batches, lasts, strict=True)
        ]

    def _status_record(self, ctx: Any, series: Series) -> dict[str, Any] | None:
        ref = series.steps[-1]
        key = ("status", *_record_key(series.run, series.tag, ref))
        cached = self._records.get(key)
        if cached is not None:
            return cached
        try:
            checked = contract.check_status_record(
                self.provider.read_blob(ctx, blob_key=ref.blob_keys[0])
            )
        except (IndexError, errors.NotFoundError) as error:
            checked = contract.Checked(record=None, error=str(error))
        if checked.record is None:
            _log.warning(
                "unreadable status record in run %r: %s", series.run, checked.error
            )
            return None
        self._records.put(key, checked.record, 1024)
        return checked.record

    # -- history --------------------------------------------------------------
    def history(
        self,
        ctx: Any,
        experiment: str,
        *,
        filename: str | None,
        sample_id: int | None,
        runs: list[str] | None,
    ) -> list[tuple[Series, StepInfo, int, dict[str, Any]]]:
        """Every appearance of a filename or sample id: (series, step, index, sample).

        Ordered by run, tag, then step. Runs must be known (NotFoundError otherwise).
        """
        every = [
            s
            for s in self.all_series(ctx, experiment)
            if s.kind == contract.SERIES_BATCHES
        ]
        if runs is not None:
            known = {series.run for series in every}
            for run in runs:
                if run not in known:
                    raise errors.NotFoundError(f"unknown run {run!r}")
            every = [series for series in every if series.run in runs]
        found = []
        for series in every:
            for info in self.step_infos(ctx, series.run, series.tag, series.steps):
                if filename is not None:
                    identities = info.filenames
                    wanted: Any = filename
                else:
                    identities = info.sample_ids
                    wanted = sample_id
                if wanted not in identities:
                    continue
                samples = info.record().get("samples", [])
                for index, identity in enumerate(identities):
                    if identity == wanted:
                        found.append((series, info, index, samples[index]))
        return found


def steps_logged(series: Series, last: StepInfo, status: dict[str, Any] | None) -> int:
    """How many steps the logger wrote to a series, at least.

    TensorBoard always keeps the last step, whose record counts the batches the logger
    wrote before it (`sequence`); the status record counts them too. When several
    loggers wrote to one directory, earlier ones may be undercounted.
    """
    counts = [len(series.steps)]
    if last.sequence is not None:
        counts.append(last.sequence + 1)
    if status and isinstance(status.get("batches_written"), int):
        counts.append(status["batches_written"])
    return max(counts)


def mode_of_run(run: str, last: StepInfo) -> str | None:
    """`train`/`validation` from the run directory's name, else from the records."""
    return _MODE_OF_DIR.get(run.rsplit("/", 1)[-1], last.mode)


def _run_summary(
    series: Series, last: StepInfo, status: dict[str, Any] | None
) -> dict[str, Any]:
    dropped = dict(last.dropped or {})
    warnings: list[str] = []
    if status:
        if status.get("wall_time", 0) >= (last.wall_time or 0) and isinstance(
            status.get("dropped"), dict
        ):
            dropped = dict(status["dropped"])
        warnings = [str(w) for w in status.get("warnings") or []]
    if last.error:
        warnings.append(f"the last step's record could not be read: {last.error}")
    return {
        "run": series.run,
        "tag": series.tag,
        "mode": mode_of_run(series.run, last),
        "steps_kept": len(series.steps),
        "steps_logged": steps_logged(series, last, status),
        "first_step": series.steps[0].step,
        "last_step": series.steps[-1].step,
        "dropped": dropped,
        "warnings": warnings,
    }


def _record_key(run: str, tag: str, ref: StepRef) -> tuple[str, str, int, float]:
    return (run, tag, ref.step, ref.wall_time)


def _kind(metadatum: Any) -> str:
    return contract.parse_plugin_content(metadatum.plugin_content)["kind"]


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _interned(value: Any) -> str | None:
    # Filenames repeat at many steps; one copy of each saves most of their memory.
    return sys.intern(value) if isinstance(value, str) else None
