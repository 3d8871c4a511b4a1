"""Every batch of a long run, served: a real fit's log, then TensorBoard's memory and speed.

Two commands:

    # 1. A real fit logging every batch: 10,000 steps, 16 pictures of 64 px a step
    .venv/bin/python -m benchmarks.long_run fit /tmp/long --steps 10000

    # 2. The real `tensorboard` over it, per --load_fast mode
    .venv/bin/python -m benchmarks.long_run serve /tmp/long --steps 10000

`fit` trains a small CNN (benchmarks/overhead.py's `small` model) on the demo's drawn
shapes at 64x64 for `--steps` steps (epochs of `--steps-per-epoch`), with
`BatchImageLogger(every_n_steps=1, samples_per_batch=16)`; it prints what was written
and dropped, how long it took, and the log directory's size on disk (apparent bytes
and allocated blocks, event files and pack files apart).

`serve` starts the real `tensorboard` command on 127.0.0.1 for each mode, first on an
empty log directory (the baseline: TensorBoard, with TensorFlow installed, is ~730 MiB
before any data), then on the log directory, and measures:

- the time from start until `/steps` lists every step of every run (polled), and the
  time of TensorBoard's first answer (its own start-up, importing TensorFlow, is most of
  the total on a busy machine); the resident memory of TensorBoard's process tree
  (Python plus the Rust data server) then, and after the requests below;
- `/samples` of a step not yet read (format version 3: its pack read from disk);
- one `/image` whose step's pack is not in the plugin's memory (its record is; the
  pack was pushed out by reading 100 MB of other steps), and one whose pack is;
- a step's 16 pictures one after another (`/samples`, then its 16 `/image`s: all a
  step costs the page), and concurrently (as the browser fetches them).

p50 and p95 over `--samples` random steps. `--tensorboard-cwd DIR` runs tensorboard from
DIR, so that it imports the plugin of another checkout (e.g. the one before format
version 3) ahead of the installed one.

Memory is read from /proc (Linux). The machine's other load shows in the times; see
benchmarks/README.md, "Every batch of a long run".
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
import urllib.parse
from concurrent import futures
from pathlib import Path
from typing import Any

from benchmarks.plugin_latency import (
    ROUTE,
    _get,
    get_json,
    rss_mib,
    start_tensorboard,
)

IMAGES = 16


# -- fit ----------------------------------------------------------------------------
def fit(args: argparse.Namespace) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks.overhead import make_images, model
    from tb_batch_images import BatchImageLogger

    images = make_images(args.samples, "shapes", args.side)
    labels = np.random.default_rng(1).integers(0, 10, args.samples)
    data = (
        tf.data.Dataset.from_tensor_slices(
            ({"image": images, "sample_id": np.arange(args.samples)}, labels)
        )
        .shuffle(args.samples, seed=0)
        .batch(args.batch, drop_remainder=True)
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )
    net = model(args.side, "small", "auto")
    names = [f"shape_{i:05d}.png" for i in range(args.samples)]
    logger = BatchImageLogger(
        args.logdir,
        every_n_steps=1,
        samples_per_batch=IMAGES,
        filenames=names,
        max_queue=args.max_queue,
    )
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    net.fit(
        data,
        epochs=args.steps // args.steps_per_epoch,
        steps_per_epoch=args.steps_per_epoch,
        verbose=0,
        callbacks=[logger],
    )
    seconds = time.perf_counter() - start
    written, dropped = _written(Path(args.logdir) / "train")
    print(
        json.dumps(
            {
                "steps": args.steps,
                "fit_s": round(seconds, 1),
                "ms_per_step": round(1000 * seconds / args.steps, 2),
                "written": written,
                "dropped": dropped,
                **disk(Path(args.logdir)),
            },
            indent=2,
        )
    )


def _written(run_dir: Path) -> tuple[int, dict[str, int]]:
    """Steps written and the logger's drop counts, from its last status record."""
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    status = accumulator.Tensors("batch_images_status")[-1]
    record = json.loads(status.tensor_proto.string_val[0])
    return record["batches_written"], record["dropped"]


