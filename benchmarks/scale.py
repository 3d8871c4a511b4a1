"""Load time and resident memory of TensorBoard on one (large) log directory.

For each `--load_fast` mode, starts the real `tensorboard` command on 127.0.0.1 with
the plugin's default `--samples_per_plugin` (keep every step), polls
`/data/plugin/batch_images/runs` until the runs' `steps_kept` add up to the expected
number of steps, and records the time since start, the time of TensorBoard's first
answer (its own start-up), the CPU time of TensorBoard's process tree until every step
was listed (what a busy machine changes least) and its resident memory (with
`--load_fast=true` the tree includes the Rust data server), then stops it. `--steps 0`
on an empty folder measures TensorBoard's own memory, the baseline:

    .venv/bin/python -m benchmarks.make_logdir /tmp/big --runs 10 --steps 10000 --images 8
    .venv/bin/python -m benchmarks.scale /tmp/big --steps 100000
    mkdir /tmp/empty && .venv/bin/python -m benchmarks.scale /tmp/empty --steps 0

`--steps` is the total over all runs (runs x steps per run). Prints one markdown row per
mode, plus the log directory's size on disk. See docs/scale.md for results.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

from benchmarks.plugin_latency import get_json, rss_mib, start_tensorboard


def disk_bytes(logdir: Path) -> tuple[int, int]:
    """(bytes of event files, number of event files) under logdir."""
    total = count = 0
    for path in logdir.rglob("events.out.tfevents.*"):
        total += path.stat().st_size
        count += 1
    return total, count


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and all its descendants, in seconds:
    what loading cost, whatever else the machine was doing (Linux /proc)."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        number = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(number)
        times[number] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        total += times.get(current, 0.0)
    return total


def measure(
    logdir: Path,
    load_fast: str,
    total_steps: int,
    timeout_s: float = 3600,
    rss_limit_mib: float | None = None,
    poll_s: float = 1.0,
    extra_args: list[str] | None = None,
    last_step: int | None = None,
) -> dict[str, float]:
    """Starts TensorBoard, waits until every step is listed, measures, stops it."""
    started = time.perf_counter()
    process, base = start_tensorboard(logdir, load_fast, extra_args)
    peak = 0.0
    kept = 0
    first_answer = None
    try:
        while True:
            peak = max(peak, rss_mib(process.pid))
            if rss_limit_mib and peak > rss_limit_mib:
                raise RuntimeError(f"RSS {peak:.0f} MiB over the limit; stopped")
            try:
                _, answer = get_json(base, "/runs")
                if first_answer is None:  # TensorBoard's own start-up is over
                    first_answer = time.perf_counter() - started
                kept = sum(run["steps_kept"] for run in answer["runs"])
                # With a reservoir (--samples_per_plugin batch_images=N) the count is
                # reached early; the last step of every run says the reading is done.
                read_to_end = last_step is None or all(
                    run["last_step"] >= last_step for run in answer["runs"]
                )
                if kept >= total_steps and read_to_end:
                    break
            except OSError:
                pass
            if process.poll() is not None:
                raise RuntimeError("tensorboard exited")
            elapsed = time.perf_counter() - started
            if elapsed > timeout_s:
                raise RuntimeError(
                    f"only {kept} of {total_steps} steps after {elapsed:.0f} s"
                )
            time.sleep(poll_s)
        load_seconds = time.perf_counter() - started
        cpu = cpu_seconds(process.pid)
        rss = rss_mib(process.pid)
        time.sleep(5)  # let a loader that is still settling show up in the memory
        rss_settled = rss_mib(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return {
        "load_s": load_seconds,
        "first_answer_s": first_answer if first_answer is not None else load_seconds,
        "cpu_s": cpu,
        "rss_mib": rss,
        "rss_settled_mib": rss_settled,
        "peak_rss_mib": max(peak, rss, rss_settled),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir")
    parser.add_argument(
        "--steps",
        type=int,
        required=True,
        help="steps TensorBoard should list, total over all runs (with "
        "--samples_per_plugin batch_images=N: runs x N)",
    )
    parser.add_argument("--modes", default="false,true", help="load_fast values")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per mode")
    parser.add_argument(
        "--rss-limit", type=float, default=None, help="MiB; stop a mode above this"
    )
    parser.add_argument(
        "--tensorboard-arg",
        action="append",
        default=[],
        help="extra tensorboard flag, e.g. --tensorboard-arg=--samples_per_plugin="
        "batch_images=100 (repeatable)",
    )
    parser.add_argument(
        "--last-step",
        type=int,
        default=None,
        help="also wait until every run lists this step (use with a reservoir)",
    )
    args = parser.parse_args()
    logdir = Path(args.logdir)
    size, files = disk_bytes(logdir)
    print(
        f"{logdir}: {files} event files, {size / 2**20:.0f} MiB, "
        f"{size / max(args.steps, 1) / 1024:.1f} KiB per listed step"
    )
    print(
        "| load_fast | steps | all steps listed after (TensorBoard's first answer) "
        "| CPU s of TensorBoard then | RSS loaded | RSS +5 s | peak RSS |"
    )
    print("|---|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        result = measure(
            logdir,
            mode,
            args.steps,
            timeout_s=args.timeout,
            rss_limit_mib=args.rss_limit,
            extra_args=args.tensorboard_arg,
            last_step=args.last_step,
        )
        print(
            f"| `{mode}` | {args.steps:,} | {result['load_s']:.1f} s "
            f"({result['first_answer_s']:.1f} s) | {result['cpu_s']:.1f} s "
            f"| {result['rss_mib']:,.0f} MiB | {result['rss_settled_mib']:,.0f} MiB "
            f"| {result['peak_rss_mib']:,.0f} MiB |",
            flush=True,
        )


if __name__ == "__main__":
    main()
