"""Where the logger's time goes in the label-error benchmark's fit (a ~5 ms step).

`label_errors.model(0)` on MNIST-5k with 20% flipped labels, 8 epochs, fitted plain,
with `BatchImageLogger(every_n_steps=0, num_samples=5000)` (statistics + watchlist) and
with `watchlist=0`, in turns, each fit timed with `overhead.py`'s `StepTimer`: the step
median after the first epoch, the first epoch (the tracing), the time outside steps
(epoch ends) and the whole fit.

    .venv/bin/python -m benchmarks.label_errors_parts --rounds 2
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import numpy as np

from benchmarks import label_errors
from benchmarks.overhead import StepTimer, fit_stats
from tb_batch_images import BatchImageLogger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    images, labels = label_errors.load()
    noisy, _ = label_errors.flip(labels, 0.2, 0)
    with_ids = {"image": images, "sample_id": np.arange(len(images))}
    for round_index in range(args.rounds):
        for name in ("plain", "ours", "ours_watchlist_off"):
            net, timer = label_errors.model(0), StepTimer()
            callbacks = [timer]
            logdir = tempfile.mkdtemp(prefix="label_errors_parts_")
            if name != "plain":
                watched = 0 if name == "ours_watchlist_off" else 32
                callbacks.append(
                    BatchImageLogger(
                        logdir,
                        every_n_steps=0,
                        num_samples=len(images),
                        watchlist=watched,
                    )
                )
            start = time.perf_counter()
            net.fit(
                images if name == "plain" else with_ids,
                noisy,
                batch_size=label_errors.BATCH,
                epochs=args.epochs,
                verbose=0,
                callbacks=callbacks,
            )
            stats = fit_stats(timer, time.perf_counter() - start)
            shutil.rmtree(logdir, ignore_errors=True)
            print(
                f"round {round_index + 1} {name}: step median {stats['median_ms']:.2f} ms, "
                f"first epoch {stats['first_epoch_s']:.2f} s, outside steps "
                f"{stats['outside_s']:.2f} s, fit {stats['fit_s']:.2f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
