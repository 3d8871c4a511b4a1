"""Training overhead of BatchImageLogger, measured per step.

A CNN over 64x64x3 images (`--side 128` for 128x128; the demo's drawn shapes, or
`--images noise`, the worst case for PNG), batch 64, tf.data from memory. Every
configuration, the baseline included, runs with the same timing callback: it stamps
`on_train_batch_begin` with `time.perf_counter()` and `time.process_time()` (the whole
process's CPU, so the writer thread's work counts). A step interval is the time from
one batch's begin to the next batch's begin in the same epoch: the step, every
callback's per-batch work and the wait for data. Per fit, the median and the mean step
interval after the first epoch (the first holds the tracing), the CPU per step, and,
separately, the time outside steps (epoch begin and end, the logger's epoch-end and
train-end waits for its writer) and the first epoch's duration (tracing, the writer's
start).

Each round trains one fresh model per configuration (same seed), in an order shuffled
per round, all in one process; ratios are to the same round's baseline, reported as the
median and [min..max] over rounds.

    .venv/bin/python -m benchmarks.overhead --rounds 7 --epochs 3

Configurations (`--configs` picks some): `baseline` (no logger), `tensorboard_batch`
(keras.callbacks.TensorBoard(update_freq="batch"), the anchor: what logging scalars
every batch costs), `default` (BatchImageLogger with its defaults: every 100 steps),
`every_batch_16` (16 images of every batch), `every_batch_64` (the whole batch of 64).
Batches written and dropped are read back from the log (the logger's last status
record). Any Keras backend (KERAS_BACKEND); `--model small` is a model with a short step
(the "fast model" case), `--writer-nice 19` runs the writer at the lowest priority, as
it did before.
"""

from __future__ import annotations

import argparse
import gc
import glob
import json
import os
import random
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
from tb_batch_images import BatchImageLogger  # noqa: E402
from tb_batch_images import contract as fmt  # noqa: E402
from tb_batch_images.host import writer as writer_module  # noqa: E402

BATCH = 64
CLASSES = 10
CONFIGS = (
    "baseline",
    "tensorboard_batch",
    "default",
    "every_batch_16",
    "every_batch_64",
    # The default's parts: without the data map (and so without the watchlist), and
    # without the watchlist alone. Not run unless named in --configs.
    "default_no_stats",
    "default_no_watchlist",
    # The flight recorder (issue 23): the default with its triggers and composition
    # off, with the composition alone, and with the triggers alone; compare them with
    # `--reference default_no_flight`.
    "default_no_flight",
    "default_composition_only",
    "default_triggers_only",
)
DEFAULT_CONFIGS = CONFIGS[:5]


def make_images(samples: int, kind: str, side: int) -> np.ndarray:
    """`shapes`: the demo's drawn shapes on noisy backgrounds (photo-like for PNG),
    scaled to `side`; `noise`: uniform noise, the worst case for PNG encoding."""
    rng = np.random.default_rng(0)
    if kind == "noise":
        return rng.uniform(0, 1, (samples, side, side, 3)).astype("float32")
    shapes = []
    for i in range(samples):
        image = draw_shape(CLASS_SHAPES[i % len(CLASS_SHAPES)], rng)
        if image.size != (side, side):
            image = image.resize((side, side))
        shapes.append(np.asarray(image))
    return np.stack(shapes).astype("float32") / 255.0


def dataset(images: np.ndarray, with_ids: bool) -> tf.data.Dataset:
    """The baseline trains on plain images; the logger runs also carry sample ids."""
    samples = len(images)
    labels = np.random.default_rng(1).integers(0, CLASSES, samples)
    x = {"image": images, "sample_id": np.arange(samples)} if with_ids else images
    data = tf.data.Dataset.from_tensor_slices((x, labels))
    return data.shuffle(samples, seed=0).batch(BATCH).prefetch(tf.data.AUTOTUNE)


