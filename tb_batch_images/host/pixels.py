"""Turning captured model inputs into displayable uint8 pixels, and encoding them.

Runs on the background writer thread. Inputs arrive as [n, h, w, c] arrays in the dtype
the model received (or float32 when they were downscaled in the graph), with per-sample
statistics computed in the graph on the full-size input: finite min, finite max, whether
the sample held NaN, whether it held +-Inf.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from tb_batch_images.contract import names

# The ranges recognised automatically, tried in this order.
KNOWN_FLOAT_RANGES = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0))
# Float round-off a range tolerates (a fraction of its width), e.g. x / 255 * 255
# ending at 255.00002 after undoing a Rescaling layer.
RANGE_TOLERANCE = 1e-4

# The modes of keras.applications.imagenet_utils.preprocess_input, undone for display.
PREPROCESSING_MODES = ("caffe", "torch", "tf")
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
TORCH_MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32)
TORCH_STD_RGB = np.array([0.229, 0.224, 0.225], np.float32)


def check_preprocessing(
    preprocessing: str | None,
    to_pixels: Callable | None,
    value_range: tuple[float, float] | None,
) -> None:
    """Raises ValueError for an unknown preset or one combined with to_pixels/value_range."""
    if preprocessing is None:
        return
    if preprocessing not in PREPROCESSING_MODES:
        raise ValueError(
            f"preprocessing must be one of {PREPROCESSING_MODES} (the modes of "
            f"keras.applications.imagenet_utils.preprocess_input) or None, got "
            f"{preprocessing!r}"
        )
    if to_pixels is not None or value_range is not None:
        given = "to_pixels=" if to_pixels is not None else "value_range="
        raise ValueError(
            f"pass either preprocessing={preprocessing!r} or {given}, not both: "
            f"preprocessing= already says how to turn the inputs into pixels. Drop "
            f"{given} or drop preprocessing="
        )


def preprocessing_problem(preprocessing: str, dtype: str, channels: int) -> str | None:
    """Why a preset cannot apply to inputs of this dtype and channel count, or None."""
    if not (dtype.startswith(("float", "bfloat"))):
        return (
            f"preprocessing={preprocessing!r} expects the float outputs of "
            f"preprocess_input, but the inputs are {dtype}; shown with the automatic "
            f"value range instead"
        )
    if preprocessing != "tf" and channels != 3:
        return (
            f"preprocessing={preprocessing!r} needs 3 colour channels, the inputs "
            f"have {channels}; shown with the automatic value range instead"
        )
    return None


def undo_preprocessing(preprocessing: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function from preprocess_input's outputs [n, h, w, c] back to RGB in 0..255.

    caffe: BGR with the ImageNet means subtracted; torch: /255, then the ImageNet mean
    and std per channel; tf: scaled to [-1, 1].
    """
    if preprocessing == "caffe":
        return lambda values: (values + CAFFE_MEAN_BGR)[..., ::-1]
    if preprocessing == "torch":
        return lambda values: (values * TORCH_STD_RGB + TORCH_MEAN_RGB) * 255.0
    if preprocessing == "tf":
        return lambda values: (values + 1.0) * 127.5
    raise ValueError(f"unknown preprocessing {preprocessing!r}")


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
        slack = RANGE_TOLERANCE * (range_hi - range_lo)
        if lo >= range_lo - slack and hi <= range_hi + slack:
            return (range_lo, range_hi)
    return None


def to_uint8(
    images: np.ndarray,
    image_stats: np.ndarray,
    dtype: str,
    value_range: tuple[float, float] | None,
    to_pixels: Callable[[np.ndarray], np.ndarray] | None,
    undo: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, list[list[str]], tuple[float, float] | None]:
    """Maps a batch to uint8 [n, h, w, c] with per-sample flags.

    `undo`, when given, maps the values back to the units of the original input
    first (a preprocessing preset, or the Rescaling/Normalization layers the picture
    went through); the range is then chosen on the undone values.

    Returns (pixels, flags per sample, the range used or None).
    """
    count = images.shape[0]
    flags: list[list[str]] = [[] for _ in range(count)]
    for i in range(count):
        finite_min, finite_max, has_nan, has_inf = image_stats[i]
        if has_nan:
            flags[i].append(names.FLAG_NAN)
        if has_inf:
            flags[i].append(names.FLAG_INF)
        if finite_min == finite_max or not np.isfinite(finite_min):
            flags[i].append(names.FLAG_CONSTANT)

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

    if undo is not None:
        values = undo(np.nan_to_num(values.astype(np.float32), nan=0.0))
        values = np.ascontiguousarray(values, np.float32)
        image_stats = _stats_of(values, image_stats)
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
            flags[i].append(names.FLAG_RESCALED)
        return _float_to_uint8(scaled), flags, None

    lo, hi = used_range
    slack = RANGE_TOLERANCE * (hi - lo)
    for i in range(count):
        finite_min, finite_max = image_stats[i][0], image_stats[i][1]
        if np.isfinite(finite_min) and (
            finite_min < lo - slack or finite_max > hi + slack
        ):
            flags[i].append(names.FLAG_CLIPPED)
    scaled = np.clip(values, lo, hi)
    scaled -= lo
    scaled *= 255.0 / (hi - lo)
    scaled += 0.5  # round half up, then truncate
    return scaled.astype(np.uint8), flags, used_range


