"""Log dirs on any tf.io.gfile filesystem, end to end: ram:// (in-process) and gs://.

`gs://` is a bucket of fake-gcs-server on 127.0.0.1, reached by TensorFlow's own GCS
client through a TLS-terminating proxy (`tests/fixtures/gcs.py`): the logger writes
its event files and pack files there, `read_batches` and TensorBoard (`--load_fast=false`,
in the test process and as the real `tensorboard` command) read them back. TensorBoard's
Rust data server (`--load_fast=true`) cannot be pointed at an emulator (its GCS
endpoints are compiled in, and it trusts only its bundled roots), so `true` on gs://
is not tested here.
"""

from __future__ import annotations

import uuid
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tb_batch_images import BatchImageLogger, read_batches
from tb_batch_images import contract as fmt


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


def _fit(logdir: str, images: np.ndarray, names: np.ndarray, epochs: int = 2) -> None:
    dataset = tf.data.Dataset.from_tensor_slices(
        ({"image": images, "filename": names}, np.arange(len(images)) % 2)
    ).batch(6)
    model = keras.Sequential(
        [
            keras.Input(images.shape[1:]),
            keras.layers.Flatten(),
            keras.layers.Dense(2, "softmax"),
        ]
    )
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(
        dataset,
        epochs=epochs,
        verbose=0,
        callbacks=[BatchImageLogger(logdir, every_n_steps=1, max_queue=100)],
    )


def _gcs_pack(path: str) -> list[bytes]:
    with tf.io.gfile.GFile(path, "rb") as file:
        return fmt.decode_pack(file.read())


def test_gcs_logdir_written_by_a_fit_is_read_and_served(
    gcs_bucket: str, plugin_server: Any, tensorboard: Any, tmp_path: Any
):
    logdir = f"{gcs_bucket}/logs-{uuid.uuid4().hex[:8]}"
    images = np.random.default_rng(1).uniform(0, 1, (24, 8, 8, 3)).astype("float32")
    names = np.array([f"gcs_{i}.png" for i in range(24)], dtype=object)
    _fit(f"{logdir}/exp", images, names)  # 2 epochs of 4 steps, every step logged

    run_dir = f"{logdir}/exp/train"
    assert tf.io.gfile.glob(f"{run_dir}/events.out.tfevents.*")
    packs = sorted(tf.io.gfile.glob(f"{run_dir}/plugins/batch_images/*/000000/*.pack"))
    assert [p.rsplit("/", 1)[1] for p in packs] == [
        f"{step:012d}.pack" for step in range(8)
    ]

    # read_batches: event files and packs through tf.io.gfile, pixels as trained on.
    train = [b for b in read_batches(logdir) if b.run == "exp/train"]
    assert [b.step for b in train] == list(range(8))
    for batch in train:
        assert batch.error is None and len(batch.samples) == 6
        for sample in batch.samples:
            index = int(sample.filename.removeprefix("gcs_").removesuffix(".png"))
            np.testing.assert_allclose(
                sample.image, np.round(images[index] * 255), atol=1
            )

    # TensorBoard's Python loader on gs://: steps from the entries, pictures from the
    # pack objects.
    server = plugin_server(logdir, load_fast=False)
    server.wait_for_steps({"exp/train": 8})
    steps = server.json("/steps", run="exp/train")["steps"]
    assert [s["step"] for s in steps] == list(range(8))
    batch = server.json("/samples", run="exp/train", step=5)
    assert batch["lost"] is None
    elements = _gcs_pack(packs[5])
    for index, sample in enumerate(batch["samples"]):
        response = server.get("/image", key=sample["image"])
        assert response.status_code == 200
        assert response.data == elements[1 + index]

    # A pack gone from the bucket costs that step's pictures, nothing else.
    tf.io.gfile.remove(packs[3])
    fresh = plugin_server(logdir, load_fast=False)  # nothing cached
    fresh.wait_for_steps({"exp/train": 8})
    lost = fresh.json("/samples", run="exp/train", step=3)
    assert (
        "missing" in lost["lost"] and [s["lost"] for s in lost["samples"]] == [True] * 6
    )
    assert fresh.json("/samples", run="exp/train", step=4)["lost"] is None
    assert [b.step for b in read_batches(logdir) if b.error] == [3]

    # The real `tensorboard` command on gs:// (it inherits the emulator's settings).
    board = tensorboard(tmp_path / "unused", "--logdir", logdir, "--load_fast", "false")
    board.wait_until(lambda: board.steps_kept().get("exp/train") == 8)
    batch = board.json("/samples", run="exp/train", step=7)
    status, content_type, body, _ = board.get(
        f"/data/plugin/{fmt.PLUGIN_NAME}/image", key=batch["samples"][0]["image"]
    )
    assert (status, content_type) == (200, "image/png")
    assert body == _gcs_pack(packs[7])[1]
