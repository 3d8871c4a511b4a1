"""What the data map costs as the dataset grows, and what it adds to a fit.

Two measurements, any Keras backend (`KERAS_BACKEND`):

- `--micro`: `SampleStats.update_state` alone, compiled the way the backend compiles
  a step (TensorFlow: `tf.function(jit_compile=...)`, JAX: `jax.jit` with the state
  donated, as Keras donates it; PyTorch: eager), one batch of 64 samples of 10 classes
  with ids drawn from `[0, N)`, for N = 10k, 100k, 1M: the median time of a call
  (the steps' cost per step), its first call (tracing and compiling), and the device
  memory of the accumulators. Run it against another checkout to compare (the module
  is imported from wherever `tb_batch_images` is).
- `--fit`: whole fits timed per step with `overhead.py`'s `StepTimer`, rounds
  interleaved in one process, ratios to the same round's plain fit: `plain`, `stats`
  (the data map, `watchlist=0`) and `default` (the data map and its watchlist of 32),
  for two models: `small` (`label_errors.model`, MNIST-5k-sized batches of 28x28x1: a
  ~5 ms step) and `cnn` (`overhead.py`'s CNN on 64x64x3 drawn shapes: a ~40 ms step).
  The data holds `--samples` pictures whose ids are drawn from `[0, N)` and the logger
  is told `num_samples=N`, so N can be a million without a million pictures. Reported:
  the step median and mean ratio after the first epoch, the first epoch's extra
  seconds (the larger step's tracing), and the whole fit's ratio.

    .venv/bin/python -m benchmarks.data_map_cost --micro
    .venv/bin/python -m benchmarks.data_map_cost --fit --model small --rounds 5
    .venv/bin/python -m benchmarks.data_map_cost --fit --model cnn --rounds 5 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

BATCH = 64
CLASSES = 10
SIZES = (10_000, 100_000, 1_000_000)


# -- one update, compiled -----------------------------------------------------------------
def _compiled_update(stats, jit: bool):
    """A function (ids, y, y_pred) running one update the way the backend's step does."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=jit)
        def step(ids, y, y_pred):
            stats.update_state(ids, y, y_pred)
            return tf.constant(0)

        return lambda *args: step(*args).numpy()
    if backend == "jax":
        import jax

        variables = list(stats.variables)

        def pure(values, ids, y, y_pred):
            with keras.StatelessScope(
                state_mapping=list(zip(variables, values, strict=True))
            ) as scope:
                stats.update_state(ids, y, y_pred)
            return [scope.get_current_value(v) for v in variables]

        jitted = jax.jit(pure, donate_argnums=0)
        state = {"values": [v.value for v in variables]}

        def run(ids, y, y_pred):
            state["values"] = jitted(state["values"], ids, y, y_pred)
            jax.block_until_ready(state["values"])

        return run

    def run(ids, y, y_pred):  # PyTorch: eager, in place
        import torch

        with torch.no_grad():
            stats.update_state(
                keras.ops.convert_to_tensor(ids),
                keras.ops.convert_to_tensor(y),
                keras.ops.convert_to_tensor(y_pred),
            )

    return run


def micro(sizes, calls: int, jit: bool) -> None:
    from tb_batch_images.capture.sample_stats import SampleStats

    rng = np.random.default_rng(0)
    print(
        f"backend {keras.backend.backend()}, jit {jit}, batch {BATCH}, "
        f"{CLASSES} classes, {calls} calls"
    )
    print(
        "| N | first call (trace + compile) ms | per call ms, median [p10..p90] | device memory MB |"
    )
    print("|---|---|---|---|")
    for size in sizes:
        stats = SampleStats(size, CLASSES, "softmax", False)
        run = _compiled_update(stats, jit)
        probs = rng.dirichlet(np.ones(CLASSES), (calls + 1, BATCH)).astype("float32")
        labels = rng.integers(0, CLASSES, (calls + 1, BATCH)).astype("int32")
        ids = rng.integers(0, size, (calls + 1, BATCH)).astype("int32")
        start = time.perf_counter()
        run(ids[0], labels[0], probs[0])
        first = time.perf_counter() - start
        times = []
        for i in range(1, calls + 1):
            start = time.perf_counter()
            run(ids[i], labels[i], probs[i])
            times.append(time.perf_counter() - start)
        memory = sum(int(np.prod(v.shape)) * 4 for v in stats.variables) / 1e6
        times.sort()
        print(
            f"| {size:,} | {first * 1e3:.0f} | {statistics.median(times) * 1e3:.3f} "
            f"[{times[len(times) // 10] * 1e3:.3f}..{times[9 * len(times) // 10] * 1e3:.3f}] "
            f"| {memory:.1f} |",
            flush=True,
        )


