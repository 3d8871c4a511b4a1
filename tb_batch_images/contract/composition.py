"""The composition value of the on-disk format (docs/format.md, "Composition").

Every training step's batch loss, trigger and sample ids, written in blocks of steps
under `COMPOSITION_TAG` (series kind `SERIES_COMPOSITION`), at the block's first step:

- element 0: a JSON header (`kind`, `composition_version`, `first_step`, `last_step`,
  `steps`, `width`, `has_ids`, `byte_order`);
- element 1: one packed little-endian row per step, `STEP_ROW` (int64 step, float32
  batch loss, NaN where unknown or not finite, uint8 trigger code: an index into
  `TRIGGER_CODES`);
- element 2: the sample ids, a little-endian int32 matrix `[steps, width]`, -1 where
  a batch had fewer samples than `width` (empty when the batches carried no ids);
- element 3: the logger's `filenames=` (a JSON list, indexed by sample id) in the
  first block of each fit (`has_filenames`), else empty.

The writer encodes (`encode_composition`), every reader decodes
(`decode_composition`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from tb_batch_images.contract.names import (
    COMPOSITION_VERSION,
    SERIES_COMPOSITION,
    TRIGGER_CODES,
)
from tb_batch_images.contract.records import decode_record, encode_record

STEP_ROW = np.dtype([("step", "<i8"), ("loss", "<f4"), ("trigger", "u1")])
# A block holds at most this many steps (the writer's blocks are smaller).
MAX_BLOCK_STEPS = 1_000_000
MAX_BLOCK_WIDTH = 1_000_000


@dataclasses.dataclass
class CompositionBlock:
    """The steps of one composition value: `steps`, `losses`, `triggers` (codes) of
    length n, `ids` `[n, width]` int32 (-1: no sample there) or None."""

    steps: np.ndarray
    losses: np.ndarray
    triggers: np.ndarray
    ids: np.ndarray | None
    filenames: list[str] | None = None

    def trigger_name(self, index: int) -> str | None:
        code = int(self.triggers[index])
        if 0 < code < len(TRIGGER_CODES):
            return TRIGGER_CODES[code]
        return None

    def sample_ids(self, index: int) -> list[int]:
        if self.ids is None:
            return []
        row = self.ids[index]
        return [int(i) for i in row[row >= 0]]


def encode_composition(
    steps: np.ndarray,
    losses: np.ndarray,
    triggers: np.ndarray,
    ids: np.ndarray | None,
    filenames: list[str] | None = None,
) -> list[bytes]:
    """The elements of one composition value (`ids`: `[n, width]`, -1 padded)."""
    n = len(steps)
    rows = np.zeros(n, STEP_ROW)
    rows["step"] = steps
    rows["loss"] = losses
    rows["trigger"] = triggers
    width = 0 if ids is None else int(ids.shape[1])
    header: dict[str, Any] = {
        "kind": SERIES_COMPOSITION,
        "composition_version": COMPOSITION_VERSION,
        "first_step": int(steps[0]) if n else 0,
        "last_step": int(steps[-1]) if n else 0,
        "steps": n,
        "width": width,
        "has_ids": ids is not None,
        "has_filenames": filenames is not None,
        "byte_order": "little",
        "trigger_codes": list(TRIGGER_CODES),
    }
    matrix = b"" if ids is None else np.asarray(ids, "<i4").tobytes()
    names = b""
    if filenames is not None:
        names = json.dumps([str(name) for name in filenames]).encode("utf-8")
    return [encode_record(header), rows.tobytes(), matrix, names]


def decode_header(element: bytes) -> dict[str, Any]:
    """Element 0, checked: a ValueError says why it cannot be used."""
    header = decode_record(element)
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    version = header.get("composition_version", 1)
    if not isinstance(version, int) or version > COMPOSITION_VERSION:
        raise ValueError(
            f"composition version {version!r} is newer than this reader "
            f"({COMPOSITION_VERSION}); upgrade tb-batch-images"
        )
    steps, width = header.get("steps"), header.get("width", 0)
    for name, value, high in (
        ("steps", steps, MAX_BLOCK_STEPS),
        ("width", width, MAX_BLOCK_WIDTH),
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} is not an integer")
        if not 0 <= value <= high:
            raise ValueError(f"{name} {value} is out of range")
    return header


def decode_rows(header: dict[str, Any], element: bytes) -> np.ndarray:
    """Element 1 as a `STEP_ROW` array (a ValueError if its size is wrong)."""
    n = header["steps"]
    if len(element) != n * STEP_ROW.itemsize:
        raise ValueError(
            f"{len(element)} bytes of steps, not {n * STEP_ROW.itemsize} ({n} steps)"
        )
    return np.frombuffer(element, STEP_ROW)


def decode_ids(header: dict[str, Any], element: bytes) -> np.ndarray | None:
    """Element 2 as `[steps, width]` int32, or None when the batches had no ids."""
    n, width = header["steps"], header.get("width", 0)
    if not element or not width:
        return None
    if len(element) != n * width * 4:
        raise ValueError(f"{len(element)} bytes of ids, not {n * width * 4}")
    return np.frombuffer(element, "<i4").reshape(n, width)


def decode_composition(elements: list[bytes]) -> CompositionBlock:
    """One composition value (its blob sequence) -> CompositionBlock."""
    if len(elements) < 2:
        raise ValueError(f"{len(elements)} elements, not 3")
    header = decode_header(elements[0])
    rows = decode_rows(header, elements[1])
    ids = decode_ids(header, elements[2]) if len(elements) > 2 else None
    filenames = None
    if header.get("has_filenames") and len(elements) > 3 and elements[3]:
        names = json.loads(elements[3])
        filenames = [str(name) for name in names] if isinstance(names, list) else None
    return CompositionBlock(
        steps=rows["step"].astype(np.int64),
        losses=rows["loss"].astype(np.float32),
        triggers=rows["trigger"].astype(np.uint8),
        ids=ids,
        filenames=filenames,
    )
