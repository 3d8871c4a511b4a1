"""Where the logger's CPU goes, per logged batch: each piece timed in its own thread.

Trains the overhead benchmark's model (`--model small` by default: the short step
where the logger's share is largest) once without and once with
`BatchImageLogger(every_n_steps=1, samples_per_batch=16)`, and times, with
`time.thread_time()` (the CPU of the calling thread only, so other processes' load
does not count), the pieces of the logger's work:

- on the training thread: the logger's batch callbacks (including the host read of
  the capture buffers and the hand-over to the writer);
- on the writer thread: pixels to uint8, PNG encoding, per-sample fields, the JSON
  record, and the `tf.summary` write + flush.

The pieces are the real functions, wrapped by this script (no change to the product).
It also gives the whole process's CPU per step of both fits, whose difference is what
the logger costs in all (the capture inside the compiled step included).

    .venv/bin/python -m benchmarks.where_time_goes --steps 400
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import threading
import time
from collections import defaultdict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from benchmarks.overhead import BATCH, dataset, make_images, model  # noqa: E402
from tb_batch_images import BatchImageLogger  # noqa: E402
from tb_batch_images import contract as fmt  # noqa: E402
from tb_batch_images.host import pixels, predictions  # noqa: E402
from tb_batch_images.host import record as record_module  # noqa: E402
from tb_batch_images.host import writer as writer_module  # noqa: E402
from tb_batch_images.logger import callback, session  # noqa: E402

SPENT: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)
_depth = threading.local()


def timed(name: str, function):
    """`function`, adding its thread CPU to SPENT[name] (outermost calls only)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        nested = getattr(_depth, name, 0)
        setattr(_depth, name, nested + 1)
        start = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            setattr(_depth, name, nested)
            if not nested:
                SPENT[name] += time.thread_time() - start
                CALLS[name] += 1

    return wrapper


def instrument() -> None:
    pixels.to_uint8 = timed("writer: pixels to uint8", pixels.to_uint8)
    pixels.encode = timed("writer: PNG encoding", pixels.encode)
    predictions.describe_sample = timed(
        "writer: per-sample fields", predictions.describe_sample
    )
    fmt.encode_record = timed("writer: JSON record", fmt.encode_record)
    record_module.build_elements = timed(
        "writer: whole record + images", record_module.build_elements
    )
    writer_module.write_pack = timed(
        "writer: pack file write", writer_module.write_pack
    )
    writer_module.write_index_entry = timed(
        "writer: index entry write + flush", writer_module.write_index_entry
    )
    if keras.backend.backend() == "tensorflow":
        from tb_batch_images.capture.backends import tensorflow as tf_adapter

        buffers = tf_adapter.ModeBuffers
        buffers.collect = timed(
            "training thread: host read of the capture buffers", buffers.collect
        )
    session.CaptureSession.collected = timed(
        "training thread: hand-over to the writer", session.CaptureSession.collected
    )
    logger_class = callback.BatchImageLogger
    for method in ("on_train_batch_begin", "on_train_batch_end"):
        setattr(
            logger_class,
            method,
            timed(
                "training thread: logger batch callbacks", getattr(logger_class, method)
            ),
        )


def fit(data, steps: int, args, callbacks: list) -> float:
    """Process CPU seconds per step of one fit, after a warm-up fit (the tracing)."""
    net = model(args.side, args.model, "auto")
    net.fit(data, epochs=1, steps_per_epoch=20, verbose=0, callbacks=callbacks)
    SPENT.clear(), CALLS.clear()
    start = time.process_time()
    net.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=callbacks)
    return (time.process_time() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--model", default="small", choices=("small", "cnn"))
    parser.add_argument("--images", default="shapes", choices=("shapes", "noise"))
    args = parser.parse_args()
    instrument()
    images = make_images(BATCH * 50, args.images, args.side)
    plain = dataset(images, False).repeat()
    with_ids = dataset(images, True).repeat()
    baseline = fit(plain, args.steps, args, [])
    logdir = tempfile.mkdtemp(prefix="tbbi_where_")
    logger = BatchImageLogger(logdir, every_n_steps=1, samples_per_batch=16)
    logged = fit(with_ids, args.steps, args, [logger])
    batches = CALLS["writer: whole record + images"]
    print(
        f"backend {keras.backend.backend()}, model {args.model}, {args.side} px "
        f"{args.images}, {args.steps} steps (after a 20-step warm-up fit); "
        f"batches written: {batches}"
    )
    print(
        f"process CPU per step: baseline {baseline * 1e3:.1f} ms, with the logger "
        f"{logged * 1e3:.1f} ms (+{(logged - baseline) * 1e3:.1f} ms)"
    )
    print("| piece | CPU ms per logged batch |")
    print("|---|---|")
    for name in sorted(SPENT):
        per_batch = SPENT[name] / max(batches, 1) * 1e3
        print(f"| {name} | {per_batch:.2f} |")


if __name__ == "__main__":
    main()
