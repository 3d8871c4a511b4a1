"""What the TensorBoard plugin knows of the logged batches.

The steps of a run come from `context.data_provider`, in both `--load_fast` modes:

- format version 3 (docs/format.md): one small index entry per step, a plain tensor
  under `batch_images_index/<shard>` tags (`list_tensors`, `read_tensors`: inline, one
  call per run and up to `SHARDS_PER_READ` shards). A step's record and pictures live
  in its pack file, read lazily by `packs.PackFiles`: the data provider is never on
  the picture path, and TensorBoard never holds the pictures;
- format versions 1 and 2: blob sequences under `batch_images` (`list_blob_sequences`,
  `read_blob_sequences`, `read_blob`), as before. A run may hold both; they list as one
  series, tag `batch_images`.

Cost model (`benchmarks/README.md`):

- A logged step's content never changes: a (run, tag, step, wall time) names it. Its
  decoded record is cached (compressed, in a byte-bounded LRU); so are packs.
- The set of steps of a run does change while training runs. Each listed time series
  (a blob tag, an index shard) is cached with the fingerprint the listing gives (last
  step, last wall time, longest value) and read again only when that changed: a growing
  run re-reads its newest shard only.
- A restarted run (steps written again, by a new writer) lists each step once, the
  newest writer's, in both modes (`contract.replay_index`): what TensorBoard's Rust
  loader does, which the Python loader does not.
- Reads of many version 2 records (a run's first `/steps`, `/history`) run in parallel:
  over the Rust data server's gRPC channel each call waits ~40 ms when issued alone.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
import sys
import threading
import zlib
from collections.abc import Iterable, Sequence
from concurrent import futures
from typing import Any

from tensorboard import errors
from tensorboard.data import provider

from tb_batch_images import contract
from tb_batch_images.contract import IndexEntry, PackError
from tb_batch_images.plugin.cache import ByteBoundedLru
from tb_batch_images.plugin.packs import PackFiles

_log = logging.getLogger("tb_batch_images")

# `downsample=` for every read: the loaders' retention decides what is kept (the plugin
# loader raises it for batch_images); the plugin itself never drops steps.
READ_ALL = 10**9

# Parallel provider calls (or pack reads) when many records must be read at once.
PARALLEL_READS = 16

# Index shards (10,000 steps each, ~250 bytes a step) per `read_tensors` call: one
# answer stays far below gRPC's 256 MiB.
SHARDS_PER_READ = 8

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


@dataclasses.dataclass(frozen=True, slots=True)
class StepRef:
    """Where one kept step's data is.

    Format versions 1 and 2: `blob_keys` (the provider's opaque keys: element 0 the
    record, then the images). Version 3: `entry`, its checked index entry (the pack).
    """

    step: int
    wall_time: float  # of the summary event; with the step it names immutable content
    blob_keys: tuple[str, ...] = ()
    entry: IndexEntry | None = None


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """One checked batch record: the fields listings need, and the record itself.

    `error`: the record cannot be used (a broken step). `lost`: a version 3 step whose
    pack file is missing, damaged or refused; the fields its index entry holds are
    known, its record and pictures are not ("picture lost").
    """

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
    images: int = 0  # encoded images after the record (pictures, then masks)
    lost: str | None = None

    def record(self) -> dict[str, Any]:
        """The whole record, as `tb_batch_images.contract.schema` left it."""
        if not self.compressed_record:
            return {}
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
    """The kept steps of one (run, tag) time series, as of one provider fingerprint.

    A version 3 run's batches are one series, tag `batch_images`, made of its index
    shards (and of any version 2 values of that tag).
    """

    run: str
    tag: str
    kind: str  # the series kind: contract.SERIES_*
    fingerprint: tuple[Any, ...]
    steps: tuple[StepRef, ...]  # ordered by step, each step once
    step_numbers: tuple[int, ...]  # the steps' numbers, for bisection

    def find(self, step: int) -> StepRef | None:
        """The kept step `step`, or None."""
        index = bisect.bisect_left(self.step_numbers, step)
        if index < len(self.step_numbers) and self.step_numbers[index] == step:
            return self.steps[index]
        return None


@dataclasses.dataclass(frozen=True)
class _Part:
    """One listed time series (a blob tag, or an index shard) as last read."""

    fingerprint: tuple[Any, ...]
    refs: tuple[StepRef, ...]  # in the provider's order


def entry_info(ref: StepRef) -> StepInfo:
    """What a version 3 step's index entry says, without reading its pack."""
    entry = ref.entry
    assert entry is not None
    return StepInfo(
        ref=ref,
        error=entry.error,
        epoch=entry.epoch,
        batch=entry.batch,
        wall_time=entry.wall_time,
        sequence=entry.sequence,
        batch_size=entry.batch_size,
        samples_logged=entry.samples_logged,
        mode=entry.mode,
        dropped=entry.dropped,
    )