def disk(logdir: Path) -> dict[str, int]:
    """Apparent bytes and allocated bytes (4 KiB blocks...) of the log directory:
    event files, pack files and everything."""
    sizes = {"events": [0, 0], "packs": [0, 0], "all": [0, 0], "files": 0}
    for path in logdir.rglob("*"):
        if not path.is_file():
            continue
        status = path.stat()
        kind = "packs" if path.suffix == ".pack" else "events"
        for key in (kind, "all"):
            sizes[key][0] += status.st_size
            sizes[key][1] += status.st_blocks * 512
        sizes["files"] += 1
    return {
        "files": sizes["files"],
        **{f"{key}_bytes": sizes[key][0] for key in ("events", "packs", "all")},
        **{f"{key}_allocated": sizes[key][1] for key in ("events", "packs", "all")},
    }


# -- serve --------------------------------------------------------------------------
def _stop(process: Any) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def baseline(load_fast: str, cwd: str | None) -> float:
    """RSS (MiB) of TensorBoard on an empty log directory, once it answers + 5 s."""
    with tempfile.TemporaryDirectory() as empty:
        process, base = start_tensorboard(Path(empty), load_fast, cwd=cwd)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    get_json(base, "/runs")
                    break
                except OSError:
                    time.sleep(0.5)
            time.sleep(5)
            return rss_mib(process.pid)
        finally:
            _stop(process)


class KeepAlive:
    """GETs over one HTTP/1.1 connection kept open (TensorBoard's server keeps it), as
    a browser does: no TCP connect per request."""

    def __init__(self, base: str):
        host, port = base.removeprefix("http://").split(":")
        self._connection = http.client.HTTPConnection(host, int(port), timeout=120)

    def get(self, route: str, **params: Any) -> tuple[float, bytes]:
        """(milliseconds, body) of a GET that must succeed."""
        path = route + ("?" + urllib.parse.urlencode(params) if params else "")
        start = time.perf_counter()
        self._connection.request("GET", path)
        response = self._connection.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - start) * 1000
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
        return elapsed, body

    def close(self) -> None:
        self._connection.close()


def _step_numbers(base: str, run: str) -> list[int]:
    numbers: list[int] = []
    while True:
        _, page = get_json(
            base, "/steps", run=run, fields="step", offset=len(numbers), limit=10_000
        )
        numbers += page["steps"]
        if not page["steps"] or len(numbers) >= page["total"]:
            return numbers


