"""The watchlist: each top suspect's picture, captured in the step as it trains.

The rig's images encode their sample id in their pixels, and a recorder layer at the
bottom of the model writes, inside the compiled step, the ids of every training batch.
After each epoch the logger watches the top suspects of that epoch's statistics; the
test reads the watchlist record of the next epoch from the event files and checks that
it holds exactly those samples, each picture showing its own id, with its label,
prediction and loss, at the batch and position where the recorder saw it trained. A
negative control (attribution moved by one step) must fail. Runs on every backend
(`make test` runs this file under JAX and PyTorch too).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tb_batch_images import BatchImageLogger, read_batches, read_sample_stats
from tb_batch_images import contract as fmt
from tests.fixtures import rig

BACKEND = keras.backend.backend()
SAMPLES = 60
BATCH = 8
STEPS_PER_EPOCH = -(-SAMPLES // BATCH)  # 8, the last one short
EPOCHS = 3
WATCHED = 10

COMPILES = (
    [{"jit_compile": False}, {"jit_compile": True, "steps_per_execution": 4}]
    if BACKEND == "tensorflow"
    else [{"jit_compile": True, "steps_per_execution": 4}]
    if BACKEND == "jax"
    else [{"jit_compile": False}]  # torch: Keras refuses steps_per_execution > 1
)


def _labels() -> np.ndarray:
    labels = np.array([rig.label_of(i) for i in range(SAMPLES)])
    labels[::7] = (labels[::7] + 1) % rig.CLASSES  # wrong labels: real suspects
    return labels


def _train(log_dir, compile_options, watchlist=WATCHED, batch_size=BATCH):
    keras.utils.set_random_seed(0)
    images = np.stack([rig.raw_image(i) for i in range(SAMPLES)])
    steps = EPOCHS * -(-SAMPLES // batch_size)
    recorder = rig.Recorder(capacity=steps + 4, max_batch=batch_size)
    model = rig.make_model(recorder)
    model.compile("adam", "sparse_categorical_crossentropy", **compile_options)
    logger = BatchImageLogger(
        str(log_dir),
        every_n_steps=0,
        filenames=[rig.filename_of(i) for i in range(SAMPLES)],
        watchlist=watchlist,
    )
    ids = np.arange(SAMPLES)
    model.fit(
        {"image": images, "sample_id": ids},
        _labels(),
        batch_size=batch_size,
        epochs=EPOCHS,
        shuffle=True,
        validation_data=({"image": images[:16], "sample_id": ids[:16]}, _labels()[:16]),
        verbose=0,
        callbacks=[logger],
    )
    return recorder.history()


def _check(batches, stats, history, shift=0) -> int:
    """Asserts each watchlist record holds the last epoch's top suspects, trained
    where the record says; returns the samples checked."""
    checked = 0
    labels = _labels()
    for batch in batches:
        epoch = batch.epoch
        watched = stats[epoch - 1].suspects(WATCHED)
        assert sorted(s.sample_id for s in batch.samples) == sorted(watched)
        for sample in batch.samples:
            sample_id = rig.decode_id(sample.image)
            assert sample_id == sample.sample_id, "the picture is another sample's"
            assert sample.filename == rig.filename_of(sample_id)
            step = epoch * STEPS_PER_EPOCH + sample.record["batch"] + shift
            trained_ids, _ = history[step]
            assert trained_ids[sample.position] == sample_id, (
                f"epoch {epoch} batch {sample.record['batch']}: logged {sample_id} "
                f"at position {sample.position}, trained {trained_ids}"
            )
            assert sample.label == labels[sample_id]
            probabilities = {e["class"]: e["probability"] for e in sample.top_k}
            assert sample.prediction == max(probabilities, key=probabilities.get)
            expected = -np.log(max(probabilities[sample.label], 1e-7))
            assert sample.loss == rig.pytest_approx(expected)
            checked += 1
    return checked


@pytest.mark.parametrize(
    "compile_options",
    COMPILES,
    ids=lambda options: "-".join(map(str, options.values())),
)
def test_the_last_epochs_suspects_are_pictured_where_they_next_trained(
    tmp_path, compile_options
):
    history = _train(tmp_path, compile_options)
    stats = read_sample_stats(str(tmp_path)).epochs
    batches = list(read_batches(str(tmp_path), run="train", watchlist=True))
    assert [b.epoch for b in batches] == list(range(1, EPOCHS))  # epoch 0: none yet
    for batch in batches:
        assert batch.record["selection"] == "watchlist" and not batch.warnings
        assert batch.step == stats[batch.epoch].step
    assert _check(batches, stats, history) == WATCHED * (EPOCHS - 1)
    with pytest.raises(AssertionError):
        _check(batches, stats, history, shift=1)  # the negative control
    # The logged batches are unchanged (none are scheduled here), and validation
    # batches never count: every capture was at a training step.
    assert list(read_batches(str(tmp_path), run="train")) == []


def test_one_step_captures_at_most_its_share_of_the_watchlist(tmp_path):
    """Every sample watched, batches of 20: each step copies at most
    CAPTURES_PER_STEP (8) of its 20 watched samples, the first in watchlist order,
    each where it trained; the others wait (here: past the epoch)."""
    from tb_batch_images.capture.watchlist import CAPTURES_PER_STEP

    batch_size = 20
    history = _train(tmp_path, COMPILES[0], watchlist=SAMPLES, batch_size=batch_size)
    batches = list(read_batches(str(tmp_path), run="train", watchlist=True))
    steps_per_epoch = -(-SAMPLES // batch_size)
    assert [b.epoch for b in batches] == list(range(1, EPOCHS))
    for batch in batches:
        per_step: dict[int, int] = {}
        for sample in batch.samples:
            per_step[sample.record["batch"]] = (
                per_step.get(sample.record["batch"], 0) + 1
            )
            step = batch.epoch * steps_per_epoch + sample.record["batch"]
            trained_ids, _ = history[step]
            assert rig.decode_id(sample.image) == sample.sample_id
            assert trained_ids[sample.position] == sample.sample_id
        # Every step had 20 watched samples and captured exactly its 8.
        assert per_step == {b: CAPTURES_PER_STEP for b in range(steps_per_epoch)}


def test_watchlist_0_writes_no_watchlist(tmp_path):
    _train(tmp_path, COMPILES[0], watchlist=0)
    assert list(read_batches(str(tmp_path), run="train", watchlist=True)) == []
    assert read_sample_stats(str(tmp_path)).epochs  # the data map stays on


def test_watchlist_must_be_a_non_negative_int():
    with pytest.raises(ValueError, match="watchlist"):
        BatchImageLogger("logs", watchlist=-1)
    with pytest.raises(ValueError, match="watchlist"):
        BatchImageLogger("logs", watchlist=2.5)


def test_the_plugin_finds_the_watchlist_pictures(tmp_path, plugin_server):
    _train(tmp_path, COMPILES[0])
    stats = read_sample_stats(str(tmp_path)).epochs
    watched = stats[-2].suspects(WATCHED)
    server = plugin_server(tmp_path, False)
    server.wait_for(
        lambda: len(server.json("/sample_stats_runs")["runs"][0]["steps"]) == EPOCHS
    )
    answer = server.json(
        "/sample_pictures", run="train", ids=",".join(map(str, watched))
    )
    for sample_id in watched:
        picture = answer["pictures"][str(sample_id)]
        assert picture["source"] == "watchlist" and picture["tag"] == fmt.WATCHLIST_TAG
        assert picture["epoch"] == EPOCHS - 1 and picture["sample_id"] == sample_id
        image = server.get("/image", key=picture["image"])
        assert image.status_code == 200
        import io

        from PIL import Image

        pixels = np.asarray(Image.open(io.BytesIO(image.data)))
        assert rig.decode_id(pixels) == sample_id