def step_info_from_record(ref: StepRef, data: bytes, images: int) -> StepInfo:
    """Checks the record of a logged step (`tb_batch_images.contract.schema`).

    A record that cannot be used gives a StepInfo with `error`; one that can is kept
    as the validator left it, with its `warnings`. `images`: the encoded images the
    step holds after its record.
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
        images=images,
    )


class BatchImagesData:
    """Reads and caches the batch_images data of one TensorBoard instance.

    Args:
        data_provider: `context.data_provider` of the TensorBoard instance.
        logdir: `context.logdir`, where the version 3 pack files are.
        cache_bytes: memory budget for decoded step records.
        pack_cache_bytes: memory budget for pack files read (see `packs`).
    """

    def __init__(
        self,
        data_provider: Any,
        logdir: str = "",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        pack_cache_bytes: int | None = None,
    ):
        self.provider = data_provider
        self.packs = (
            PackFiles(logdir)
            if pack_cache_bytes is None
            else PackFiles(logdir, pack_cache_bytes)
        )
        self._records = ByteBoundedLru(cache_bytes)
        self._parts: dict[tuple[str, str], _Part] = {}
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
        listing = self._listing(ctx, experiment, None, None)
        self._forget_missing(listing)
        return self._refresh(ctx, experiment, listing)

    def batch_series(self, ctx: Any, experiment: str, run: str, tag: str) -> Series:
        """The current steps of a batches or watchlist series; NotFoundError if unknown.

        Only names the provider has listed are passed back to it: an unknown name is
        looked up in a full listing first.
        """
        with self._lock:
            known = (run, tag) in self._series
        listing = (
            self._listing(ctx, experiment, run, tag)
            if known
            else self._listing(ctx, experiment, None, None)
        )
        if not known:
            self._forget_missing(listing)
        found = listing.get((run, tag))
        if found is None or found[0] not in contract.BATCH_SERIES:
            with self._lock:
                self._series.pop((run, tag), None)
            if not known and run not in {name for name, _ in listing}:
                raise errors.NotFoundError(f"unknown run {run!r}")
            raise errors.NotFoundError(f"run {run!r} has no batch_images tag {tag!r}")
        refreshed = self._refresh(ctx, experiment, {(run, tag): found})
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
        ref = cached.find(step) if cached is not None else None
        if ref is None or (wall_time is not None and ref.wall_time != wall_time):
            ref = self.batch_series(ctx, experiment, run, tag).find(step)
        if ref is None:
            raise errors.NotFoundError(f"run {run!r} has no step {step} (tag {tag!r})")
        if wall_time is not None and ref.wall_time != wall_time:
            raise errors.NotFoundError(
                f"no such image: step {step} of run {run!r} holds other content"
            )
        return ref

    def _listing(
        self, ctx: Any, experiment: str, run: str | None, tag: str | None
    ) -> dict[tuple[str, str], tuple[str, dict[str, tuple[str, tuple[Any, ...]]]]]:
        """{(run, series tag): (series kind, {part tag: (part kind, fingerprint)})}.

        `run` (a name already listed) and `tag` narrow the listing. A version 3 run's
        index shards are parts of its series `batch_images`.
        """
        blob_filter = (
            provider.RunTagFilter(runs=[run], tags=[tag]) if run is not None else None
        )
        blobs = self.provider.list_blob_sequences(
            ctx,
            experiment_id=experiment,
            plugin_name=contract.PLUGIN_NAME,
            run_tag_filter=blob_filter,
        )
        tensors: dict[str, dict[str, Any]] = {}
        if tag in (None, contract.BATCHES_TAG):
            tensors = self.provider.list_tensors(
                ctx,
                experiment_id=experiment,
                plugin_name=contract.PLUGIN_NAME,
                run_tag_filter=provider.RunTagFilter(runs=[run])
                if run is not None
                else None,
            )
        listing: dict[
            tuple[str, str], tuple[str, dict[str, tuple[str, tuple[Any, ...]]]]
        ] = {}
        for run_name, tags in blobs.items():
            for tag_name, metadatum in tags.items():
                if tag is not None and tag_name != tag:
                    continue
                kind = _kind(metadatum)
                key = (run_name, tag_name)
                listing.setdefault(key, (kind, {}))[1][tag_name] = (
                    kind,
                    _fingerprint(metadatum),
                )
        for run_name, tags in tensors.items():
            for tag_name, metadatum in tags.items():
                if _kind(metadatum) != contract.SERIES_BATCH_INDEX:
                    continue
                key = (run_name, contract.BATCHES_TAG)
                parts = listing.setdefault(key, (contract.SERIES_BATCHES, {}))[1]
                parts[tag_name] = (contract.SERIES_BATCH_INDEX, _fingerprint(metadatum))
        return listing

    def _forget_missing(self, listing: dict[tuple[str, str], Any]) -> None:
        present = {
            (run, part) for (run, _), (_, parts) in listing.items() for part in parts
        }
        with self._lock:
            for key in list(self._series):
                if key not in listing:
                    del self._series[key]
            for key in list(self._parts):
                if key not in present:
                    del self._parts[key]

    def _refresh(
        self,
        ctx: Any,
        experiment: str,
        listing: dict[tuple[str, str], tuple[str, dict[str, tuple[str, tuple]]]],
    ) -> list[Series]:
        """Series for every (run, tag) of a listing, reading only parts that changed."""
        with self._lock:
            stale = {
                (run, part): (part_kind, fingerprint)
                for (run, _), (_, parts) in listing.items()
                for part, (part_kind, fingerprint) in parts.items()
                if (run, part) not in self._parts
                or self._parts[(run, part)].fingerprint != fingerprint
            }
        if stale:
            read = self._read_parts(ctx, experiment, stale)
            with self._lock:
                for key, refs in read.items():
                    self._parts[key] = _Part(stale[key][1], refs)
        with self._lock:
            answer = []
            for key in sorted(listing):
                kind, parts = listing[key]
                if not all((key[0], part) in self._parts for part in parts):
                    continue  # listed, but gone by the time it was read
                fingerprint = tuple(
                    sorted(
                        (part, self._parts[(key[0], part)].fingerprint)
                        for part in parts
                    )
                )
                series = self._series.get(key)
                if series is None or series.fingerprint != fingerprint:
                    series = self._merge(key, kind, fingerprint, parts)
                    self._series[key] = series
                answer.append(series)
            return answer

    def _merge(
        self,
        key: tuple[str, str],
        kind: str,
        fingerprint: tuple[Any, ...],
        parts: dict[str, tuple[str, tuple]],
    ) -> Series:
        run, tag = key
        groups: list[Sequence[StepRef]] = []
        index_refs: list[StepRef] = []
        for part, (part_kind, _) in sorted(parts.items()):
            refs = self._parts[(run, part)].refs
            if part_kind == contract.SERIES_BATCH_INDEX:
                index_refs.extend(refs)
            else:
                groups.append(refs)
        steps = contract.replay_index(
            index_refs,
            step=_step,
            wall_time=_wall_time,
            writer=_writer,
            others=groups,
        )
        return Series(
            run=run,
            tag=tag,
            kind=kind,
            fingerprint=fingerprint,
            steps=tuple(steps),
            step_numbers=tuple(ref.step for ref in steps),
        )

    def _read_parts(
        self, ctx: Any, experiment: str, stale: dict[tuple[str, str], tuple[str, Any]]
    ) -> dict[tuple[str, str], tuple[StepRef, ...]]:
        """The refs of the stale parts: blob series in one call, index shards per run."""
        read: dict[tuple[str, str], tuple[StepRef, ...]] = {}
        blob_parts = [
            key
            for key, (kind, _) in stale.items()
            if kind != contract.SERIES_BATCH_INDEX
        ]
        if blob_parts:
            data = self.provider.read_blob_sequences(
                ctx,
                experiment_id=experiment,
                plugin_name=contract.PLUGIN_NAME,
                downsample=READ_ALL,
                run_tag_filter=provider.RunTagFilter(
                    runs=sorted({run for run, _ in blob_parts}),
                    tags=sorted({tag for _, tag in blob_parts}),
                ),
            )
            for run, tag in blob_parts:
                datums = data.get(run, {}).get(tag)
                if datums is None:
                    continue
                read[(run, tag)] = tuple(
                    StepRef(
                        step=datum.step,
                        wall_time=datum.wall_time,
                        blob_keys=tuple(blob.blob_key for blob in datum.values),
                    )
                    for datum in datums
                )
        shards: dict[str, list[str]] = {}
        for (run, tag), (kind, _) in stale.items():
            if kind == contract.SERIES_BATCH_INDEX:
                shards.setdefault(run, []).append(tag)
        calls = [
            (run, sorted(tags)[start : start + SHARDS_PER_READ])
            for run, tags in sorted(shards.items())
            for start in range(0, len(tags), SHARDS_PER_READ)
        ]
        for answer in self._pool.map(
            lambda call: self._read_index(ctx, experiment, *call), calls
        ):
            read.update(answer)
        return read

    def _read_index(
        self, ctx: Any, experiment: str, run: str, tags: list[str]
    ) -> dict[tuple[str, str], tuple[StepRef, ...]]:
        data = self.provider.read_tensors(
            ctx,
            experiment_id=experiment,
            plugin_name=contract.PLUGIN_NAME,
            downsample=READ_ALL,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=tags),
        )
        read = {}
        for tag in tags:
            datums = data.get(run, {}).get(tag)
            if datums is None:
                continue
            read[(run, tag)] = tuple(
                StepRef(
                    step=datum.step,
                    wall_time=datum.wall_time,
                    entry=contract.check_index_entry(_scalar(datum.numpy), datum.step),
                )
                for datum in datums
            )
        return read

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

    def step_summaries(
        self, ctx: Any, run: str, tag: str, refs: Sequence[StepRef]
    ) -> list[dict[str, Any]]:
        """`StepSummary`s: version 3 steps from their entries (no pack is read)."""
        if all(ref.entry is not None for ref in refs):
            return [entry_info(ref).summary() for ref in refs]
        return [info.summary() for info in self.step_infos(ctx, run, tag, refs)]

    def _read_step_info(self, ctx: Any, run: str, tag: str, ref: StepRef) -> StepInfo:
        if ref.entry is not None:
            return self._read_pack_info(run, tag, ref)
        if not ref.blob_keys:
            info = StepInfo(ref=ref, error="empty value: no record")
        else:
            try:
                data = self.provider.read_blob(ctx, blob_key=ref.blob_keys[0])
            except errors.NotFoundError as error:  # dropped by retention since listed
                return StepInfo(
                    ref=ref, error=f"no longer kept by TensorBoard ({error})"
                )
            info = step_info_from_record(ref, data, len(ref.blob_keys) - 1)
        self._records.put(_record_key(run, tag, ref), info, info.size())
        return info

    def _read_pack_info(self, run: str, tag: str, ref: StepRef) -> StepInfo:
        if ref.entry.error is not None:
            return entry_info(ref)
        try:
            elements = self.packs.elements(run, ref.entry)
        except PackError as error:
            # Not cached: a pack copied back later is read again.
            return dataclasses.replace(entry_info(ref), lost=str(error))
        if not elements:
            info = StepInfo(ref=ref, error="empty value: no record")
        else:
            info = step_info_from_record(ref, elements[0], len(elements) - 1)
        self._records.put(_record_key(run, tag, ref), info, info.size())
        return info

    def read_image(self, ctx: Any, run: str, ref: StepRef, index: int) -> bytes:
        """The encoded bytes of image `index` (0-based) of a step.

        Version 3: from the step's pack (cached), never through the provider; a pack
        that cannot be read is a NotFoundError naming why ("picture lost").
        """
        if ref.entry is not None:
            try:
                elements = self.packs.elements(run, ref.entry)
            except PackError as error:
                raise errors.NotFoundError(f"picture lost: {error}") from None
            if not 0 <= index < len(elements) - 1:
                raise errors.NotFoundError(f"step {ref.step} has no image {index}")
            return elements[index + 1]
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
                lambda series: self._last_info(ctx, series),
                batches,
            )
        )
        statuses = {
            run: self._status_record(ctx, series)
            for run, series in status_by_run.items()
        }
        unavailable = self.packs.unavailable()
        answer = []
        for series, last in zip(batches, lasts, strict=True):
            summary = _run_summary(series, last, statuses.get(series.run))
            if unavailable and series.steps[-1].entry is not None:
                summary["warnings"].append(unavailable)
            answer.append(summary)
        return answer

    def _last_info(self, ctx: Any, series: Series) -> StepInfo:
        """The last step's facts: a version 3 step's from its entry (no pack read)."""
        last = series.steps[-1]
        if last.entry is not None:
            return entry_info(last)
        return self.step_info(ctx, series.run, series.tag, last)

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
                if info.error or info.lost:
                    continue
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


def _step(ref: StepRef) -> int:
    return ref.step


def _wall_time(ref: StepRef) -> float:
    return ref.wall_time


def _writer(ref: StepRef) -> str | None:
    return ref.entry.writer if ref.entry is not None else None


def _fingerprint(metadatum: Any) -> tuple[Any, ...]:
    # Tensor series have no max_length.
    length = getattr(metadatum, "max_length", None)
    return (metadatum.max_step, metadatum.max_wall_time, length)


def _scalar(value: Any) -> Any:
    """The one element of an index entry's tensor (a rank-0 string), else None."""
    try:
        return value.reshape(-1)[0] if value.size == 1 else None
    except AttributeError:
        return None


def _kind(metadatum: Any) -> str:
    return contract.parse_plugin_content(metadatum.plugin_content)["kind"]


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _interned(value: Any) -> str | None:
    # Filenames repeat at many steps; one copy of each saves most of their memory.
    return sys.intern(value) if isinstance(value, str) else None
