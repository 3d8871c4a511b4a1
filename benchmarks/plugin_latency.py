"""Latency of each plugin route, and TensorBoard's memory, on a synthetic log directory.

Starts the real `tensorboard` command on 127.0.0.1 (once per `--load_fast` mode), waits
until every step is loaded, then times HTTP requests the way the gallery makes them:

    .venv/bin/python -m benchmarks.plugin_latency --logdir /tmp/tbbi_bench \
        --runs 10 --steps 1000 --images 16

The log directory is generated with `benchmarks.make_logdir` when it does not exist.
Cold numbers are first requests (nothing of that run cached by the plugin yet); warm
numbers are requests after the plugin has read the records once. Resident memory is the
sum over TensorBoard's process tree (with `--load_fast=true` the Rust data server holds
the data, TensorBoard itself very little).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from concurrent import futures
from pathlib import Path
from typing import Any

from benchmarks import make_logdir

ROUTE = "/data/plugin/batch_images"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(base: str, route: str, **params: Any) -> tuple[float, bytes]:
    """(milliseconds, body) of one GET that must succeed, gzip accepted like a browser."""
    url = base + route + ("?" + urllib.parse.urlencode(params) if params else "")
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        body = response.read()
        if response.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)  # as a browser does
    return (time.perf_counter() - start) * 1000, body


def get_json(base: str, route: str, **params: Any) -> tuple[float, Any]:
    elapsed, body = _get(base, ROUTE + route, **params)
    return elapsed, json.loads(body)


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


class Timings:
    """Milliseconds per route label, printed as a markdown table."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    def add(self, label: str, milliseconds: float) -> None:
        self.samples.setdefault(label, []).append(milliseconds)

    def rows(self, mode: str) -> list[str]:
        rows = []
        for label, values in self.samples.items():
            values = sorted(values)
            p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
            rows.append(
                f"| {mode} | {label} | {len(values)} | {statistics.median(values):.1f} "
                f"| {p95:.1f} | {values[-1]:.1f} |"
            )
        return rows


def start_tensorboard(
    logdir: Path | str,
    load_fast: str,
    extra_args: list[str] | None = None,
    cwd: str | None = None,
) -> tuple[subprocess.Popen, str]:
    """Starts the real `tensorboard` on a free 127.0.0.1 port: (process, base URL)."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast",
            load_fast,
            *(extra_args or []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
    )
    return process, f"http://127.0.0.1:{port}"


def measure(
    logdir: Path, load_fast: str, runs: int, steps: int, seed: int = 0
) -> list[str]:
    """Starts TensorBoard, times every route, stops it; returns markdown rows."""
    rng = random.Random(seed)
    started = time.perf_counter()
    process, base = start_tensorboard(logdir, load_fast)
    timings = Timings()
    try:
        # Loaded: every run lists every step. The first /runs is the cold one.
        first_runs_ms = None
        while True:
            try:
                elapsed, answer = get_json(base, "/runs")
                first_runs_ms = first_runs_ms or elapsed
                kept = [run["steps_kept"] for run in answer["runs"]]
                if len(kept) == runs and all(count == steps for count in kept):
                    break
            except OSError:
                pass
            if process.poll() is not None:
                raise RuntimeError("tensorboard exited")
            time.sleep(0.5)
        load_seconds = time.perf_counter() - started
        run_names = [run["run"] for run in answer["runs"]]
        rss_loaded = rss_mib(process.pid)

        for _ in range(30):
            timings.add("`/runs`", get_json(base, "/runs")[0])
        for run in rng.sample(run_names, min(5, len(run_names))):  # before any /steps
            for _ in range(10):
                step = rng.randrange(steps)
                timings.add(
                    "`/samples` cold (record not yet read)",
                    get_json(base, "/samples", run=run, step=step)[0],
                )
        for run in run_names:
            timings.add(
                "`/steps` cold (first for a run: 1,000 records read)",
                get_json(base, "/steps", run=run)[0],
            )
        for _ in range(100):
            timings.add(
                "`/steps` (1,000 steps)",
                get_json(base, "/steps", run=rng.choice(run_names))[0],
            )
        for _ in range(100):
            run = rng.choice(run_names)
            timings.add(
                "`/steps?limit=100`",
                get_json(
                    base,
                    "/steps",
                    run=run,
                    offset=rng.randrange(steps - 100),
                    limit=100,
                )[0],
            )
        keys, filenames = [], []
        for _ in range(200):
            elapsed, batch = get_json(
                base, "/samples", run=rng.choice(run_names), step=rng.randrange(steps)
            )
            timings.add("`/samples`", elapsed)
            keys += [sample["image"] for sample in batch["samples"]]
            filenames.append(batch["samples"][0]["filename"])
        for key in rng.sample(keys, 200):
            timings.add("`/image`", _get(base, ROUTE + "/image", key=key)[0])
        with futures.ThreadPoolExecutor(16) as pool:
            for _ in range(20):
                _, batch = get_json(
                    base,
                    "/samples",
                    run=rng.choice(run_names),
                    step=rng.randrange(steps),
                )
                start = time.perf_counter()
                list(
                    pool.map(
                        lambda s: _get(base, ROUTE + "/image", key=s["image"]),
                        batch["samples"],
                    )
                )
                timings.add(
                    "a step's 16 `/image`s, concurrently",
                    (time.perf_counter() - start) * 1000,
                )
        hits = []
        for filename in filenames[:20]:
            elapsed, answer = get_json(base, "/history", filename=filename)
            timings.add("`/history?filename=` (all runs)", elapsed)
            hits.append(len(answer["appearances"]))
        for sample_id in rng.sample(range(2000), 20):
            timings.add(
                "`/history?sample_id=`",
                get_json(base, "/history", sample_id=sample_id)[0],
            )
        rss_after = rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    rows = timings.rows(f"`{load_fast}`")
    rows.append(
        f"| `{load_fast}` | load: all steps listed after {load_seconds:.1f} s (first `/runs` "
        f"{first_runs_ms:.0f} ms); {statistics.mean(hits):.0f} appearances per history; RSS {rss_loaded:.0f} MiB loaded, {rss_after:.0f} MiB after "
        "the benchmark | | | | |"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="/tmp/tbbi_bench")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--modes", default="false,true", help="load_fast values")
    args = parser.parse_args()
    logdir = Path(args.logdir)
    if not logdir.exists():
        print(f"generating {logdir} ...", flush=True)
        make_logdir.make_logdir(
            logdir,
            runs=args.runs,
            steps=args.steps,
            images_per_step=args.images,
            image_size=args.image_size,
        )
    print("| load_fast | route | n | p50 ms | p95 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        for row in measure(logdir, mode, args.runs, args.steps):
            print(row, flush=True)


if __name__ == "__main__":
    main()
