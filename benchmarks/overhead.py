"""Training overhead of BatchImageLogger: fit() wall time with and without it.

A CNN over 64x64x3 images (the demo's drawn shapes, or `--images noise`), batch 64,
tf.data from memory. Each round trains one fresh
model per configuration (same seed, so tracing is paid by every configuration alike),
interleaved in one process; the script reports the median of the per-round ratios.

    .venv/bin/python -m benchmarks.overhead --rounds 5 --epochs 5

Configurations: `baseline` (no logger), `default` (BatchImageLogger with its
defaults), `every_batch_16` (16 images of every batch).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from demo.dataset import CLASSES as CLASS_SHAPES  # noqa: E402
from demo.dataset import draw_shape  # noqa: E402
from tb_batch_images import BatchImageLogger, read_batches  # noqa: E402

IMAGE = (64, 64, 3)
BATCH = 64
CLASSES = 10


def make_images(samples: int, kind: str) -> np.ndarray:
    """`shapes`: the demo's drawn shapes on noisy backgrounds (photo-like for PNG);
    `noise`: uniform noise, the worst case for PNG encoding."""
    rng = np.random.default_rng(0)
    if kind == "noise":
        return rng.uniform(0, 1, (samples, *IMAGE)).astype("float32")
    shapes = [
        np.asarray(draw_shape(CLASS_SHAPES[i % len(CLASS_SHAPES)], rng))
        for i in range(samples)
    ]
    return np.stack(shapes).astype("float32") / 255.0


def dataset(images: np.ndarray, with_filenames: bool) -> tf.data.Dataset:
    """The baseline trains on plain images; the logger runs also carry filenames."""
    samples = len(images)
    rng = np.random.default_rng(1)
    names = np.array([f"img_{i:05d}.png" for i in range(samples)], dtype=object)
    labels = rng.integers(0, CLASSES, samples)
    x = {"image": images, "filename": names} if with_filenames else images
    data = tf.data.Dataset.from_tensor_slices((x, labels))
    return data.shuffle(samples, seed=0).batch(BATCH).prefetch(tf.data.AUTOTUNE)


def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [
            keras.Input(IMAGE),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    net.compile("adam", "sparse_categorical_crossentropy", jit_compile=False)
    return net


def timed_fit(data, epochs: int, logger: BatchImageLogger | None) -> float:
    net = model()
    gc.collect()  # the previous round's models are freed here, outside the timing
    start = time.perf_counter()
    net.fit(data, epochs=epochs, verbose=0, callbacks=[logger] if logger else [])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1280)
    parser.add_argument("--images", choices=("shapes", "noise"), default="shapes")
    args = parser.parse_args()

    images = make_images(args.samples, args.images)
    plain, named = dataset(images, False), dataset(images, True)
    logdir = tempfile.mkdtemp(prefix="tbbi_overhead_")
    configs = {
        "baseline": lambda run: None,
        "default": lambda run: BatchImageLogger(f"{logdir}/default_{run}"),
        "every_batch_16": lambda run: BatchImageLogger(
            f"{logdir}/every_batch_16_{run}", every_n_steps=1, samples_per_batch=16
        ),
    }
    timed_fit(plain, 1, None)  # warm up TensorFlow and the input pipelines
    timed_fit(named, 1, configs["default"]("warmup"))
    times: dict[str, list[float]] = {name: [] for name in configs}
    logged: dict[str, list[int]] = {name: [] for name in configs if name != "baseline"}
    for round_index in range(args.rounds):
        for name, make_logger in configs.items():
            data = plain if name == "baseline" else named
            times[name].append(timed_fit(data, args.epochs, make_logger(round_index)))
            if name in logged:  # what was written, counted outside the timing
                run_dir = f"{logdir}/{name}_{round_index}"
                logged[name].append(len(list(read_batches(run_dir))))
        print(
            f"round {round_index + 1}: "
            + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()),
            flush=True,
        )
    shutil.rmtree(logdir, ignore_errors=True)
    steps = args.epochs * -(-args.samples // BATCH)
    result = {"steps_per_fit": steps, "rounds": args.rounds, "images": args.images}
    for name in configs:
        result[f"{name}_median_s"] = round(statistics.median(times[name]), 3)
        if name != "baseline":
            ratios = [
                t / b for t, b in zip(times[name], times["baseline"], strict=True)
            ]
            result[f"{name}_ratio_median"] = round(statistics.median(ratios), 3)
            result[f"{name}_batches_written"] = logged[name]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
