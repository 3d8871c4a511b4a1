"""What logging boxes costs: a detector's training steps, pictures alone vs with boxes.

A small detector (the CNN of `benchmarks/overhead.py` over 64x64x3 pictures, with a
head of 50 boxes and 50 class scores), batch 64, tf.data from memory; `y` is
`{"boxes": [64, 50, 4], "labels": [64, 50]}` in xyxy pixels, each picture with 1 to
50 boxes (label -1 after them). Configurations, each a fresh model (same seed) per
round, in an order shuffled per round, all in one process:

- `baseline`: no logger;
- `pictures`: BatchImageLogger(every_n_steps=10, samples_per_batch=16) without
  `bounding_box_format`: the pictures alone (y's boxes unread, one warning);
- `boxes`: the same with `bounding_box_format="xyxy"`: each logged sample's label
  boxes copied in the step, converted, checked and written with the pictures;
- `boxes_predicted` (with `--predicted`): also `decode_predictions=`, the model's
  50 boxes per sample decoded in the step and matched with the labels.

Per-step intervals as `benchmarks/overhead.py` measures them (`on_train_batch_begin`
to the next, after the first epoch); the target compares `boxes` with `pictures` in
the same round: the mean interval (every 10th step logs, so the median step does not
see it) and the process CPU per step.

    .venv/bin/python -m benchmarks.boxes_overhead --rounds 7 --epochs 3
    .venv/bin/python -m benchmarks.boxes_overhead --parts   # the boxes' work apart
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.overhead import StepTimer, fit_stats, make_images  # noqa: E402
from tb_batch_images import BatchImageLogger  # noqa: E402

BATCH = 64
BOXES = 50
CLASSES = 5
SIDE = 64


def detection_data(samples: int) -> tf.data.Dataset:
    images = make_images(samples, "shapes", SIDE)
    rng = np.random.default_rng(2)
    boxes = np.zeros((samples, BOXES, 4), "float32")
    labels = np.full((samples, BOXES), -1, "int32")
    for i in range(samples):
        count = int(rng.integers(1, BOXES + 1))
        corner = rng.uniform(0, SIDE - 8, (count, 2))
        size = rng.uniform(4, 24, (count, 2))
        boxes[i, :count] = np.concatenate([corner, np.minimum(corner + size, SIDE)], 1)
        labels[i, :count] = rng.integers(0, CLASSES, count)
    data = tf.data.Dataset.from_tensor_slices(
        (
            {"image": images, "sample_id": np.arange(samples)},
            {"boxes": boxes, "labels": labels},
        )
    )
    return data.shuffle(samples, seed=0).batch(BATCH).prefetch(tf.data.AUTOTUNE)


def detector() -> keras.Model:
    keras.utils.set_random_seed(0)
    image = keras.Input((SIDE, SIDE, 3), name="image")
    x = keras.layers.Conv2D(32, 3, activation="relu")(image)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    boxes = keras.layers.Reshape((BOXES, 4), name="boxes")(
        keras.layers.Dense(BOXES * 4)(x)
    )
    scores = keras.layers.Reshape((BOXES, CLASSES))(
        keras.layers.Dense(BOXES * CLASSES)(x)
    )
    model = keras.Model(
        image, {"boxes": boxes, "labels": keras.layers.Softmax(name="labels")(scores)}
    )
    model.compile(
        "adam",
        loss={
            "boxes": "mse",
            "labels": keras.losses.SparseCategoricalCrossentropy(ignore_class=-1),
        },
    )
    return model


def decode(y_pred, images):
    scores = y_pred["labels"]
    return {
        "boxes": y_pred["boxes"],
        "labels": keras.ops.argmax(scores, axis=-1),
        "confidence": keras.ops.max(scores, axis=-1),
    }


def callbacks_for(name: str, run_dir: str) -> list:
    if name == "baseline":
        return []
    options = {"every_n_steps": 10, "samples_per_batch": 16, "sample_stats": False}
    if name in ("boxes", "boxes_predicted"):
        options["bounding_box_format"] = "xyxy"
    if name == "boxes_predicted":
        options["decode_predictions"] = decode
    return [BatchImageLogger(run_dir, **options)]


def timed_fit(name: str, data, epochs: int, run_dir: str) -> dict[str, float]:
    net = detector()
    timer = StepTimer()
    callbacks = [timer, *callbacks_for(name, run_dir)]
    gc.collect()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # `pictures`: the one warning about y's boxes
        net.fit(data, epochs=epochs, verbose=0, callbacks=callbacks)
    return fit_stats(timer, time.perf_counter() - start)


def parts(repeats: int = 200) -> dict[str, float]:
    """The boxes' own work, timed apart (process CPU, median of `repeats`): the copy
    in the step (`BoxCapture.take` on 16 of 64 samples, a tf.function as the
    compiled step runs it) and the host's per-batch work (convert, check, match
    16 samples of 50 label boxes and 50 predicted ones; the format's fit)."""
    from tb_batch_images.capture.boxes import BoxCapture, Decoder
    from tb_batch_images.host import boxes as host_boxes

    rng = np.random.default_rng(0)
    y = {
        "boxes": tf.constant(rng.uniform(0, SIDE, (BATCH, BOXES, 4)), tf.float32),
        "labels": tf.constant(rng.integers(-1, CLASSES, (BATCH, BOXES)), tf.float32),
    }
    y_pred = {
        "boxes": tf.constant(rng.uniform(0, SIDE, (BATCH, BOXES, 4)), tf.float32),
        "labels": tf.constant(rng.uniform(0, 1, (BATCH, BOXES, CLASSES)), tf.float32),
    }
    images = tf.zeros((16, SIDE, SIDE, 3))
    index = tf.range(16)

    def timed(function) -> float:
        values = []
        for _ in range(repeats):
            start = time.process_time()
            function()
            values.append(time.process_time() - start)
        return 1e3 * statistics.median(values)

    out = {}
    for name, decoder in (
        ("step_copy_ms", None),
        ("step_copy_decoded_ms", Decoder(decode, "xyxy", "decode_predictions")),
    ):
        capture = BoxCapture("xyxy", decoder)
        step = tf.function(lambda c=capture: c.take(y, y_pred, images, index))
        step()  # traced
        out[name] = timed(step)
    arrays = {k: v.numpy()[:16] for k, v in y.items()}
    pixels = (rng.random((16, SIDE, SIDE, 3)) * 255).astype(np.uint8)
    raw = np.where(arrays["labels"][..., None] >= 0, arrays["boxes"], 0)

    def host(with_predictions: bool) -> None:
        for i in range(16):
            prediction = (
                (raw[i], arrays["labels"][i], np.ones(BOXES), BOXES, "xyxy")
                if with_predictions
                else None
            )
            host_boxes.describe(
                raw[i],
                arrays["labels"][i],
                BOXES,
                "xyxy",
                (SIDE, SIDE),
                (SIDE, SIDE),
                pixels[i],
                CLASSES,
                prediction,
            )
        host_boxes.format_problem(
            [host_boxes.kept(raw[i], arrays["labels"][i])[0] for i in range(16)],
            "xyxy",
            [(SIDE, SIDE)] * 16,
        )

    out["host_batch_ms"] = timed(lambda: host(False))
    out["host_batch_predicted_ms"] = timed(lambda: host(True))
    return out


