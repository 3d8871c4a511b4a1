"""Trains two demo runs with BatchImageLogger, then serves TensorBoard on 127.0.0.1.

    python -m demo [--port 6006] [--data-dir DIR] [--no-serve]

Everything is offline: the dataset is drawn procedurally (or read from --data-dir, a
folder with one sub-folder per class). The two runs differ in one thing: `augmented`
flips and jitters its images in the tf.data pipeline, `plain` does not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent


def log(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--port", type=int, default=6006, help="TensorBoard port (127.0.0.1)"
    )
    parser.add_argument(
        "--logdir", default="demo_logs", help="where the runs are written"
    )
    parser.add_argument(
        "--data-dir", help="your own images: a folder with one sub-folder per class"
    )
    parser.add_argument(
        "--work-dir", default=str(ROOT / "data"), help="where the generated images go"
    )
    parser.add_argument(
        "--per-class", type=int, default=160, help="generated images per class"
    )
    parser.add_argument(
        "--wrong-fraction", type=float, default=0.05, help="labels made wrong"
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--every-n-steps", type=int, default=5)
    parser.add_argument("--no-serve", action="store_true", help="train, then exit")
    return parser.parse_args(argv)


def build_dataset(paths, labels, image_size: int, augment: bool, seed: int):
    import tensorflow as tf

    path_table = tf.constant(paths)

    def load(sample_id, label):
        data = tf.io.read_file(path_table[sample_id])
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image = tf.image.resize(image, (image_size, image_size)) / 255.0
        if augment:
            image = tf.image.random_flip_left_right(image)
            image = tf.image.random_flip_up_down(image)
            image = tf.image.random_brightness(image, 0.15)
            image = tf.clip_by_value(image, 0.0, 1.0)
        return {"image": image, "sample_id": sample_id}, label

    ids = tf.range(len(paths), dtype=tf.int64)
    dataset = tf.data.Dataset.from_tensor_slices((ids, tf.constant(labels, tf.int64)))
    dataset = dataset.shuffle(len(paths), seed=seed).map(load, tf.data.AUTOTUNE)
    return dataset.batch(32).prefetch(tf.data.AUTOTUNE)


def build_model(image_size: int, classes: int):
    import keras

    model = keras.Sequential(
        [
            keras.Input((image_size, image_size, 3)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(3e-3),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class Progress:
    """Prints one line per epoch (keras' progress bar is noisy in logs)."""

    def __new__(cls, run: str, epochs: int):
        import keras

        class _Progress(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                log(
                    f"  {run}: epoch {epoch + 1}/{epochs} loss {logs.get('loss', 0):.3f} "
                    f"accuracy {logs.get('accuracy', 0):.2f} "
                    f"val_accuracy {logs.get('val_accuracy', 0):.2f}"
                )

        return _Progress()


def train(args: argparse.Namespace) -> Path:
    import keras

    from demo import dataset as demo_data
    from tb_batch_images import BatchImageLogger

    if args.data_dir:
        paths, labels, class_names = demo_data.read_folder(Path(args.data_dir))
        log(
            f"using {len(paths)} images in {len(class_names)} classes from {args.data_dir}"
        )
    else:
        log(
            f"drawing {args.per_class * len(demo_data.CLASSES)} images into {args.work_dir}"
        )
        paths, labels, wrong = demo_data.make_dataset(
            Path(args.work_dir), args.per_class, args.wrong_fraction
        )
        class_names = list(demo_data.CLASSES)
        log(f"{len(wrong)} labels are deliberately wrong (listed in mislabelled.txt)")

    logdir = Path(args.logdir)
    if logdir.exists():
        shutil.rmtree(logdir)
    validation_ids = list(range(0, len(paths), 10))
    started = time.time()
    for run, augment in (("augmented", True), ("plain", False)):
        keras.utils.set_random_seed(0)
        log(f"training run '{run}' ({'with' if augment else 'without'} augmentation)")
        train_data = build_dataset(paths, labels, args.image_size, augment, seed=1)
        validation = build_dataset(
            [paths[i] for i in validation_ids],
            [labels[i] for i in validation_ids],
            args.image_size,
            augment=False,
            seed=2,
        )
        model = build_model(args.image_size, len(class_names))
        model.fit(
            train_data,
            validation_data=validation,
            epochs=args.epochs,
            verbose=0,
            callbacks=[
                keras.callbacks.TensorBoard(str(logdir / run)),
                BatchImageLogger(
                    str(logdir / run),
                    every_n_steps=args.every_n_steps,
                    samples_per_batch=32,
                    filenames=[os.path.relpath(p) for p in paths],
                    class_names=class_names,
                ),
                Progress(run, args.epochs),
            ],
        )
    log(f"trained both runs in {time.time() - started:.0f}s; logs in {logdir}")
    return logdir


def serve(logdir: Path, port: int) -> None:
    command = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(logdir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    log("starting TensorBoard (Ctrl-C to stop)")
    log(f"open http://127.0.0.1:{port}/#batch_images")
    try:
        subprocess.run(command, check=False)
    except KeyboardInterrupt:
        log("stopped")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logdir = train(args)
    if not args.no_serve:
        serve(logdir, args.port)


if __name__ == "__main__":
    main()
