"""Log dirs on any tf.io.gfile filesystem: ram:// (in-process, non-local) end to end."""

from __future__ import annotations

import uuid

import keras
import numpy as np
import tensorflow as tf

from tb_batch_images import BatchImageLogger, read_batches


def test_ram_filesystem_write_read_and_serve(plugin_server):
    logdir = f"ram://tbbi-{uuid.uuid4().hex}/logs"
    images = np.random.default_rng(0).uniform(0, 1, (24, 8, 8, 3)).astype("float32")
    names = np.array([f"remote_{i}.png" for i in range(24)], dtype=object)
    dataset = tf.data.Dataset.from_tensor_slices(
        ({"image": images, "filename": names}, np.arange(24) % 2)
    ).batch(6)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(2, "softmax"),
        ]
    )
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(
        dataset,
        epochs=2,
        verbose=0,
        validation_data=dataset.take(1),
        callbacks=[
            keras.callbacks.TensorBoard(f"{logdir}/exp"),
            BatchImageLogger(f"{logdir}/exp", every_n_steps=2, max_queue=100),
        ],
    )
    assert tf.io.gfile.glob(f"{logdir}/exp/train/events.out.tfevents.*")

    batches = list(read_batches(logdir))
    train = [b for b in batches if b.run == "exp/train"]
    assert [b.step for b in train] == [0, 2, 4, 6]
    assert [s.filename for s in train[0].samples] == [
        f"remote_{i}.png" for i in range(6)
    ]
    for sample in train[0].samples:
        index = int(sample.filename.removeprefix("remote_").removesuffix(".png"))
        expected = np.round(images[index] * 255)
        np.testing.assert_allclose(sample.image, expected, atol=1)
    assert [b.run for b in batches if b.mode == "validation"] == ["exp/validation"] * 2

    # The plugin reads the same remote log dir through TensorBoard's own loader.
    server = plugin_server(logdir, load_fast=False)
    steps = server.json("/steps", run="exp/train")["steps"]
    assert [s["step"] for s in steps] == [0, 2, 4, 6]
    batch = server.json("/samples", run="exp/train", step=0)
    assert [s["filename"] for s in batch["samples"]] == [
        f"remote_{i}.png" for i in range(6)
    ]
    image = server.get("/image", key=batch["samples"][0]["image"])
    assert image.status_code == 200 and image.data[:8] == b"\x89PNG\r\n\x1a\n"
