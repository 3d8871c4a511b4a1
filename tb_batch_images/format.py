"""The on-disk format of tb-batch-images: the single source of truth.

Writer (`tb_batch_images.writer`) and readers (`tb_batch_images.reader`, the
TensorBoard plugin) share only what is in this module. The format is described
for humans in ``docs/format.md``; change both together, and bump
``FORMAT_VERSION`` when a change is not backwards compatible.

Each logged step is one TensorBoard summary value whose tensor is a rank-1
string tensor: element 0 is a UTF-8 JSON record (see ``docs/format.md``),
elements 1..n are the encoded images of the n samples, in record order, and
(version 2) any mask images after them, named by index in the samples.
"""

from __future__ import annotations

import json
from typing import Any

from tensorboard.compat.proto import summary_pb2

PLUGIN_NAME = "batch_images"
FORMAT_VERSION = 2  # 2: masks of dense outputs (elements after the images)

# Tags written by the logger. Batches of images live under BATCHES_TAG; the
# logger's own health (what it dropped and why) lives under STATUS_TAG.
BATCHES_TAG = "batch_images"
STATUS_TAG = "batch_images_status"
# Every sample's training dynamics, once per epoch (train run only).
SAMPLE_STATS_TAG = "batch_images_sample_stats"
# Pictures of the watchlist (the last epoch's top suspects), captured the next time
# they appear in a training batch: batch records of their own tag and kind.
WATCHLIST_TAG = "batch_images_watchlist"

KIND_BATCHES = "batches"
KIND_STATUS = "status"
KIND_SAMPLE_STATS = "sample_stats"
KIND_WATCHLIST = "watchlist"
# Kinds whose values are batch records (element 0) followed by images.
BATCH_RECORD_KINDS = (KIND_BATCHES, KIND_WATCHLIST)
SAMPLE_STATS_VERSION = 1

# The columns of a sample-stats value, in order (float32, one row per sample id).
SAMPLE_STATS_COLUMNS = (
    "count",
    "confidence",
    "variability",
    "correct",
    "margin",
    "forgetting",
    "last_loss",
    "last_correct",
    "label",
    "predicted_instead",
    "suspect_score",
)

# Sub-directories of the user's log_dir, the same as keras.callbacks.TensorBoard.
MODE_DIRS = {"train": "train", "validation": "validation"}

# Keys of the ``x`` dict that carry metadata; stripped before the model sees x.
FILENAME_KEY = "filename"
SAMPLE_ID_KEY = "sample_id"
METADATA_KEYS = (FILENAME_KEY, SAMPLE_ID_KEY)

# Per-sample flags, documented in docs/format.md.
FLAG_NAN = "nan"
FLAG_INF = "inf"
FLAG_CONSTANT = "constant"
FLAG_CLIPPED = "clipped"
FLAG_RESCALED = "rescaled"
FLAG_LABEL_OUT_OF_RANGE = "label_out_of_range"
FLAGS = (
    FLAG_NAN,
    FLAG_INF,
    FLAG_CONSTANT,
    FLAG_CLIPPED,
    FLAG_RESCALED,
    FLAG_LABEL_OUT_OF_RANGE,
)

# How a record's masks read (docs/format.md, "masks"): class maps, one sigmoid
# channel, or dense values (depth, heatmaps).
MASK_KINDS = ("classes", "binary", "values")

IMAGE_MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def summary_metadata(kind: str) -> summary_pb2.SummaryMetadata:
    """SummaryMetadata for a value of the given kind (batches or status)."""
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = PLUGIN_NAME
    metadata.plugin_data.content = json.dumps(
        {"version": FORMAT_VERSION, "kind": kind}
    ).encode("utf-8")
    # Without an explicit data class the Rust data server drops the data.
    metadata.data_class = summary_pb2.DATA_CLASS_BLOB_SEQUENCE
    return metadata


def parse_plugin_content(content: bytes) -> dict[str, Any]:
    """Parses SummaryMetadata.plugin_data.content; tolerant of garbage."""
    try:
        parsed = json.loads(content.decode("utf-8")) if content else {}
    except (UnicodeDecodeError, ValueError):
        parsed = {}
    if not isinstance(parsed, dict):
        parsed = {}
    parsed.setdefault("version", 0)
    parsed.setdefault("kind", KIND_BATCHES)
    return parsed


def encode_record(record: dict[str, Any]) -> bytes:
    """Serialises a batch or status record (element 0 of the tensor)."""
    record = dict(record)
    record["format_version"] = FORMAT_VERSION
    return json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")


def decode_record(data: bytes) -> dict[str, Any]:
    """Parses element 0 of a logged tensor, unchecked; raises ValueError on bad data.

    Readers use `tb_batch_images.validate`, which checks the record against the schema.
    """
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"not a tb-batch-images record: {error}") from None
    if not isinstance(record, dict):
        raise ValueError("not a tb-batch-images record: not a JSON object")
    version = record.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"record format version {version!r} is newer than this reader "
            f"({FORMAT_VERSION}); upgrade tb-batch-images"
        )
    return record


def image_mime_type(record: dict[str, Any]) -> str:
    """The MIME type of the images of a batch record."""
    return IMAGE_MIME_TYPES.get(record.get("image_format", "png"), "image/png")