def _percentiles(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return f"{statistics.median(values):.1f} / {p95:.1f}"


def serve(
    logdir: Path,
    load_fast: str,
    runs: int,
    steps: int,
    samples: int,
    cwd: str | None,
    poll_s: float,
    seed: int = 0,
) -> dict[str, Any]:
    """Starts TensorBoard on `logdir`, measures, stops it."""
    rng = random.Random(seed)
    started = time.perf_counter()
    process, base = start_tensorboard(logdir, load_fast, cwd=cwd)
    peak = 0.0
    result: dict[str, Any] = {"mode": load_fast}
    answered = None
    try:
        names: list[str] = []
        while True:  # every run listed, then every step of every run
            peak = max(peak, rss_mib(process.pid))
            try:
                _, answer = get_json(base, "/runs")
                answered = answered or time.perf_counter() - started
                names = sorted(run["run"] for run in answer["runs"])
                complete = len(names) == runs and all(
                    get_json(
                        base,
                        "/steps",
                        run=name,
                        fields="step",
                        order="newest",
                        limit=1,
                    )[1]["total"]
                    == steps
                    for name in names
                )
                if complete:
                    break
            except OSError:
                pass
            if process.poll() is not None:
                raise RuntimeError("tensorboard exited")
            time.sleep(poll_s)
        result["listed_s"] = round(time.perf_counter() - started, 1)
        # TensorBoard's own start-up (importing TensorFlow...) is most of it on a busy
        # machine: the time from its first answer on is the listing itself.
        result["first_answer_s"] = round(answered or 0, 1)
        result["rss_listed"] = round(rss_mib(process.pid))
        time.sleep(5)
        result["rss_listed_5s"] = round(rss_mib(process.pid))

        # The logged steps (a logger may have dropped some).
        logged = {name: _step_numbers(base, name) for name in names}
        every = [(name, step) for name in names for step in logged[name]]
        # A step not read yet: /samples (v3: its pack from disk).
        picked = rng.sample(every, samples * 3)
        browser = KeepAlive(base)  # one connection, as a browser keeps it open
        cold, sixteen, whole, concurrent = [], [], [], []
        cold_keys = []
        for name, step in picked[:samples]:
            elapsed, body = browser.get(ROUTE + "/samples", run=name, step=step)
            cold.append(elapsed)
            cold_keys.append(json.loads(body)["samples"][0]["image"])
        # Read ~100 MB of other steps' packs: the plugin's pack cache (64 MiB) no
        # longer holds those of `cold_keys` (their records stay cached).
        for name, step in picked[samples : samples * 2]:
            browser.get(ROUTE + "/samples", run=name, step=step)
        from_disk = [browser.get(ROUTE + "/image", key=key)[0] for key in cold_keys]
        one_cached = []
        for name, step in picked[samples * 2 :]:
            start = time.perf_counter()
            _, body = browser.get(ROUTE + "/samples", run=name, step=step)
            pictures = time.perf_counter()
            times = [
                browser.get(ROUTE + "/image", key=sample["image"])[0]
                for sample in json.loads(body)["samples"]
            ]
            end = time.perf_counter()
            sixteen.append((end - pictures) * 1000)
            whole.append((end - start) * 1000)
            one_cached += times[1:]
        with futures.ThreadPoolExecutor(IMAGES) as pool:
            for _ in range(samples):
                name, step = rng.choice(every)
                start = time.perf_counter()
                _, batch = get_json(base, "/samples", run=name, step=step)
                list(
                    pool.map(
                        lambda s: _get(base, ROUTE + "/image", key=s["image"]),
                        batch["samples"],
                    )
                )
                concurrent.append((time.perf_counter() - start) * 1000)
        browser.close()
        result.update(
            samples_cold_ms=_percentiles(cold),
            image_from_disk_ms=_percentiles(from_disk),
            image_cached_ms=_percentiles(one_cached),
            step_16_images_ms=_percentiles(sixteen),
            step_with_samples_ms=_percentiles(whole),
            step_concurrent_ms=_percentiles(concurrent),
            rss_after=round(rss_mib(process.pid)),
            rss_peak=round(max(peak, rss_mib(process.pid))),
        )
    finally:
        _stop(process)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fit_parser = commands.add_parser("fit", help="a real fit logging every batch")
    fit_parser.add_argument("logdir")
    fit_parser.add_argument("--steps", type=int, default=10_000)
    fit_parser.add_argument("--steps-per-epoch", type=int, default=1000)
    fit_parser.add_argument("--batch", type=int, default=32)
    fit_parser.add_argument("--samples", type=int, default=3200)
    fit_parser.add_argument("--side", type=int, default=64)
    fit_parser.add_argument(
        "--max-queue",
        type=int,
        default=256,
        help="the logger's queue (batches); the default 8 drops when the machine is busy",
    )
    serve_parser = commands.add_parser("serve", help="TensorBoard over a log dir")
    serve_parser.add_argument("logdir")
    serve_parser.add_argument("--runs", type=int, default=1)
    serve_parser.add_argument("--steps", type=int, required=True, help="per run")
    serve_parser.add_argument("--samples", type=int, default=200)
    serve_parser.add_argument("--modes", default="true,false")
    serve_parser.add_argument("--poll", type=float, default=1.0, help="seconds")
    serve_parser.add_argument("--tensorboard-cwd", default=None)
    serve_parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    if args.command == "fit":
        fit(args)
        return
    logdir = Path(args.logdir)
    print(json.dumps({"logdir": str(logdir), **disk(logdir)}), flush=True)
    for mode in args.modes.split(","):
        empty = None if args.no_baseline else baseline(mode, args.tensorboard_cwd)
        result = serve(
            logdir,
            mode,
            args.runs,
            args.steps,
            args.samples,
            args.tensorboard_cwd,
            args.poll,
        )
        if empty is not None:
            result["rss_empty"] = round(empty)
            result["rss_listed_over_empty"] = result["rss_listed"] - round(empty)
            result["rss_after_over_empty"] = result["rss_after"] - round(empty)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
