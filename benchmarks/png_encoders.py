"""PNG encoders for the writer thread: CPU per image, bytes, and how much they block
training's Python thread (the GIL).

For each encoder and image kind, encodes the same images many times and reports the
process CPU time per image and the mean encoded size. With `--gil-seconds S` (off by
default; only meaningful on an otherwise idle machine with a free core) it also runs the
encoder on a second thread, as the writer does, and reports how many iterations of a
pure-Python loop the main thread manages against the same loop alone: near 1.0 means the
encoder released the GIL while it worked, near 0.5 that it held it.

    .venv/bin/python -m benchmarks.png_encoders --images 16 --repeats 20

Encoders: `ours` (tb_batch_images.host.pixels.encode_png: numpy "up" filter + zlib level 1),
`ours_none` (same, filter "none"), `pillow_1` (Pillow, compress_level=1, what the
writer used before), `pillow_6` (Pillow's default), `tf_encode_png`
(`tf.io.encode_png`, default compression), and `opencv_1` (`cv2.imencode` with
IMWRITE_PNG_COMPRESSION=1) and `imagecodecs_1` (`imagecodecs.png_encode(level=1)`)
when they are importable.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tb_batch_images.host.pixels import encode_png  # noqa: E402


def images_of(kind: str, count: int, side: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    if kind == "noise":
        return list(rng.integers(0, 256, (count, side, side, 3), dtype=np.uint8))
    from demo.dataset import CLASSES, draw_shape

    drawn = [
        np.asarray(draw_shape(CLASSES[i % len(CLASSES)], rng)) for i in range(count)
    ]
    if drawn[0].shape[0] != side:
        drawn = [
            np.asarray(Image.fromarray(d).resize((side, side), Image.BILINEAR))
            for d in drawn
        ]
    return drawn


def _pillow(level: int):
    def encode(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=level)
        return buffer.getvalue()

    return encode


def encoders() -> dict:
    found = {
        "ours": encode_png,
        "ours_none": None,  # filled below
        "pillow_1": _pillow(1),
        "pillow_6": _pillow(6),
    }

    def ours_none(pixels: np.ndarray) -> bytes:
        import struct
        import zlib

        from tb_batch_images.host.pixels import _png_chunk

        h, w, c = pixels.shape
        rows = np.zeros((h, w * c + 1), np.uint8)
        rows[:, 1:] = pixels.reshape(h, w * c)
        header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        return b"".join(
            (
                b"\x89PNG\r\n\x1a\n",
                _png_chunk(b"IHDR", header),
                _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)),
                _png_chunk(b"IEND", b""),
            )
        )

    found["ours_none"] = ours_none
    try:
        import tensorflow as tf

        found["tf_encode_png"] = lambda pixels: tf.io.encode_png(pixels).numpy()
    except ImportError:
        pass
    try:
        import cv2

        params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
        found["opencv_1"] = lambda pixels: cv2.imencode(
            ".png", np.ascontiguousarray(pixels[..., ::-1]), params
        )[1].tobytes()
    except ImportError:
        pass
    try:
        import imagecodecs

        found["imagecodecs_1"] = lambda pixels: bytes(
            imagecodecs.png_encode(pixels, level=1)
        )
    except ImportError:
        pass
    return found


def cpu_per_image(encode, images, repeats: int) -> tuple[float, float]:
    encode(images[0])  # warm up
    start = time.process_time()
    sizes = 0
    for _ in range(repeats):
        for pixels in images:
            sizes += len(encode(pixels))
    cpu = time.process_time() - start
    count = repeats * len(images)
    return cpu / count * 1e3, sizes / count


def _spin(seconds: float) -> int:
    end = time.perf_counter() + seconds
    count = 0
    while time.perf_counter() < end:
        count += 1
    return count


def gil_share(encode, images, seconds: float) -> float:
    """Main thread's Python loop rate with the encoder busy on a thread / alone."""
    alone = _spin(seconds)
    stop = threading.Event()

    def work():
        while not stop.is_set():
            for pixels in images:
                encode(pixels)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    together = _spin(seconds)
    stop.set()
    thread.join()
    return together / alone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--gil-seconds", type=float, default=0.0)
    args = parser.parse_args()
    rows = []
    for kind, side in (("shapes", 64), ("noise", 64), ("shapes", 128), ("noise", 128)):
        images = images_of(kind, args.images, side)
        for name, encode in encoders().items():
            decoded = np.asarray(Image.open(io.BytesIO(encode(images[0]))))
            assert np.array_equal(decoded, images[0]), name
            ms, size = cpu_per_image(encode, images, args.repeats)
            share = (
                gil_share(encode, images, args.gil_seconds)
                if args.gil_seconds
                else None
            )
            rows.append(
                {
                    "images": f"{kind} {side}x{side}",
                    "encoder": name,
                    "cpu_ms_per_image": round(ms, 3),
                    "bytes": round(size),
                    "python_thread_rate": None if share is None else round(share, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print("| images | encoder | CPU ms / image | bytes | Python thread rate |")
    print("|---|---|---|---|---|")
    for row in rows:
        rate = row["python_thread_rate"]
        print(
            f"| {row['images']} | {row['encoder']} | {row['cpu_ms_per_image']} | "
            f"{row['bytes']} | {'' if rate is None else rate} |"
        )


if __name__ == "__main__":
    main()
