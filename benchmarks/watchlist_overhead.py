"""Training overhead of the watchlist: fit() with the data map, watchlist on and off.

The CNN of `benchmarks/overhead.py` (64x64x3, batch 64, tf.data from memory), the
batches carrying an integer `sample_id`. Each round trains one fresh model per
configuration, interleaved in one process; the script reports the median of the
per-round ratios to `stats` (the data map on, `watchlist=0`).

    .venv/bin/python -m benchmarks.watchlist_overhead --rounds 5 --epochs 4

Configurations: `baseline` (no logger), `stats` (`every_n_steps=0`, data map on,
watchlist off), `watchlist_32` (the same with the default `watchlist=32`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


from benchmarks.overhead import dataset, make_images, timed_fit  # noqa: E402
from tb_batch_images import BatchImageLogger, read_batches  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=1280)
    args = parser.parse_args()

    images = make_images(args.samples, "shapes")
    plain, with_ids = dataset(images, False), dataset(images, True)
    logdir = tempfile.mkdtemp(prefix="tbbi_watchlist_")

    def logger(name: str, run: int, watchlist: int) -> BatchImageLogger:
        return BatchImageLogger(
            f"{logdir}/{name}_{run}",
            every_n_steps=0,
            num_samples=args.samples,
            watchlist=watchlist,
        )

    configs = {
        "baseline": lambda run: None,
        "stats": lambda run: logger("stats", run, 0),
        "watchlist_32": lambda run: logger("watchlist_32", run, 32),
    }
    timed_fit(plain, 1, None)  # warm-up
    timed_fit(with_ids, 1, configs["watchlist_32"]("warmup"))
    times: dict[str, list[float]] = {name: [] for name in configs}
    for run in range(args.rounds):
        for name, make in configs.items():
            data = plain if name == "baseline" else with_ids
            times[name].append(timed_fit(data, args.epochs, make(run)))
        print(
            f"round {run + 1}: "
            + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items())
        )
    captured = [
        len(batch.samples)
        for batch in read_batches(f"{logdir}/watchlist_32_0", watchlist=True)
    ]
    for name in configs:
        ratios = [t / s for t, s in zip(times[name], times["stats"], strict=True)]
        print(
            f"{name}: median fit {statistics.median(times[name]):.2f}s, ratio to stats "
            f"{statistics.median(ratios):.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f})"
        )
    print(f"watchlist captures per epoch (round 1): {captured}")


if __name__ == "__main__":
    main()