def _stats_of(values: np.ndarray, image_stats: np.ndarray) -> np.ndarray:
    """Per-sample finite min/max of `values`; the NaN/Inf columns kept."""
    stats = np.array(image_stats, np.float32, copy=True)
    flat = values.reshape(values.shape[0], -1)
    finite = np.isfinite(flat)
    stats[:, 0] = np.where(finite, flat, np.inf).min(axis=1)
    stats[:, 1] = np.where(finite, flat, -np.inf).max(axis=1)
    return stats


def _float_to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


def encode(
    pixels: np.ndarray, max_image_size: int, image_format: str, jpeg_quality: int = 90
) -> tuple[bytes, list[int]]:
    """Thumbnails one [h, w, c] uint8 image to max_image_size and encodes it.

    PNG is written by `encode_png` (numpy + zlib, faster than Pillow's encoder and
    releasing the GIL while it compresses); JPEG and thumbnailing use Pillow.
    Returns (bytes, [height, width, channels] of the encoded image).
    """
    channels = pixels.shape[-1]
    if channels > 4:  # more channels than a picture has: show the first three
        pixels = pixels[..., :3]
    height, width = pixels.shape[0], pixels.shape[1]
    if image_format != "jpeg" and max(height, width) <= max_image_size:
        encoded = encode_png(pixels)
        return encoded, [height, width, pixels.shape[-1]]
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[-1]]
    image = Image.fromarray(
        np.ascontiguousarray(pixels[..., 0] if mode == "L" else pixels), mode=mode
    )
    if max(image.size) > max_image_size:
        image.thumbnail((max_image_size, max_image_size), Image.Resampling.LANCZOS)
    if image_format == "jpeg":
        if image.mode in ("RGBA", "LA"):
            image = image.convert("RGB" if image.mode == "RGBA" else "L")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=jpeg_quality)
        encoded = buffer.getvalue()
    else:
        encoded = encode_png(np.asarray(image).reshape(image.height, image.width, -1))
    width, height = image.size
    return encoded, [height, width, len(image.getbands())]


# PNG colour types by channel count: grey, grey + alpha, RGB, RGBA (8 bits each).
_PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# zlib level 1: measured in benchmarks/README.md ("PNG encoders") against Pillow's
# default (6), tf.io.encode_png and OpenCV; files 5-15% larger than level 6.
PNG_COMPRESS_LEVEL = 1


def encode_png(pixels: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """A standard 8-bit PNG of one [h, w, c] uint8 image (c in 1..4), without Pillow.

    Every row uses the "up" filter (the difference to the row above; the first row
    stays as it is): one vectorised numpy subtraction that gives zlib longer runs on
    photos and drawn shapes. `zlib.compress` releases the GIL, so training's Python
    thread runs while the writer compresses.
    """
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    height, width, channels = pixels.shape
    rows = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(
        height, width * channels
    )
    filtered = np.empty((height, width * channels + 1), np.uint8)
    filtered[:, 0] = 2  # filter type "up"
    filtered[0, 0] = 0  # the first row has no row above: filter "none"
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # wraps modulo 256
    header = struct.pack(
        ">IIBBBBB", width, height, 8, _PNG_COLOUR_TYPES[channels], 0, 0, 0
    )
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), compress_level)),
            _png_chunk(b"IEND", b""),
        )
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return b"".join(
        (
            struct.pack(">I", len(data)),
            kind,
            data,
            struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))),
        )
    )