def model(side: int, size: str, jit_compile) -> keras.Model:
    keras.utils.set_random_seed(0)
    if size == "small":  # a short step: the writer has less time per batch
        layers = [
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    else:
        layers = [
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    net = keras.Sequential(
        [
            keras.Input((side, side, 3)),
            *layers,
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    net.compile("adam", "sparse_categorical_crossentropy", jit_compile=jit_compile)
    return net


class StepTimer(keras.callbacks.Callback):
    """Wall and process CPU time at every train batch begin, and each epoch's end."""

    def __init__(self):
        super().__init__()
        self.epochs: list[dict[str, list[float]]] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append({"wall": [], "cpu": [], "end": 0.0})

    def on_train_batch_begin(self, batch, logs=None):
        self.epochs[-1]["wall"].append(time.perf_counter())
        self.epochs[-1]["cpu"].append(time.process_time())

    def on_train_batch_end(self, batch, logs=None):
        self.epochs[-1]["end"] = time.perf_counter()


def fit_stats(timer: StepTimer, wall: float) -> dict[str, float]:
    """Per-step intervals after the first epoch, and the time outside steps."""
    intervals, cpu = [], []
    for epoch in timer.epochs[1:] or timer.epochs:  # one epoch (warm-up): all of it
        intervals += list(np.diff(epoch["wall"]))
        cpu += list(np.diff(epoch["cpu"]))
    in_epochs = sum(e["end"] - e["wall"][0] for e in timer.epochs if e["wall"])
    first = timer.epochs[0]
    return {
        # The 10th percentile: what the step costs with the least interference from
        # other processes (a shared machine's load only adds time).
        "p10_ms": 1e3 * float(np.percentile(intervals, 10)),
        "median_ms": 1e3 * statistics.median(intervals),
        "mean_ms": 1e3 * statistics.fmean(intervals),
        "cpu_ms": 1e3 * statistics.fmean(cpu),
        "outside_s": wall - in_epochs,
        "first_epoch_s": first["end"] - first["wall"][0],
        "fit_s": wall,
    }


def logged(run_dir: str) -> dict[str, int] | None:
    """Batches written and dropped, from the log: the index entries (or batch
    summaries) and the last status record of the train run."""
    files = glob.glob(os.path.join(run_dir, "train", "events.out.tfevents.*"))
    if not files:
        return None
    batches, status = 0, None
    for record in tf.data.TFRecordDataset(files):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
            # A logged step: its index entry (format version 3) or its value (2).
            if value.tag == fmt.BATCHES_TAG or value.tag.startswith(
                fmt.INDEX_TAG_PREFIX
            ):
                batches += 1
            elif value.tag == fmt.STATUS_TAG:
                status = fmt.decode_record(value.tensor.string_val[0])
    dropped = sum((status or {}).get("dropped", {}).values())
    return {"written": batches, "dropped": dropped}


_NO_TRIGGERS = {"log_non_finite": False, "log_spikes": False}
FLIGHT_OPTIONS = {
    "default_no_flight": {**_NO_TRIGGERS, "log_composition": False},
    "default_composition_only": _NO_TRIGGERS,
    "default_triggers_only": {"log_composition": False},
}


def callbacks_for(name: str, run_dir: str, samples: int) -> list:
    names = [f"img_{i:05d}.png" for i in range(samples)]
    if name == "baseline":
        return []
    if name == "tensorboard_batch":
        return [keras.callbacks.TensorBoard(run_dir, update_freq="batch")]
    if name == "default":
        return [BatchImageLogger(run_dir, filenames=names)]
    if name == "default_no_stats":
        return [BatchImageLogger(run_dir, filenames=names, sample_stats=False)]
    if name == "default_no_watchlist":
        return [BatchImageLogger(run_dir, filenames=names, watchlist=0)]
    if name.startswith("default_") and name in FLIGHT_OPTIONS:
        return [BatchImageLogger(run_dir, filenames=names, **FLIGHT_OPTIONS[name])]
    count = int(name.rsplit("_", 1)[1])
    return [
        BatchImageLogger(
            run_dir, every_n_steps=1, samples_per_batch=count, filenames=names
        )
    ]


def timed_fit(name, data, args, run_dir: str) -> dict[str, float]:
    net = model(args.side, args.model, args.jit_compile)
    timer = StepTimer()
    callbacks = [timer, *callbacks_for(name, run_dir, args.samples)]
    gc.collect()  # the previous fit's models are freed here, outside the timing
    start = time.perf_counter()
    net.fit(data, epochs=args.epochs, verbose=0, callbacks=callbacks)
    stats = fit_stats(timer, time.perf_counter() - start)
    if name not in ("baseline", "tensorboard_batch"):
        stats.update(logged(run_dir) or {})
    return stats


def _spread(values: list[float], digits: int = 3) -> str:
    return (
        f"{statistics.median(values):.{digits}f} "
        f"[{min(values):.{digits}f}..{max(values):.{digits}f}]"
    )


def summarize(results: dict[str, list[dict]], args, steps_per_fit: int) -> dict:
    baseline = results[args.reference]
    summary = {
        "backend": keras.backend.backend(),
        "images": f"{args.images} {args.side}x{args.side}",
        "model": args.model,
        "rounds": len(baseline),
        "steps_per_fit": steps_per_fit,
        "writer_nice": args.writer_nice,
        "reference": args.reference,
        "load_average": os.getloadavg()[0],
        "configs": {},
    }
    for name, fits in results.items():
        row = {
            "median_step_ms": _spread([f["median_ms"] for f in fits], 1),
            "mean_step_ms": _spread([f["mean_ms"] for f in fits], 1),
            "cpu_step_ms": _spread([f["cpu_ms"] for f in fits], 1),
            "outside_steps_s": _spread([f["outside_s"] for f in fits], 2),
            "first_epoch_s": _spread([f["first_epoch_s"] for f in fits], 2),
        }
        if name != args.reference:
            for key in ("p10", "median", "mean", "cpu"):
                ratios = [
                    f[f"{key}_ms"] / b[f"{key}_ms"]
                    for f, b in zip(fits, baseline, strict=True)
                ]
                row[f"ratio_{key}"] = _spread(ratios)
            row["outside_steps_extra_s"] = _spread(
                [
                    f["outside_s"] - b["outside_s"]
                    for f, b in zip(fits, baseline, strict=True)
                ],
                2,
            )
        if "written" in fits[0]:
            row["written"] = [f["written"] for f in fits]
            row["dropped"] = [f["dropped"] for f in fits]
        summary["configs"][name] = row
    return summary


def print_table(summary: dict) -> None:
    print(
        f"\n{summary['backend']}, {summary['images']}, model {summary['model']}, "
        f"{summary['rounds']} rounds, {summary['steps_per_fit']} steps a fit, "
        f"writer nice {summary['writer_nice']}, load {summary['load_average']:.1f}, "
        f"ratios to {summary['reference']}"
    )
    print(
        "| configuration | step median ms | CPU ms / step | ratio (p10) | "
        "ratio (median) | ratio (mean) | ratio (CPU/step) | outside steps, extra s | "
        "written / dropped |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in summary["configs"].items():
        written = ""
        if "written" in row:
            written = f"{min(row['written'])}-{max(row['written'])} / " + (
                f"{min(row['dropped'])}-{max(row['dropped'])}"
            )
        print(
            f"| {name} | {row['median_step_ms']} | {row['cpu_step_ms']} | "
            f"{row.get('ratio_p10', '1')} | {row.get('ratio_median', '1')} | "
            f"{row.get('ratio_mean', '1')} | {row.get('ratio_cpu', '1')} | "
            f"{row.get('outside_steps_extra_s', '')} | {written} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1280)
    parser.add_argument("--images", choices=("shapes", "noise"), default="shapes")
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--model", choices=("cnn", "small"), default="cnn")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    parser.add_argument(
        "--jit-compile",
        default="auto",
        help="compile(jit_compile=...): auto (Keras's default), true or false",
    )
    parser.add_argument("--writer-nice", type=int, default=writer_module.WRITER_NICE)
    parser.add_argument(
        "--reference",
        default="baseline",
        help="the configuration the ratios are to (run in every round)",
    )
    parser.add_argument("--json", help="also write the summary to this file")
    parser.add_argument(
        "--quick", action="store_true", help="2 rounds, 2 epochs, 256 samples"
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.epochs, args.samples = 2, 2, 256
    args.jit_compile = {"true": True, "false": False}.get(
        args.jit_compile.lower(), "auto"
    )
    writer_module.WRITER_NICE = args.writer_nice
    names = ["baseline"] + [
        c for c in args.configs.split(",") if c in CONFIGS and c != "baseline"
    ]

    images = make_images(args.samples, args.images, args.side)
    plain, with_ids = dataset(images, False), dataset(images, True)
    logdir = tempfile.mkdtemp(prefix="tbbi_overhead_")

    def data_for(name: str) -> tf.data.Dataset:
        return plain if name in ("baseline", "tensorboard_batch") else with_ids

    warmup = argparse.Namespace(**{**vars(args), "epochs": 1})
    for name in names:  # warm up TensorFlow, the input pipelines and each callback
        timed_fit(name, data_for(name), warmup, f"{logdir}/warmup_{name}")
    results: dict[str, list[dict]] = {name: [] for name in names}
    steps = args.epochs * -(-args.samples // BATCH)
    for round_index in range(args.rounds):
        order = names[:]
        random.Random(round_index).shuffle(order)
        for name in order:
            stats = timed_fit(
                name, data_for(name), args, f"{logdir}/{name}_{round_index}"
            )
            results[name].append(stats)
        print(
            f"round {round_index + 1} (load {os.getloadavg()[0]:.1f}): "
            + ", ".join(
                f"{n} {results[n][-1]['median_ms']:.1f}/"
                f"{results[n][-1]['mean_ms']:.1f} ms"
                for n in names
            ),
            flush=True,
        )
        if args.json:  # what the rounds so far give, in case the run is cut short
            with open(args.json, "w") as out:
                json.dump(summarize(results, args, steps), out, indent=2)
    shutil.rmtree(logdir, ignore_errors=True)
    summary = summarize(results, args, steps)
    print(json.dumps(summary, indent=2))
    print_table(summary)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=2)


if __name__ == "__main__":
    main()
