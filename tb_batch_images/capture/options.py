"""What the capture was asked for: the `BatchImageLogger` arguments the step needs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

SELECTIONS = ("first", "random", "highest_loss")


@dataclasses.dataclass(frozen=True)
class CaptureOptions:
    """Which samples, which picture, which head; checked by the logger's options."""

    samples_per_batch: int = 16
    selection: str = "first"  # one of SELECTIONS
    image_key: Any = None  # a key (or index) of x; None: found automatically
    image_layer: str | bool | None = None  # a layer name; None: automatic; False: x
    output: str | None = None  # the logged head of a model with several outputs
    max_image_size: int = 256
    bounding_box_format: str | None = None  # one of names.BOX_FORMATS: y holds boxes
    decode_predictions: Callable | None = None  # (y_pred, images) -> predicted boxes
