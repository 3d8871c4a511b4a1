"""Encoding and decoding of the summaries and records of the on-disk format.

Writer (`tb_batch_images.host.writer`) and readers (`tb_batch_images.reader`, the
TensorBoard plugin) share only what is in `tb_batch_images.contract`. The format is
described for humans in ``docs/format.md``; change both together, and bump
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

from tb_batch_images.contract.names import (
    FORMAT_VERSION,
    IMAGE_MIME_TYPES,
    PLUGIN_NAME,
    SERIES_BATCHES,
)


def summary_metadata(series_kind: str) -> summary_pb2.SummaryMetadata:
    """SummaryMetadata for a value of one series kind (`names.SERIES_*`)."""
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = PLUGIN_NAME
    metadata.plugin_data.content = json.dumps(
        {"version": FORMAT_VERSION, "kind": series_kind}
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
    parsed.setdefault("kind", SERIES_BATCHES)
    return parsed


def encode_record(record: dict[str, Any]) -> bytes:
    """Serialises a batch or status record (element 0 of the tensor)."""
    record = dict(record)
    record["format_version"] = FORMAT_VERSION
    return json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")


def decode_record(data: bytes) -> dict[str, Any]:
    """Parses element 0 of a logged tensor, unchecked; raises ValueError on bad data.

    Readers use `tb_batch_images.contract.schema`, which checks the record against the schema.
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
