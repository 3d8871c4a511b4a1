"""Writes a synthetic tb-batch-images log directory: R runs x S steps x k images.

Every step goes through the real writer code path (`tb_batch_images.host.writer.write_step`:
the pack file, then its index entry, with records from
`tb_batch_images.contract.encode_record`), so TensorBoard reads exactly what
`BatchImageLogger` writes; only the training is skipped. Images are drawn from a small
pool of pre-encoded PNGs, which keeps generation fast; their bytes are real PNGs.
`--format-version 2` writes the old layout instead (every step one blob sequence, as
format versions 1 and 2 did), for old-log tests and before/after comparisons.

Usage:
    .venv/bin/python -m benchmarks.make_logdir OUT_DIR --runs 10 --steps 1000 --images 16

Version 3 writes through the logger's own event file writer (`host.event_file`, Event
protos appended with `tf.io.TFRecordWriter`). For version 2, `--fast` writes the same
summaries (the same SummaryMetadata, rank-1 string tensors, records from
`format.encode_record`) as Event protos straight into a TFRecord event file, without
`tf.summary` and its flush per step: ~100x faster, for runs of 100,000 steps. Checked
against the tf.summary path: `read_batches` gives the same records and pixels from both.

Runs are `run_000/train`, `run_001/train`, ... Sample ids come from a dataset of
`--dataset-size` samples (filenames `img_00042.png`), so a sample appears at many steps
and in every run, as the history route expects.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image

from tb_batch_images import contract as fmt
from tb_batch_images.host import writer as host_writer

CLASS_NAMES = ["cat", "dog", "bird"]


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of an HxWxC uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_pool(count: int, image_size: int, seed: int = 0) -> list[bytes]:
    """`count` distinct random RGB PNGs of image_size x image_size pixels."""
    rng = np.random.default_rng(seed)
    shape = (image_size, image_size, 3)
    return [
        encode_png(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(count)
    ]


def batch_record(
    *,
    mode: str,
    step: int,
    epoch: int,
    batch: int,
    sequence: int,
    sample_ids: list[int],
    image_size: int,
    wall_time: float | None = None,
    batch_size: int | None = None,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """A complete batch record as docs/format.md describes it (sparse classes)."""
    rng = rng or random.Random(step)
    samples = []
    for position, sample_id in enumerate(sample_ids):
        label = sample_id % len(CLASS_NAMES)
        weights = [rng.random() for _ in CLASS_NAMES]
        probabilities = [weight / sum(weights) for weight in weights]
        ranked = sorted(range(len(CLASS_NAMES)), key=lambda c: -probabilities[c])
        prediction = ranked[0]
        samples.append(
            {
                "position": position,
                "sample_id": sample_id,
                "filename": f"img_{sample_id:05d}.png",
                "label": label,
                "label_name": CLASS_NAMES[label],
                "prediction": prediction,
                "prediction_name": CLASS_NAMES[prediction],
                "confidence": probabilities[prediction],
                "correct": prediction == label,
                "top_k": [
                    {
                        "class": c,
                        "name": CLASS_NAMES[c],
                        "probability": probabilities[c],
                    }
                    for c in ranked
                ],
                "output_summary": None,
                "loss": rng.random() * 3,
                "flags": [],
                "image_shape": [image_size, image_size, 3],
            }
        )
    return {
        "mode": mode,
        "step": step,
        "epoch": epoch,
        "batch": batch,
        "wall_time": time.time() if wall_time is None else wall_time,
        "sequence": sequence,
        "batch_size": batch_size or len(sample_ids),
        "samples_logged": len(samples),
        "selection": "first",
        "replica": 0,
        "num_replicas": 1,
        "task": "sparse_categorical",
        "class_names": CLASS_NAMES,
        "num_classes": len(CLASS_NAMES),
        "image_key": None,
        "input_shape": [image_size, image_size, 3],
        "input_dtype": "float32",
        "input_layout": "HWC",
        "value_range": [0.0, 1.0],
        "image_format": "png",
        "dropped": {"queue_full": 0, "error": 0, "not_image": 0},
        "samples": samples,
    }


def status_record(mode: str, batches_written: int) -> dict[str, Any]:
    """A status record as the logger writes at the end of an epoch or of training."""
    return {
        "mode": mode,
        "wall_time": time.time(),
        "batches_written": batches_written,
        "dropped": {"queue_full": 0, "error": 0, "not_image": 0},
        "warnings": [],
    }


def write_run(
    run_dir: str | Path,
    *,
    steps: int,
    images_per_step: int,
    image_size: int = 32,
    mode: str = "train",
    steps_per_epoch: int = 100,
    step_stride: int = 1,
    dataset_size: int = 2000,
    first_step: int = 0,
    write_status: bool = True,
    pool: list[bytes] | None = None,
    seed: int = 0,
    fast: bool = False,
    format_version: int = fmt.FORMAT_VERSION,
    writer_id: str | None = None,
) -> str | None:
    """Writes `steps` logged batches (and a final status record) to one run directory.

    `fast`: Event protos written straight to the event file (see the module docstring).
    `format_version`: 3 (packs and index entries) or 2 (blob sequences). Answers the
    writer id of the pack files (version 3), `writer_id` or a new random one.
    """
    rng = random.Random(seed)
    pool = pool or png_pool(64, image_size, seed)
    if format_version >= 3:  # the logger's own writer: pack files + entries
        writer_id = writer_id or host_writer.new_writer_id()
        writer: Any = host_writer.open_event_file(str(run_dir))
        write = host_writer.write_value
    elif fast:
        writer = _FastEventWriter(run_dir, format_version)
        write = writer.write
    else:
        writer = tf.summary.create_file_writer(str(run_dir), max_queue=1000)
        write = blob_summary_writer(format_version)
    made_dirs: set[str] = set()
    try:
        for sequence in range(steps):
            step = first_step + sequence * step_stride
            sample_ids = rng.sample(range(dataset_size), images_per_step)
            record = batch_record(
                mode=mode,
                step=step,
                epoch=step // steps_per_epoch,
                batch=step % steps_per_epoch,
                sequence=sequence,
                sample_ids=sample_ids,
                image_size=image_size,
                rng=rng,
            )
            images = [pool[sample_id % len(pool)] for sample_id in sample_ids]
            elements = [_encoded(record, format_version), *images]
            if format_version >= 3:
                host_writer.write_step(
                    writer, str(run_dir), writer_id, step, elements, made_dirs=made_dirs
                )
            else:
                write(writer, fmt.BATCHES_TAG, fmt.SERIES_BATCHES, step, elements)
        if write_status:
            last_step = first_step + max(steps - 1, 0) * step_stride
            write(
                writer,
                fmt.STATUS_TAG,
                fmt.SERIES_STATUS,
                last_step,
                [_encoded(status_record(mode, steps), format_version)],
            )
    finally:
        writer.close()
    return writer_id if format_version >= 3 else None


def _encoded(record: dict[str, Any], format_version: int) -> bytes:
    """A record as `encode_record` writes it, stamped with `format_version`."""
    if format_version == fmt.FORMAT_VERSION:
        return fmt.encode_record(record)
    record = {**record, "format_version": format_version}
    return json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")


def old_summary_metadata(series_kind: str, format_version: int) -> Any:
    """SummaryMetadata as a version 1 or 2 writer wrote it (its version in content)."""
    metadata = fmt.summary_metadata(series_kind)
    content = json.loads(metadata.plugin_data.content)
    content["version"] = format_version
    metadata.plugin_data.content = json.dumps(content).encode("utf-8")
    return metadata


def blob_summary_writer(format_version: int = 2):
    """`write(summary_writer, tag, series_kind, step, elements)`: one blob-sequence
    value through `tf.summary` (a rank-1 string tensor), flushed, as writers of format
    versions 1 and 2 wrote every logged step. `summary_writer` is a
    `tf.summary.create_file_writer`; the metadata says `format_version`."""

    def write(summary_writer, tag, series_kind, step, elements):
        metadata = (
            fmt.summary_metadata(series_kind)
            if format_version >= fmt.FORMAT_VERSION
            else old_summary_metadata(series_kind, format_version)
        )
        with summary_writer.as_default():
            tf.summary.write(
                tag=tag,
                tensor=tf.constant(elements, dtype=tf.string),
                step=step,
                metadata=metadata,
            )
        summary_writer.flush()

    return write


class _FastEventWriter:
    """Batch summaries as Event protos in one TFRecord event file (no tf.summary)."""

    def __init__(self, run_dir: str | Path, format_version: int = fmt.FORMAT_VERSION):
        from tensorboard.compat.proto import event_pb2

        self._format_version = format_version
        self._event_pb2 = event_pb2
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.fast"
        self._file = tf.io.TFRecordWriter(str(Path(run_dir) / name))
        header = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
        self._file.write(header.SerializeToString())

    def write(self, _writer, tag: str, kind: str, step: int, elements: list[bytes]):
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.util import tensor_util

        tensor = tensor_util.make_tensor_proto(
            np.array(elements, dtype=object), dtype=tf.string.as_datatype_enum
        )
        metadata = (
            fmt.summary_metadata(kind)
            if self._format_version >= fmt.FORMAT_VERSION
            else old_summary_metadata(kind, self._format_version)
        )
        value = summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)
        self._write_value(step, value)

    def _write_value(self, step: int, value: Any) -> None:
        from tensorboard.compat.proto import summary_pb2

        event = self._event_pb2.Event(
            wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=[value])
        )
        self._file.write(event.SerializeToString())

    def close(self) -> None:
        self._file.close()


def make_logdir(
    out_dir: str | Path,
    *,
    runs: int,
    steps: int,
    images_per_step: int,
    image_size: int = 32,
    dataset_size: int = 2000,
    fast: bool = False,
    format_version: int = fmt.FORMAT_VERSION,
    jobs: int = 1,
) -> list[str]:
    """Writes `runs` runs named `run_NNN/train`; returns their directories.

    `jobs` > 1 writes runs in that many processes at once (each run is still written
    by one writer, in step order).
    """
    options = dict(
        steps=steps,
        images_per_step=images_per_step,
        image_size=image_size,
        dataset_size=dataset_size,
        fast=fast,
        format_version=format_version,
    )
    run_dirs = [
        str(Path(out_dir) / f"run_{index:03d}" / "train") for index in range(runs)
    ]
    if jobs > 1:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        with context.Pool(jobs) as workers:
            workers.starmap(
                _write_runs,
                [(run_dirs[job::jobs], job, jobs, options) for job in range(jobs)],
            )
    else:
        _write_runs(run_dirs, 0, 1, options)
    return run_dirs


def _write_runs(
    run_dirs: list[str], first: int, stride: int, options: dict[str, Any]
) -> None:
    pool = png_pool(64, options["image_size"])
    for offset, run_dir in enumerate(run_dirs):
        write_run(run_dir, pool=pool, seed=first + offset * stride, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--images", type=int, default=16, help="images per step")
    parser.add_argument("--image-size", type=int, default=32, help="pixels per side")
    parser.add_argument("--dataset-size", type=int, default=2000)
    parser.add_argument(
        "--fast", action="store_true", help="Event protos without tf.summary"
    )
    parser.add_argument(
        "--format-version",
        type=int,
        default=fmt.FORMAT_VERSION,
        choices=(2, fmt.FORMAT_VERSION),
        help="3: pack files + index entries (today's); 2: blob sequences (older logs)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="processes writing runs")
    args = parser.parse_args()
    start = time.perf_counter()
    make_logdir(
        args.out_dir,
        runs=args.runs,
        steps=args.steps,
        images_per_step=args.images,
        image_size=args.image_size,
        dataset_size=args.dataset_size,
        fast=args.fast,
        format_version=args.format_version,
        jobs=args.jobs,
    )
    print(
        f"wrote {args.runs} runs x {args.steps} steps x {args.images} images "
        f"({args.image_size}x{args.image_size}) to {args.out_dir} "
        f"in {time.perf_counter() - start:.1f}s"
    )


if __name__ == "__main__":
    main()
