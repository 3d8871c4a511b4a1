"""The arguments of `BatchImageLogger`, checked once, and the parts each piece needs.

`LoggerOptions.checked(...)` raises a `ValueError` naming the argument and what it
accepts; the logger then hands each part its own view: the capture (`capture`), the
record builder (`record`), the data map (`data_map`) and the schedule (`schedule`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from tb_batch_images import contract
from tb_batch_images.capture.flight import TriggerSettings
from tb_batch_images.capture.options import SELECTIONS, CaptureOptions
from tb_batch_images.capture.schedule import Schedule
from tb_batch_images.host import pixels
from tb_batch_images.host.record import RecordOptions
from tb_batch_images.logger.data_map import DataMapSettings


@dataclasses.dataclass(frozen=True)
class LoggerOptions:
    """Every argument of `BatchImageLogger`, as checked (see its docstring)."""

    log_dir: str
    every_n_steps: int = 100
    log_steps: frozenset[int] | Callable[[int], bool] | None = None
    samples_per_batch: int = 16
    selection: str = "first"
    class_names: list[str] | None = None
    filenames: list[str] | None = None
    image_key: Any = None
    image_layer: str | bool | None = None
    output: str | None = None
    max_image_size: int = 256
    image_format: str = "png"
    value_range: tuple[float, float] | None = None
    to_pixels: Callable[[np.ndarray], np.ndarray] | None = None
    preprocessing: str | None = None
    log_validation: bool = True
    validation_batches: int = 1
    top_k: int = 5
    max_queue: int = 8
    sample_stats: bool | None = None
    num_samples: int | None = None
    watchlist: int = 32
    log_non_finite: bool = True
    log_spikes: bool = True
    spike_threshold: float = 6.0
    spike_warmup: int = 100
    trigger_cooldown: int = 100
    log_composition: bool = True
    bounding_box_format: str | None = None
    decode_predictions: Callable[[Any, Any], Any] | None = None

    @classmethod
    def checked(
        cls,
        log_dir: str,
        *,
        every_n_steps: int,
        log_steps: Iterable[int] | Callable[[int], bool] | None,
        samples_per_batch: int,
        selection: str,
        class_names: Sequence[str] | None,
        filenames: Sequence[str] | None,
        image_key: str | int | None,
        image_layer: str | bool | None,
        output: str | None,
        max_image_size: int,
        image_format: str,
        value_range: tuple[float, float] | None,
        to_pixels: Callable[[np.ndarray], np.ndarray] | None,
        preprocessing: str | None,
        log_validation: bool,
        validation_batches: int,
        top_k: int,
        max_queue: int,
        sample_stats: bool | None,
        num_samples: int | None,
        watchlist: int,
        log_non_finite: bool = True,
        log_spikes: bool = True,
        spike_threshold: float = 6.0,
        spike_warmup: int = 100,
        trigger_cooldown: int = 100,
        log_composition: bool = True,
        bounding_box_format: str | None = None,
        decode_predictions: Callable[[Any, Any], Any] | None = None,
    ) -> LoggerOptions:
        """The options, or a ValueError naming the argument and what it accepts."""
        if not isinstance(log_dir, str) or not log_dir:
            raise ValueError(
                f"log_dir must be a non-empty path string, got {log_dir!r}"
            )
        _check_int("every_n_steps", every_n_steps, minimum=0)
        _check_int("samples_per_batch", samples_per_batch, minimum=1)
        _check_int("max_image_size", max_image_size, minimum=1)
        _check_int("validation_batches", validation_batches, minimum=0)
        _check_int("top_k", top_k, minimum=1)
        _check_int("max_queue", max_queue, minimum=1)
        if num_samples is not None:
            _check_int("num_samples", num_samples, minimum=1)
        _check_int("watchlist", watchlist, minimum=0)
        if sample_stats not in (None, True, False):
            raise ValueError(
                f"sample_stats must be None, True or False, got {sample_stats!r}"
            )
        for name, value in (
            ("log_non_finite", log_non_finite),
            ("log_spikes", log_spikes),
            ("log_composition", log_composition),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, got {value!r}")
        if (
            isinstance(spike_threshold, bool)
            or not isinstance(spike_threshold, int | float)
            or not math.isfinite(spike_threshold)
            or spike_threshold <= 0
        ):
            raise ValueError(
                f"spike_threshold must be a number > 0 (running deviations above the "
                f"running mean), got {spike_threshold!r}"
            )
        _check_int("spike_warmup", spike_warmup, minimum=0)
        _check_int("trigger_cooldown", trigger_cooldown, minimum=1)
        _check_choice("selection", selection, SELECTIONS)
        _check_choice("image_format", image_format, contract.IMAGE_FORMATS)
        value_range = _checked_range(value_range)
        if to_pixels is not None and not callable(to_pixels):
            raise ValueError("to_pixels must be a function from floats to uint8 pixels")
        pixels.check_preprocessing(preprocessing, to_pixels, value_range)
        if image_layer is not None and image_layer is not False:
            if not isinstance(image_layer, str):
                raise ValueError(
                    f"image_layer must be a layer name, None (automatic) or False "
                    f"(show x), got {image_layer!r}"
                )
        if output is not None and not isinstance(output, str):
            raise ValueError(
                f"output must be the name of one of the model's outputs, or None "
                f"(automatic), got {output!r}"
            )
        bounding_box_format = _checked_box_format(bounding_box_format)
        if decode_predictions is not None and not callable(decode_predictions):
            raise ValueError(
                "decode_predictions must be a function (y_pred, images) -> "
                "{'boxes': [n, K, 4], 'labels': [n, K], 'confidence': [n, K]}, got "
                f"{decode_predictions!r}"
            )
        return cls(
            log_dir=log_dir,
            every_n_steps=every_n_steps,
            log_steps=_checked_steps(log_steps),
            samples_per_batch=samples_per_batch,
            selection=selection,
            class_names=None if class_names is None else [str(c) for c in class_names],
            filenames=None if filenames is None else list(filenames),
            image_key=image_key,
            image_layer=image_layer,
            output=output,
            max_image_size=max_image_size,
            image_format=image_format,
            value_range=value_range,
            to_pixels=to_pixels,
            preprocessing=preprocessing,
            log_validation=log_validation,
            validation_batches=validation_batches,
            top_k=top_k,
            max_queue=max_queue,
            sample_stats=sample_stats,
            num_samples=num_samples,
            watchlist=watchlist,
            bounding_box_format=bounding_box_format,
            decode_predictions=decode_predictions,
            log_non_finite=log_non_finite,
            log_spikes=log_spikes,
            spike_threshold=float(spike_threshold),
            spike_warmup=spike_warmup,
            trigger_cooldown=trigger_cooldown,
            log_composition=log_composition,
        )

    # -- each piece's view ---------------------------------------------------------
    def triggers(self) -> TriggerSettings:
        return TriggerSettings(
            non_finite=self.log_non_finite,
            spike=self.log_spikes,
            threshold=self.spike_threshold,
            warmup=self.spike_warmup,
            cooldown=self.trigger_cooldown,
        )

    def capture(self) -> CaptureOptions:
        return CaptureOptions(
            samples_per_batch=self.samples_per_batch,
            selection=self.selection,
            image_key=self.image_key,
            image_layer=self.image_layer,
            output=self.output,
            max_image_size=self.max_image_size,
            bounding_box_format=self.bounding_box_format,
            decode_predictions=self.decode_predictions,
        )

    def record(self, backend: str) -> RecordOptions:
        return RecordOptions(
            selection=self.selection,
            class_names=self.class_names,
            filenames=self.filenames,
            max_image_size=self.max_image_size,
            image_format=self.image_format,
            value_range=self.value_range,
            to_pixels=self.to_pixels,
            top_k=self.top_k,
            backend=backend,
            preprocessing=self.preprocessing,
            spike_threshold=self.spike_threshold,
        )

    def data_map(self) -> DataMapSettings:
        return DataMapSettings(
            sample_stats=self.sample_stats,
            num_samples=self.num_samples,
            filenames=self.filenames,
            class_names=self.class_names,
            watchlist=self.watchlist,
            bounding_box_format=self.bounding_box_format,
        )

    def schedule(self) -> Schedule:
        return Schedule(self.every_n_steps, self.log_steps, self.validation_batches)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _checked_box_format(box_format: Any) -> str | None:
    """A box format of Keras's (`keras.utils.bounding_boxes`), case-insensitive."""
    if box_format is None:
        return None
    if isinstance(box_format, str) and box_format.lower() in contract.BOX_FORMATS:
        return box_format.lower()
    raise ValueError(
        f"bounding_box_format must be one of {contract.BOX_FORMATS} (the format "
        f"of the boxes in y, as Keras's layers take it), got {box_format!r}"
    )


def _checked_range(value_range: Any) -> tuple[float, float] | None:
    if value_range is None:
        return None
    low, high = (float(v) for v in value_range)
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(
            f"value_range must be (low, high) with low < high, got {value_range!r}"
        )
    return low, high


def _checked_steps(log_steps: Any) -> frozenset[int] | Callable | None:
    if log_steps is None or callable(log_steps):
        return log_steps
    try:
        return frozenset(int(s) for s in log_steps)
    except (TypeError, ValueError):
        raise ValueError(
            "log_steps must be an iterable of ints or a function step -> bool"
        ) from None