def _spread(values: list[float], digits: int = 3) -> str:
    return (
        f"{statistics.median(values):.{digits}f} "
        f"[{min(values):.{digits}f}..{max(values):.{digits}f}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1280)
    parser.add_argument("--predicted", action="store_true")
    parser.add_argument("--json", help="also write the summary to this file")
    parser.add_argument(
        "--parts", action="store_true", help="only time the boxes' own work, apart"
    )
    args = parser.parse_args()
    if args.parts:
        print(json.dumps(parts(), indent=2))
        return
    names = ["baseline", "pictures", "boxes"] + (
        ["boxes_predicted"] if args.predicted else []
    )
    data = detection_data(args.samples)
    logdir = tempfile.mkdtemp(prefix="tbbi_boxes_")
    for name in names:  # warm-up
        timed_fit(name, data, 1, f"{logdir}/warmup_{name}")
    results: dict[str, list[dict]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[:]
        random.Random(round_index).shuffle(order)
        for name in order:
            results[name].append(
                timed_fit(name, data, args.epochs, f"{logdir}/{name}_{round_index}")
            )
        print(
            f"round {round_index + 1} (load {os.getloadavg()[0]:.1f}): "
            + ", ".join(f"{n} {results[n][-1]['mean_ms']:.1f} ms" for n in names),
            flush=True,
        )
    shutil.rmtree(logdir, ignore_errors=True)
    summary = {"backend": keras.backend.backend(), "rounds": args.rounds, "configs": {}}
    for name, fits in results.items():
        row = {
            "median_step_ms": _spread([f["median_ms"] for f in fits], 1),
            "mean_step_ms": _spread([f["mean_ms"] for f in fits], 1),
            "cpu_step_ms": _spread([f["cpu_ms"] for f in fits], 1),
        }
        for reference in ("baseline", "pictures"):
            if name == reference or (reference == "pictures" and name == "baseline"):
                continue
            for key in ("mean", "cpu"):
                ratios = [
                    f[f"{key}_ms"] / r[f"{key}_ms"]
                    for f, r in zip(fits, results[reference], strict=True)
                ]
                row[f"{key}_vs_{reference}"] = _spread(ratios)
        summary["configs"][name] = row
    print(json.dumps(summary, indent=2))
    print(
        "\n| configuration | mean step ms | CPU ms / step | mean vs baseline | "
        "mean vs pictures | CPU vs pictures |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in summary["configs"].items():
        print(
            f"| {name} | {row['mean_step_ms']} | {row['cpu_step_ms']} | "
            f"{row.get('mean_vs_baseline', '1')} | {row.get('mean_vs_pictures', '')} | "
            f"{row.get('cpu_vs_pictures', '')} |"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=2)


if __name__ == "__main__":
    main()
