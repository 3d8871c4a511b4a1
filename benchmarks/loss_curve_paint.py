"""First paint of the loss curve of a 1,000,000-step run, in a real browser.

Writes a log directory the way the logger does (`contract.encode_composition` blocks of
1,000 steps with 16 sample ids each, a few logged batches, one spike), starts the real
`tensorboard` on it (127.0.0.1, a free port), waits until `/loss_curve` answers every
step (the plugin reads and decodes every block once: "cold answer"), times the route
warm, then opens the Batch Images tab in headless Chromium `--repeats` times, each in
a fresh page, and measures from the gallery's `/loss_curve` request to the curve drawn
(`.loss-canvas[data-drawn]`), and from `page.goto`.

    CHROMIUM=/usr/bin/chromium .venv/bin/python -m benchmarks.loss_curve_paint /tmp/curve1m --steps 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

import numpy as np

from benchmarks.first_paint import _get
from benchmarks.plugin_latency import start_tensorboard
from tb_batch_images import contract

BLOCK = 1000
WIDTH = 16


def write_logdir(logdir: str, steps: int) -> None:
    """A train run: `steps` steps of composition, a batch every 100,000 steps."""
    import tensorflow as tf

    from tb_batch_images.host.writer import write_summary

    run = os.path.join(logdir, "big", "train")
    writer = tf.summary.create_file_writer(run, max_queue=100, flush_millis=60_000)
    rng = np.random.default_rng(0)
    spike = steps // 2 + 123
    for first in range(0, steps, BLOCK):
        n = min(BLOCK, steps - first)
        step_numbers = np.arange(first, first + n)
        losses = (2.0 / np.sqrt(1 + step_numbers / 1000)).astype(np.float32)
        losses *= rng.uniform(0.8, 1.2, n).astype(np.float32)
        triggers = np.zeros(n, np.uint8)
        if first <= spike < first + n:
            losses[spike - first] = 50.0
            triggers[spike - first] = 2
        ids = ((step_numbers[:, None] * WIDTH + np.arange(WIDTH)) % 50_000).astype(
            np.int32
        )
        elements = contract.encode_composition(step_numbers, losses, triggers, ids)
        with writer.as_default():
            tf.summary.write(
                tag=contract.COMPOSITION_TAG,
                tensor=tf.constant(elements, dtype=tf.string),
                step=first,
                metadata=contract.summary_metadata(contract.SERIES_COMPOSITION),
            )
    writer.flush()
    record = {
        "mode": "train",
        "step": 0,
        "epoch": 0,
        "batch": 0,
        "wall_time": time.time(),
        "sequence": 0,
        "batch_size": WIDTH,
        "samples_logged": 0,
        "selection": "first",
        "replica": 0,
        "num_replicas": 1,
        "task": "raw",
        "input_shape": [4, 4, 3],
        "input_dtype": "float32",
        "input_layout": "HWC",
        "image_format": "png",
        "dropped": {},
        "samples": [],
        "trigger": "schedule",
    }
    for step in range(0, steps, 100_000):
        record = {**record, "step": step}
        write_summary(
            writer,
            contract.BATCHES_TAG,
            contract.SERIES_BATCHES,
            step,
            [contract.encode_record(dict(record))],
        )
    writer.close()


def paint_once(browser, base: str) -> dict:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    asked: list[float] = []
    start = time.perf_counter()
    page.on(
        "request",
        lambda r: (
            asked.append(time.perf_counter() - start)
            if "/loss_curve" in r.url
            else None
        ),
    )
    page.goto(base + "/#batch_images")
    frame = page.wait_for_selector(
        "iframe[src*='plugin_entry.html?name=batch_images']", timeout=600_000
    ).content_frame()
    frame.wait_for_selector(
        ".loss-canvas[data-drawn]", state="attached", timeout=600_000
    )
    painted = time.perf_counter() - start
    drawn = int(frame.get_attribute(".loss-canvas", "data-drawn"))
    page.close()
    return {
        "curve_painted_after_goto_ms": round(painted * 1e3),
        "curve_painted_after_request_ms": round((painted - asked[0]) * 1e3),
        "buckets_drawn": drawn,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir")
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--load-fast", default="false", choices=("false", "true"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    if not os.path.isdir(os.path.join(args.logdir, "big")):
        start = time.perf_counter()
        write_logdir(args.logdir, args.steps)
        print(f"wrote in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    process, base = start_tensorboard(args.logdir, args.load_fast)
    result: dict = {"steps": args.steps, "load_fast": args.load_fast}
    try:
        start = time.perf_counter()
        while True:
            try:
                answer = _get(base, "/loss_curve", run="big/train", buckets=1000)
                if answer["total_steps"] >= args.steps:
                    break
            except OSError:
                pass
            time.sleep(1)
        result["loaded_and_cold_answer_s"] = round(time.perf_counter() - start, 1)
        warm = []
        for _ in range(5):
            start = time.perf_counter()
            _get(base, "/loss_curve", run="big/train", buckets=1350)
            warm.append((time.perf_counter() - start) * 1e3)
        result["route_warm_ms_median"] = round(statistics.median(warm))
        start = time.perf_counter()
        _get(base, "/composition", run="big/train", step=args.steps // 2 + 123)
        result["composition_step_ms"] = round((time.perf_counter() - start) * 1e3)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium,
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
            )
            paints = [paint_once(browser, base) for _ in range(args.repeats)]
            browser.close()
        result["paints"] = paints
        result["curve_painted_after_request_ms_median"] = statistics.median(
            p["curve_painted_after_request_ms"] for p in paints
        )
        result["load_average"] = os.getloadavg()[0]
    finally:
        process.terminate()
        process.wait(30)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
