"""Opaque image keys: a step's content named by (run, tag, step, wall time, index)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

_MAX_KEY_CHARS = 4096


# -- opaque image keys ---------------------------------------------------------
def image_key(run: str, tag: str, ref: Any, index: int) -> str:
    """An opaque, URL-safe key for image `index` of a step.

    `ref` is the step's `store.StepRef`. The key names the step's content (run, tag, step and the event's wall time), so the
    bytes behind a key never change and may be cached forever.
    """
    payload = json.dumps([run, tag, ref.step, ref.wall_time, index], ensure_ascii=False)
    return base64.urlsafe_b64encode(payload.encode("utf-8")).decode("ascii").rstrip("=")


def parse_image_key(key: str) -> tuple[str, str, int, float, int]:
    """(run, tag, step, wall_time, index) of an image key; ValueError if malformed."""
    if not key or len(key) > _MAX_KEY_CHARS:
        raise ValueError("bad length")
    try:
        payload = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
        run, tag, step, wall_time, index = json.loads(payload.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as error:
        raise ValueError(str(error)) from None
    if not (
        isinstance(run, str)
        and isinstance(tag, str)
        and _is_int(step)
        and isinstance(wall_time, int | float)
        and not isinstance(wall_time, bool)
        and _is_int(index)
    ):
        raise ValueError("bad fields")
    return run, tag, step, float(wall_time), index


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
