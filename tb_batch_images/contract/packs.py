"""Format version 3: a small index entry per logged step, its bytes in a pack file.

TensorBoard holds every value of an event file in memory, so since version 3 a logged
batch is split in two (docs/format.md, "Version 3"):

- an **index entry** in the event file: a rank-0 string tensor (DATA_CLASS_TENSOR)
  holding ~250 bytes of JSON (`encode_index_entry`), under a tag sharded by step
  (`index_tag`), which TensorBoard lists and the readers turn into the step list;
- a **pack file** per step, written once, beside the run's event files under
  `<run>/plugins/batch_images/` (`pack_relpath`): an offset header, then the elements a
  version 2 summary held (the JSON record, the encoded pictures, the masks)
  (`encode_pack`, `decode_pack`).

The writer writes and closes the pack, then writes its entry: an entry only ever names
a complete file, and the entry's length and CRC-32 catch one that is not. Paths are
built from validated integers and the writer id alone (`pack_relpath`), never from
anything else in the data.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import os
import re
import stat
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from tensorboard.compat.proto import summary_pb2

from tb_batch_images.contract.limits import (
    MAX_COUNTERS,
    MAX_SAFE_INTEGER,
    MAX_SAMPLES,
    MAX_WALL_TIME,
)
from tb_batch_images.contract.names import (
    FORMAT_VERSION,
    INDEX_SHARD_STEPS,
    INDEX_TAG_PREFIX,
    MODES,
    PACK_FOLDER_STEPS,
    PACKS_DIR,
    PLUGIN_NAME,
    SERIES_BATCH_INDEX,
)

# The first bytes of every pack file.
PACK_MAGIC = b"TBBIPAK1"
# magic, element count (u32), reserved (u32), then count + 1 offsets (u64), little-endian.
_HEAD = struct.Struct("<8sII")
_OFFSET = struct.Struct("<Q")

# A pack holds the record, a picture per sample and up to two masks per sample.
MAX_PACK_ELEMENTS = 1 + 3 * MAX_SAMPLES
# The largest pack a reader opens (the record alone may be 64 MiB).
MAX_PACK_BYTES = 1 << 30
# The largest index entry a reader parses (the writer's are ~250 bytes).
MAX_ENTRY_BYTES = 64 * 1024
# Steps are int64 in TensorBoard's events.
MAX_STEP = 2**63 - 1

WRITER_ID = re.compile(r"[0-9a-f]{16}")
_MAX_COUNTER_NAME = 64  # as `dropped` in a batch record


class PackError(ValueError):
    """A pack file that cannot be used: missing, truncated, damaged or not a pack."""


# -- paths ---------------------------------------------------------------------------
def pack_relpath(writer: str, step: int) -> str:
    """The pack file of a step, relative to its run folder ('/'-separated).

    `plugins/batch_images/<writer>/<step // 1000, 6 digits>/<step, 12 digits>.pack`:
    at most 1,000 packs per folder. Only a writer id of 16 lowercase hex digits and a
    step from 0 to 2^63 - 1 make a path; anything else is a ValueError, so nothing
    taken from a request or from the data can name another file.
    """
    if not isinstance(writer, str) or not WRITER_ID.fullmatch(writer):
        raise ValueError("a writer id is 16 lowercase hexadecimal digits")
    if type(step) is not int or not 0 <= step <= MAX_STEP:
        raise ValueError(f"a step is an integer from 0 to {MAX_STEP}")
    return f"{PACKS_DIR}/{writer}/{step // PACK_FOLDER_STEPS:06d}/{step:012d}.pack"


def index_tag(step: int) -> str:
    """The tag of a step's index entry: `batch_images_index/<step // 10,000, 6 digits>`.

    One tag per 10,000 steps keeps each `read_tensors` answer far below gRPC's 256 MiB
    and lets a reader re-read only the newest shard while a run grows.
    """
    return f"{INDEX_TAG_PREFIX}{step // INDEX_SHARD_STEPS:06d}"


def index_metadata() -> summary_pb2.SummaryMetadata:
    """SummaryMetadata of an index entry: a plain tensor (read inline, in bulk)."""
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = PLUGIN_NAME
    metadata.plugin_data.content = json.dumps(
        {"version": FORMAT_VERSION, "kind": SERIES_BATCH_INDEX}
    ).encode("utf-8")
    metadata.data_class = summary_pb2.DATA_CLASS_TENSOR
    return metadata


# -- pack files -----------------------------------------------------------------------
def encode_pack(elements: Sequence[bytes]) -> bytes:
    """The bytes of a pack file: header (magic, count, offsets), then the elements.

    `elements` are those of a version 2 summary: the JSON record, the pictures, the
    masks. Element i is `data[offsets[i]:offsets[i + 1]]`.
    """
    count = len(elements)
    header = _HEAD.size + (count + 1) * _OFFSET.size
    offsets = [header]
    for element in elements:
        offsets.append(offsets[-1] + len(element))
    return b"".join(
        [
            _HEAD.pack(PACK_MAGIC, count, 0),
            struct.pack(f"<{count + 1}Q", *offsets),
            *elements,
        ]
    )


def decode_pack(data: bytes) -> list[bytes]:
    """The elements of a pack file; PackError if it is not a whole, well-formed pack."""
    if len(data) < _HEAD.size:
        raise PackError(f"not a pack file ({len(data)} bytes)")
    magic, count, _ = _HEAD.unpack_from(data)
    if magic != PACK_MAGIC:
        raise PackError("not a pack file (wrong magic bytes)")
    if count > MAX_PACK_ELEMENTS:
        raise PackError(f"a pack of {count} elements is over the limit")
    header = _HEAD.size + (count + 1) * _OFFSET.size
    if len(data) < header:
        raise PackError("truncated pack file (header)")
    offsets = struct.unpack_from(f"<{count + 1}Q", data, _HEAD.size)
    if offsets[0] != header or offsets[-1] != len(data):
        raise PackError("pack file of the wrong length (truncated or extended)")
    if any(a > b for a, b in zip(offsets, offsets[1:], strict=False)):
        raise PackError("pack file with offsets out of order")
    view = memoryview(data)
    return [bytes(view[a:b]) for a, b in zip(offsets, offsets[1:], strict=False)]


def check_pack(data: bytes, entry: IndexEntry) -> list[bytes]:
    """A pack's elements, checked against its entry's length and CRC-32."""
    if len(data) != entry.pack_bytes:
        raise PackError(
            f"pack file of {len(data)} bytes, its entry says {entry.pack_bytes} "
            "(truncated or replaced)"
        )
    if zlib.crc32(data) != entry.pack_crc32:
        raise PackError("pack file damaged (CRC-32 differs from its entry)")
    return decode_pack(data)


def is_remote(path: str) -> bool:
    """Whether a path names remote storage (`gs://...`), not the local disk."""
    return "://" in path and not path.startswith("file://")


def read_pack(
    run_dir: str, entry: IndexEntry, read: Callable[[str, int], bytes]
) -> list[bytes]:
    """The elements of an entry's pack file in `run_dir`; PackError if it is lost.

    `read(path, limit)` reads at most `limit` bytes of a file (through `tf.io.gfile`:
    the caller's). On the local disk the file's real path must lie inside the run's
    real `plugins/batch_images` folder (symlinks resolved) and be a regular file of
    the length the entry says; on remote storage the path is the run folder joined
    with `pack_relpath` (no symlinks, and `..` is not resolved there).
    """
    if entry.error is not None or entry.writer is None:
        raise PackError(entry.error or "no pack")
    relative = pack_relpath(entry.writer, entry.step)
    if is_remote(run_dir):
        path = run_dir.rstrip("/") + "/" + relative
    else:
        path = _local_pack_path(run_dir, relative, entry.pack_bytes)
    try:
        data = read(path, entry.pack_bytes + 1)
    except Exception as error:  # missing, unreadable: one step's pictures lost
        raise PackError(f"pack file {relative}: {_reason(error)}") from None
    try:
        return check_pack(data, entry)
    except PackError as error:
        raise PackError(f"pack file {relative}: {error}") from None


def _local_pack_path(run_dir: str, relative: str, size: int) -> str:
    """A pack's real path, inside the run's real pack folder, or PackError."""
    if run_dir.startswith("file://"):
        run_dir = run_dir[len("file://") :]
    allowed = os.path.realpath(os.path.join(run_dir, *PACKS_DIR.split("/")))
    real = os.path.realpath(os.path.join(run_dir, *relative.split("/")))
    if os.path.commonpath([allowed, real]) != allowed or real == allowed:
        raise PackError(f"pack file {relative}: refused, it leads out of the run")
    try:
        status = os.stat(real)
    except OSError as error:
        raise PackError(f"pack file {relative}: {_reason(error)}") from None
    if not stat.S_ISREG(status.st_mode):
        raise PackError(f"pack file {relative}: refused, not a regular file")
    if status.st_size != size:
        raise PackError(
            f"pack file {relative}: {status.st_size} bytes, its entry says {size} "
            "(truncated or replaced)"
        )
    return real


def _reason(error: BaseException) -> str:
    if isinstance(error, FileNotFoundError) or type(error).__name__ == "NotFoundError":
        return "missing"
    text = str(error).strip().splitlines()
    return f"unreadable ({type(error).__name__}: {text[0] if text else ''})"


# -- restarts ------------------------------------------------------------------------
Item = TypeVar("Item")


def replay(
    groups: Iterable[Sequence[Item]],
    step: Callable[[Item], int],
    wall_time: Callable[[Item], float],
) -> list[Item]:
    """The steps a series shows: each step once, a restarted run's newest writer's.

    Each group is one writer's values in the order written (version 2 blob values
    as TensorBoard lists them: file order in the Python loader, the Rust loader's
    already replayed). Within a group, a step written again drops the kept steps from
    it on (TensorBoard's rule for a restart). The groups are applied by when each
    started (its first wall time), each dropping the kept steps from its first step
    on. This is what TensorBoard's Rust loader does within one time series, done the
    same way under both loaders (the Python loader keeps both writers' values) and
    across the shards of an index. Answers the kept values ordered by step.
    """
    ordered = []
    for group in groups:
        kept: list[Item] = []
        for item in group:
            while kept and step(kept[-1]) >= step(item):
                kept.pop()
            kept.append(item)
        if kept:
            ordered.append(kept)
    ordered.sort(key=lambda kept: min(wall_time(item) for item in kept))
    items: list[Item] = []
    numbers: list[int] = []
    for kept in ordered:
        cut = bisect.bisect_left(numbers, step(kept[0]))
        del items[cut:], numbers[cut:]
        items.extend(kept)
        numbers.extend(step(item) for item in kept)
    return items


def replay_index(
    values: Iterable[Item],
    *,
    step: Callable[[Item], int],
    wall_time: Callable[[Item], float],
    writer: Callable[[Item], str | None],
    others: Iterable[Sequence[Item]] = (),
) -> list[Item]:
    """`replay` over version 3 index values, grouped by writer (each writer's by step,
    its latest value of a step), and `others` (version 2 groups). Values of no writer
    (broken entries) never drop a step: the latest of a step is listed where no other
    value of its step is. Ordered by step."""
    by_writer: dict[str, dict[int, Item]] = {}
    broken: list[Item] = []
    for value in values:
        name = writer(value)
        if name is None:
            broken.append(value)
            continue
        steps = by_writer.setdefault(name, {})
        old = steps.get(step(value))
        if old is None or wall_time(value) >= wall_time(old):
            steps[step(value)] = value
    groups = [[steps[s] for s in sorted(steps)] for steps in by_writer.values()]
    kept = replay([*others, *groups], step, wall_time)
    if broken:
        seen = {step(item) for item in kept}
        latest: dict[int, Item] = {}
        for item in broken:  # one per step: its latest
            if step(item) not in seen and (
                step(item) not in latest
                or wall_time(item) >= wall_time(latest[step(item)])
            ):
                latest[step(item)] = item
        kept.extend(latest.values())
        kept.sort(key=step)
    return kept


# -- index entries ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class IndexEntry:
    """A checked index entry: where a step's pack is, and what `/steps` lists of it.

    `error` is None, or why the entry cannot be used (then only `step` is known and no
    pack is read).
    """

    step: int
    writer: str | None = None
    pack_bytes: int = 0
    pack_crc32: int = 0
    wall_time: float | None = None  # when the batch was captured
    mode: str | None = None
    epoch: int | None = None
    batch: int | None = None
    sequence: int | None = None
    samples_logged: int = 0
    batch_size: int | None = None
    dropped: dict[str, int] | None = None
    error: str | None = None


# Optional count fields of an entry.
_ENTRY_COUNTS = ("epoch", "batch", "sequence", "batch_size")


def encode_index_entry(
    *,
    writer: str,
    step: int,
    pack: bytes,
    record: dict[str, Any],
) -> bytes:
    """The JSON of a step's index entry (docs/format.md, "Index entry").

    `record` is the step's batch record: the entry repeats the few fields a step
    listing shows, so listing never opens a pack.
    """
    entry: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "writer": writer,
        "step": step,
        "pack_bytes": len(pack),
        "pack_crc32": zlib.crc32(pack),
    }
    for name in ("wall_time", "mode", *_ENTRY_COUNTS, "samples_logged"):
        if record.get(name) is not None:
            entry[name] = record[name]
    dropped = record.get("dropped")
    if isinstance(dropped, dict) and any(dropped.values()):
        entry["dropped"] = (
            dropped  # only when something was dropped: entries stay small
        )
    return json.dumps(entry, separators=(",", ":"), allow_nan=False).encode("utf-8")


def check_index_entry(data: Any, step: int) -> IndexEntry:
    """Checks the index entry logged at `step` (an event's step, trusted).

    Required: `format_version` (3 to `FORMAT_VERSION`), `writer` (16 hex digits), `step`
    (equal to the event's), `pack_bytes` and `pack_crc32`; without them the entry is
    broken (`error`). Optional fields of the wrong type or range are left out.
    """
    parsed, problem = _parse_entry(data)
    if problem is not None:
        return IndexEntry(step=step, error=problem)
    version = parsed.get("format_version")
    if type(version) is not int or version < 3:
        return IndexEntry(step=step, error="index entry without a format_version >= 3")
    if version > FORMAT_VERSION:
        return IndexEntry(
            step=step,
            error=f"index entry of format version {version}, newer than this reader "
            f"({FORMAT_VERSION}); upgrade tb-batch-images",
        )
    writer = parsed.get("writer")
    if not isinstance(writer, str) or not WRITER_ID.fullmatch(writer):
        return IndexEntry(step=step, error="index entry without a valid writer id")
    if parsed.get("step") != step or type(parsed.get("step")) is not int:
        return IndexEntry(
            step=step, error=f"index entry names step {parsed.get('step')!r}"
        )
    pack_bytes, crc = parsed.get("pack_bytes"), parsed.get("pack_crc32")
    if type(pack_bytes) is not int or not _HEAD.size <= pack_bytes <= MAX_PACK_BYTES:
        return IndexEntry(step=step, error="index entry without a valid pack_bytes")
    if type(crc) is not int or not 0 <= crc < 2**32:
        return IndexEntry(step=step, error="index entry without a valid pack_crc32")
    counts = {name: _count_or_none(parsed.get(name)) for name in _ENTRY_COUNTS}
    samples = _count_or_none(parsed.get("samples_logged"))
    mode = parsed.get("mode")
    return IndexEntry(
        step=step,
        writer=sys.intern(writer),
        pack_bytes=pack_bytes,
        pack_crc32=crc,
        wall_time=_wall_time_or_none(parsed.get("wall_time")),
        mode=mode if mode in MODES else None,
        samples_logged=min(samples or 0, MAX_SAMPLES),
        dropped=_counts_or_none(parsed.get("dropped")),
        **counts,
    )


def _parse_entry(data: Any) -> tuple[dict[str, Any], str | None]:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if not isinstance(data, bytes):
        return {}, f"index entry is not a string ({type(data).__name__})"
    if len(data) > MAX_ENTRY_BYTES:
        return {}, f"index entry of {len(data)} bytes is over the limit"
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        return {}, f"index entry is not JSON ({error})"
    if not isinstance(parsed, dict):
        return {}, "index entry is not a JSON object"
    return parsed, None


def _count_or_none(value: Any) -> int | None:
    if type(value) is not int or not 0 <= value <= MAX_SAFE_INTEGER:
        return None
    return value


def _wall_time_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or not 0 <= value <= MAX_WALL_TIME:
        return None
    return float(value)


def _counts_or_none(value: Any) -> dict[str, int] | None:
    if not isinstance(value, dict):
        return None
    counts = {
        str(key)[:_MAX_COUNTER_NAME]: count
        for key, count in list(value.items())[:MAX_COUNTERS]
        if _count_or_none(count) is not None
    }
    return counts or None
