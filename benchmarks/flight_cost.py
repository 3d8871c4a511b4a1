"""What the flight recorder adds to a training step, timed in isolation.

On a machine shared with other work, whole-step ratios wobble by more than the 1%
they should resolve (`overhead.py`). This times the two pieces separately, alternating,
in one process: the overhead benchmark's CNN train step (64x64x3, batch 64), and the
work the recorder adds to every step with no anomaly: the per-sample non-finite sums
over the whole input batch, the batch's per-sample loss, the running statistics and
trigger rules (`FlightRecorder.update_state`), and with it the composition's record of
the step (`recorder_and_ring`; TensorFlow: the device ring; PyTorch: the ids as they
leave with the logs). The minimum and the 10th percentile of each (load only adds
time) give the ratio; `recorder_and_ring_x20` (TensorFlow) runs 20 steps' worth in one
call and is reported per step (a call's own dispatch, which a training step does not
pay, shared). TensorFlow runs them as `tf.function`s; PyTorch eagerly, as Keras's
default torch step does (`KERAS_BACKEND=torch`).

    .venv/bin/python -m benchmarks.flight_cost --repeats 300
    KERAS_BACKEND=torch .venv/bin/python -m benchmarks.flight_cost --repeats 300
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.overhead import BATCH, CLASSES, make_images, model  # noqa: E402
from tb_batch_images.capture import flight, losses  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--side", type=int, default=64)
    args = parser.parse_args()
    backend = keras.backend.backend()
    if backend == "jax":
        raise SystemExit("JAX: use overhead.py (a jitted step has no separable part)")
    net = model(args.side, "cnn", False)
    x = make_images(BATCH, "shapes", args.side)
    y = np.arange(BATCH) % CLASSES
    ids = np.arange(BATCH)
    net.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # builds the optimizer
    recorder = flight.FlightRecorder(flight.TriggerSettings())
    loss_fn = losses.per_sample_loss_fn(net.loss)

    def recorder_work(x, y, y_pred, loss):
        sample_losses = losses.per_sample_losses(loss_fn, y, y_pred)
        bad = flight.bad_inputs(x)
        return recorder.update_state(loss, sample_losses, bad)

    if backend == "tensorflow":
        import tensorflow as tf

        from tb_batch_images.capture.backends.tensorflow import CompositionRing

        ring = CompositionRing(0)
        step = tf.function(lambda x, y: net.train_step((x, y)))
        added = tf.function(
            lambda x, y, p, loss_: recorder_work(x, y, p, loss_)["scalars"]
        )

        def with_ring(x, y, p, loss_, ids):
            scalars = recorder_work(x, y, p, loss_)["scalars"]
            return ring.record(scalars, ids)

        added_ring = tf.function(with_ring)
        inner = 20

        def many(x, y, p, loss_, ids):
            # `inner` steps' worth in one call: the call's own dispatch is shared
            # (inside a training step there is none); each input scaled by a tensor
            # so that no two are the same computation.
            out = tf.zeros([3], tf.int64)
            for i in tf.range(inner):
                scale = 1.0 + tf.cast(i, tf.float32) * 1e-7
                out = with_ring(x * scale, y, p * scale, loss_ * scale, ids)
            return out

        added_many = tf.function(many)
        xt, yt = tf.constant(x), tf.constant(y)
        y_pred = net(xt)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(yt, y_pred))
        idt = tf.constant(ids)
        calls = {
            "train_step": lambda: step(xt, yt)["loss"].numpy(),
            "recorder": lambda: added(xt, yt, y_pred, loss).numpy(),
            "recorder_and_ring": lambda: added_ring(xt, yt, y_pred, loss, idt).numpy(),
            f"recorder_and_ring_x{inner}": lambda: added_many(
                xt, yt, y_pred, loss, idt
            ).numpy(),
        }
    else:  # torch, eager
        xt, yt = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
        y_pred = keras.ops.stop_gradient(net(xt))
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(yt, y_pred))
        idt = keras.ops.convert_to_tensor(ids)

        def ids_out():
            out = recorder_work(xt, yt, y_pred, loss)
            return keras.ops.convert_to_numpy(out["scalars"]), keras.ops.cast(
                idt, "int32"
            )

        calls = {
            "train_step": lambda: float(net.train_step((xt, yt))["loss"]),
            "recorder": lambda: keras.ops.convert_to_numpy(
                recorder_work(xt, yt, y_pred, loss)["scalars"]
            ),
            "recorder_and_ring": ids_out,
        }
    for call in calls.values():  # trace / warm up
        for _ in range(5):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    result = {"backend": backend, "repeats": args.repeats, "load": os.getloadavg()[0]}
    for name, values in times.items():
        result[f"{name}_min_ms"] = round(1e3 * min(values), 3)
        result[f"{name}_p10_ms"] = round(1e3 * float(np.percentile(values, 10)), 3)
    for name in [n for n in calls if n.startswith("recorder_and_ring_x")]:
        count = int(name.rsplit("x", 1)[1])
        for stat in ("min", "p10"):
            result[f"{name}_{stat}_ms"] = round(result[f"{name}_{stat}_ms"] / count, 3)
    for name in [n for n in calls if n != "train_step"]:
        for stat in ("min", "p10"):
            result[f"{name}_share_{stat}"] = round(
                result[f"{name}_{stat}_ms"] / result[f"train_step_{stat}_ms"], 4
            )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
