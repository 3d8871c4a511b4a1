"""The background writer keeps up with every-batch logging, and counts what it drops.

Real fits of a small CNN with the real `BatchImageLogger`; what was written is read back
from the event files (`read_batches` and the logger's status record), never taken from
the logger's own counters.
"""

from __future__ import annotations

import io
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.util import tensor_util

from tb_batch_images import BatchImageLogger, read_batches
from tb_batch_images import contract as fmt
from tb_batch_images.host import pixels

BATCH = 16
SIDE = 32


def _dataset(steps: int) -> tf.data.Dataset:
    """`steps` batches of 16 noisy 32x32 pictures (PNG cannot shrink noise much)."""
    count = steps * BATCH
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (count, SIDE, SIDE, 3)).astype("float32")
    return tf.data.Dataset.from_tensor_slices(
        ({"image": images, "sample_id": np.arange(count)}, np.arange(count) % 3)
    ).batch(BATCH)


def _cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((SIDE, SIDE, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", jit_compile=False)
    return model


def _status(logdir) -> dict:
    """The logger's last status record of the train run, read from the event files."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance={fmt.PLUGIN_NAME: 0}
    )
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    events = multiplexer.Tensors("train", fmt.STATUS_TAG)
    return fmt.decode_record(tensor_util.make_ndarray(events[-1].tensor_proto)[0])


def _fit(logdir, steps: int, **logger_options) -> list[str]:
    """One epoch of `steps` steps, every batch logged; returns our warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _cnn().fit(
            _dataset(steps),
            epochs=1,
            verbose=0,
            callbacks=[
                BatchImageLogger(
                    str(logdir),
                    every_n_steps=1,
                    samples_per_batch=BATCH,
                    sample_stats=False,  # these tests are about the writer
                    **logger_options,
                )
            ],
        )
    return [str(w.message) for w in caught if "tb_batch_images" in str(w.message)]


def test_an_every_batch_fit_writes_every_batch_and_drops_none(tmp_path):
    """Every batch of a fit is written, in order, each once, and the status counts
    them. The queue holds the whole epoch: whether the writer keeps up with the
    default queue is a question of speed, answered by benchmarks/overhead.py ("A
    writer that keeps up"), not by a test on a shared machine."""
    steps = 60
    messages = _fit(tmp_path, steps, max_queue=steps)
    assert messages == []
    assert [batch.step for batch in read_batches(str(tmp_path))] == list(range(steps))
    status = _status(tmp_path)
    assert status["batches_written"] == steps
    assert status["dropped"] == {"queue_full": 0, "error": 0, "not_image": 0}


def test_a_slow_writer_drops_batches_counts_them_and_says_so(tmp_path, monkeypatch):
    real_encode = pixels.encode

    def slow_encode(*args, **kwargs):
        time.sleep(0.01)  # 16 images: 160 ms a batch, far slower than a step
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(pixels, "encode", slow_encode)
    steps = 40
    messages = _fit(tmp_path, steps, max_queue=2)
    assert len(messages) == 1 and "batches are being dropped" in messages[0]
    written = list(read_batches(str(tmp_path)))
    status = _status(tmp_path)
    dropped = status["dropped"]["queue_full"]
    assert 0 < len(written) < steps and dropped > 0
    # Every step is accounted for: written or counted as dropped, nothing lost silently.
    assert status["batches_written"] == len(written)
    assert len(written) + dropped == steps
    assert any("dropped" in text for text in status["warnings"])
    # Each record carries the running count of what was dropped before it.
    counts = [batch.record["dropped"]["queue_full"] for batch in written]
    assert counts == sorted(counts) and counts[-1] > 0


@pytest.mark.parametrize(
    "shape",
    [(1, 1, 1), (5, 3, 1), (7, 9, 2), (13, 1, 3), (1, 17, 3), (31, 33, 3), (6, 5, 4)],
)
def test_our_png_encoder_writes_pngs_pillow_decodes_to_the_same_pixels(shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    image[0, 0] = 0
    image[-1, -1] = 255  # both extremes: the "up" filter wraps modulo 256
    decoded = Image.open(io.BytesIO(pixels.encode_png(image)))
    decoded.load()
    assert decoded.format == "PNG"
    assert decoded.mode == {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[shape[2]]
    restored = np.asarray(decoded).reshape(shape)
    np.testing.assert_array_equal(restored, image)


def test_encode_keeps_the_size_limit_and_shape_it_reports():
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (300, 150, 3), dtype=np.uint8)
    encoded, shape = pixels.encode(big, 64, "png")
    decoded = np.asarray(Image.open(io.BytesIO(encoded)))
    assert shape == [64, 32, 3] and decoded.shape == (64, 32, 3)
    five = rng.integers(0, 256, (8, 8, 5), dtype=np.uint8)  # first three channels
    encoded, shape = pixels.encode(five, 64, "png")
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(encoded))), five[..., :3]
    )
    assert shape == [8, 8, 3]