# -- whole fits -------------------------------------------------------------------------
def _data(model: str, samples: int):
    if model == "small":
        from benchmarks import label_errors

        images, labels = label_errors.load()
        images, labels = images[:samples], labels[:samples]
        return images, labels, lambda: label_errors.model(0)
    from benchmarks import overhead

    images = overhead.make_images(samples, "shapes", 64)
    labels = np.arange(samples) % overhead.CLASSES

    def build():
        return overhead.model(64, "cnn", "auto")

    return images, labels, build


def fit(model: str, sizes, rounds: int, epochs: int, samples: int) -> None:
    from benchmarks.overhead import StepTimer, fit_stats
    from tb_batch_images import BatchImageLogger

    images, labels, build = _data(model, samples)
    configs = ["plain"] + [
        f"{name}_{size}" for size in sizes for name in ("stats", "default")
    ]
    results: dict[str, list[dict]] = {name: [] for name in configs}
    rng = np.random.default_rng(0)
    ids = {size: rng.choice(size, len(images), replace=False) for size in sizes}
    print(
        f"backend {keras.backend.backend()}, model {model}, {len(images)} pictures, "
        f"batch {BATCH}, {epochs} epochs, {rounds} rounds",
        flush=True,
    )
    for round_index in range(rounds):
        order = list(configs)
        random.Random(round_index).shuffle(order)
        for name in order:
            net, timer = build(), StepTimer()
            callbacks: list = [timer]
            logdir = tempfile.mkdtemp(prefix="data_map_cost_")
            x = images
            if name != "plain":
                kind, size = name.rsplit("_", 1)
                size = int(size)
                x = {"image": images, "sample_id": ids[size]}
                callbacks.append(
                    BatchImageLogger(
                        logdir,
                        every_n_steps=0,
                        num_samples=size,
                        watchlist=32 if kind == "default" else 0,
                    )
                )
            start = time.perf_counter()
            net.fit(
                x,
                labels,
                batch_size=BATCH,
                epochs=epochs,
                verbose=0,
                callbacks=callbacks,
            )
            stats = fit_stats(timer, time.perf_counter() - start)
            shutil.rmtree(logdir, ignore_errors=True)
            results[name].append(stats)
            print(
                f"round {round_index + 1} {name}: step median {stats['median_ms']:.2f} ms, "
                f"mean {stats['mean_ms']:.2f} ms, first epoch {stats['first_epoch_s']:.2f} s, "
                f"fit {stats['fit_s']:.2f} s",
                flush=True,
            )

    def ratios(name: str, key: str) -> list[float]:
        return [
            mine[key] / base[key]
            for mine, base in zip(results[name], results["plain"], strict=True)
        ]

    def spread(values: list[float], digits: int = 3) -> str:
        return (
            f"{statistics.median(values):.{digits}f} "
            f"[{min(values):.{digits}f}..{max(values):.{digits}f}]"
        )

    base = results["plain"]
    print(
        f"\nplain: step median {statistics.median(r['median_ms'] for r in base):.2f} ms, "
        f"first epoch {statistics.median(r['first_epoch_s'] for r in base):.2f} s, "
        f"fit {statistics.median(r['fit_s'] for r in base):.2f} s"
    )
    print(
        "| configuration | N | step median ratio | step mean ratio | CPU / step ratio "
        "| first epoch, extra s | fit ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in configs[1:]:
        kind, size = name.rsplit("_", 1)
        extra = [
            mine["first_epoch_s"] - plain["first_epoch_s"]
            for mine, plain in zip(results[name], base, strict=True)
        ]
        print(
            f"| {kind} | {int(size):,} | {spread(ratios(name, 'median_ms'))} | "
            f"{spread(ratios(name, 'mean_ms'))} | {spread(ratios(name, 'cpu_ms'))} | "
            f"{spread(extra, 2)} | "
            f"{spread(ratios(name, 'fit_s'))} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro", action="store_true")
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--model", choices=("small", "cnn"), default="small")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--no-jit", action="store_true", help="--micro on TF: no XLA")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=5000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.micro:
        micro(sizes, args.calls, not args.no_jit)
    if args.fit:
        fit(args.model, sizes, args.rounds, args.epochs, args.samples)


if __name__ == "__main__":
    main()
