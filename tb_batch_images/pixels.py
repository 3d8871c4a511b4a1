"""Turning captured model inputs into displayable uint8 pixels, and encoding them.

Runs on the background writer thread. Inputs arrive as [n, h, w, c] arrays in the dtype
the model received (or float32 when they were downscaled in the graph), with per-sample
statistics computed in the graph on the full-size input: finite min, finite max, whether
the sample held NaN, whether it held +-Inf.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

from tb_batch_images import format as fmt

# The ranges recognised automatically, tried in this order.
KNOWN_FLOAT_RANGES = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0))


def choose_value_range(
    dtype: str, image_stats: np.ndarray
) -> tuple[float, float] | None:
    """The input range that maps to 0..255 for a batch, or None if none fits.

    uint8 is always 0..255. Floats are matched on the whole batch's finite min/max
    against [0, 1], [-1, 1] and [0, 255], the first that holds every sample (any
    other dtype likewise).
    """
    if dtype == "uint8":
        return (0.0, 255.0)
    finite_min = image_stats[:, 0]
    finite_max = image_stats[:, 1]
    valid = np.isfinite(finite_min) & np.isfinite(finite_max)
    if not valid.any():
        return (0.0, 1.0)
    lo, hi = float(finite_min[valid].min()), float(finite_max[valid].max())
    for range_lo, range_hi in KNOWN_FLOAT_RANGES:
        if lo >= range_lo and hi <= range_hi:
            return (range_lo, range_hi)
    return None


def to_uint8(
    images: np.ndarray,
    image_stats: np.ndarray,
    dtype: str,
    value_range: tuple[float, float] | None,
    to_pixels: Callable[[np.ndarray], np.ndarray] | None,
) -> tuple[np.ndarray, list[list[str]], tuple[float, float] | None]:
    """Maps a batch to uint8 [n, h, w, c] with per-sample flags.

    Returns (pixels, flags per sample, the range used or None).
    """
    count = images.shape[0]
    flags: list[list[str]] = [[] for _ in range(count)]
    for i in range(count):
        finite_min, finite_max, has_nan, has_inf = image_stats[i]
        if has_nan:
            flags[i].append(fmt.FLAG_NAN)
        if has_inf:
            flags[i].append(fmt.FLAG_INF)
        if finite_min == finite_max or not np.isfinite(finite_min):
            flags[i].append(fmt.FLAG_CONSTANT)

    values = np.asarray(images)
    if to_pixels is not None:
        pixels = np.asarray(to_pixels(values.copy()))
        if pixels.ndim not in (3, 4) or pixels.shape[0] != count:
            raise ValueError(
                f"to_pixels must return [n, h, w] or [n, h, w, c] pixels; it "
                f"returned shape {pixels.shape} for input shape {values.shape}"
            )
        if pixels.ndim == 3:
            pixels = pixels[..., None]
        if pixels.dtype != np.uint8:
            pixels = np.clip(np.nan_to_num(pixels.astype(np.float32)), 0, 255)
            pixels = np.round(pixels).astype(np.uint8)
        return pixels, flags, None

    used_range = value_range or choose_value_range(dtype, image_stats)
    if values.dtype == np.uint8 and used_range == (0.0, 255.0):
        return values, flags, used_range  # already pixels: nothing to compute
    values = values.astype(np.float32, copy=False)
    if image_stats[:, 2:].any():  # NaN or Inf somewhere: NaN shows as 0
        values = np.nan_to_num(values, nan=0.0)
    if used_range is None:
        # Matches no known range (e.g. mean/std normalised): stretch per sample.
        scaled = np.empty_like(values)
        for i in range(count):
            finite = values[i][np.isfinite(values[i])]
            lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
            sample = np.clip(values[i], lo, hi)
            scaled[i] = (sample - lo) / (hi - lo) if hi > lo else 0.0
            flags[i].append(fmt.FLAG_RESCALED)
        return _float_to_uint8(scaled), flags, None

    lo, hi = used_range
    for i in range(count):
        finite_min, finite_max = image_stats[i][0], image_stats[i][1]
        if np.isfinite(finite_min) and (finite_min < lo or finite_max > hi):
            flags[i].append(fmt.FLAG_CLIPPED)
    scaled = np.clip(values, lo, hi)
    scaled -= lo
    scaled *= 255.0 / (hi - lo)
    scaled += 0.5  # round half up, then truncate
    return scaled.astype(np.uint8), flags, used_range


def _float_to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def encode(
    pixels: np.ndarray, max_image_size: int, image_format: str, jpeg_quality: int = 90
) -> tuple[bytes, list[int]]:
    """Thumbnails one [h, w, c] uint8 image to max_image_size and encodes it.

    Returns (bytes, [height, width, channels] of the encoded image).
    """
    channels = pixels.shape[-1]
    if channels == 1:
        image = Image.fromarray(pixels[..., 0], mode="L")
    elif channels == 2:  # grey + alpha
        image = Image.fromarray(pixels, mode="LA")
    elif channels == 3:
        image = Image.fromarray(pixels, mode="RGB")
    elif channels == 4:
        image = Image.fromarray(pixels, mode="RGBA")
    else:  # more channels than a picture has: show the first three
        image = Image.fromarray(np.ascontiguousarray(pixels[..., :3]), mode="RGB")
    if max(image.size) > max_image_size:
        image.thumbnail((max_image_size, max_image_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if image_format == "jpeg":
        if image.mode in ("RGBA", "LA"):
            image = image.convert("RGB" if image.mode == "RGBA" else "L")
        image.save(buffer, format="JPEG", quality=jpeg_quality)
    else:
        image.save(buffer, format="PNG", compress_level=1)
    width, height = image.size
    return buffer.getvalue(), [height, width, len(image.getbands())]
