"""Logging failures never stop training, and what was logged survives."""

from __future__ import annotations

import inspect
import textwrap
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tb_batch_images import BatchImageLogger, read_batches
from tb_batch_images.capture import metadata_keys
from tb_batch_images.host import writer as writer_module

ROOT = Path(__file__).resolve().parents[2]


def _dataset(count: int = 40) -> tf.data.Dataset:
    images = np.random.default_rng(0).uniform(0, 1, (count, 8, 8, 3)).astype("float32")
    names = np.array([f"img_{i}.png" for i in range(count)], dtype=object)
    return tf.data.Dataset.from_tensor_slices(
        ({"image": images, "filename": names}, np.arange(count) % 2)
    ).batch(4)


def _model() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(2, "softmax"),
        ]
    )
    model.compile("sgd", "sparse_categorical_crossentropy", jit_compile=False)
    return model


def _step_after_fit(model: keras.Model):
    """The function under the model's train_step after a fit with the logger: the
    logger's capture is gone; what stays is the original step, or (once the model met
    the logger) `metadata_keys.keep_stripping`'s wrapper around it, which only takes
    `sample_id`/`filename` out of `x` (keras.io's evaluate/predict after fit)."""
    step = model.train_step
    if getattr(step, metadata_keys.STRIPPER, False):
        step = inspect.getclosurevars(step).nonlocals["step"]
    return step.__func__


def _our_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "tb_batch_images" in str(w.message)]


def test_unwritable_log_dir_warns_once_and_training_completes(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = _model().fit(
            _dataset(),
            epochs=2,
            verbose=0,
            callbacks=[
                BatchImageLogger(
                    str(blocker / "logs"),
                    every_n_steps=1,
                    max_queue=1000,
                    sample_stats=False,  # no data map to say it is off
                )
            ],
        )
    assert len(history.history["loss"]) == 2
    messages = _our_warnings(caught)
    assert len(messages) == 1, messages
    assert "could not write" in messages[0] and "training goes on" in messages[0]


def test_a_writer_failing_mid_run_warns_once_and_keeps_what_was_written(
    tmp_path, monkeypatch
):
    real_write = writer_module.write_pack
    calls = {"batches": 0}

    def failing_write(path, pack):
        calls["batches"] += 1
        if calls["batches"] > 3:
            raise OSError(28, "No space left on device")
        return real_write(path, pack)

    monkeypatch.setattr(writer_module, "write_pack", failing_write)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = _model().fit(
            _dataset(),
            epochs=2,
            verbose=0,
            callbacks=[
                BatchImageLogger(
                    str(tmp_path),
                    every_n_steps=1,
                    max_queue=1000,
                    sample_stats=False,  # no data map to say it is off
                )
            ],
        )
    assert len(history.history["loss"]) == 2
    messages = _our_warnings(caught)
    assert len(messages) == 1 and "No space left" in messages[0]
    batches = list(read_batches(str(tmp_path)))
    assert [b.step for b in batches] == [0, 1, 2]


def test_status_records_count_what_was_dropped(tmp_path, monkeypatch):
    real_write = writer_module.write_step

    def failing_write(summary_writer, run_dir, writer_id, step, elements, **kwargs):
        if step % 2:
            raise OSError("flaky storage")
        return real_write(summary_writer, run_dir, writer_id, step, elements, **kwargs)

    monkeypatch.setattr(writer_module, "write_step", failing_write)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _model().fit(
            _dataset(),
            epochs=1,
            verbose=0,
            callbacks=[
                BatchImageLogger(str(tmp_path), every_n_steps=1, max_queue=1000)
            ],
        )
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorboard.util import tensor_util

    from tb_batch_images import contract as fmt

    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance={fmt.PLUGIN_NAME: 0}
    )
    multiplexer.AddRunsFromDirectory(str(tmp_path))
    multiplexer.Reload()
    events = multiplexer.Tensors("train", fmt.STATUS_TAG)
    status = fmt.decode_record(tensor_util.make_ndarray(events[-1].tensor_proto)[0])
    assert status["batches_written"] == 5
    assert status["dropped"]["error"] == 5
    assert any("flaky storage" in w for w in status["warnings"])
    assert [b.step for b in read_batches(str(tmp_path))] == [0, 2, 4, 6, 8]


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path, monkeypatch):
    real_write = writer_module.write_step

    def slow_write(*args, **kwargs):
        import time

        time.sleep(0.3)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(writer_module, "write_step", slow_write)
    with pytest.warns(RuntimeWarning, match="dropped"):
        _model().fit(
            _dataset(),
            epochs=1,
            verbose=0,
            callbacks=[BatchImageLogger(str(tmp_path), every_n_steps=1, max_queue=1)],
        )
    batches = list(read_batches(str(tmp_path)))
    assert 1 <= len(batches) < 10
    assert batches[-1].record["dropped"]["queue_full"] > 0


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import keras, numpy as np
    from tb_batch_images import BatchImageLogger
    from tests.host.test_faults import _dataset, _model

    class KillAt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print("flushed epoch", epoch, flush=True)
        def on_train_batch_end(self, batch, logs=None):
            if self.params and batch == 4 and self.model.optimizer.iterations >= 15:
                os.kill(os.getpid(), signal.SIGKILL)

    _model().fit(_dataset(), epochs=3, verbose=0, callbacks=[
        BatchImageLogger(sys.argv[1], every_n_steps=1, max_queue=1000), KillAt()])
    """
)


def test_sigkill_keeps_every_batch_flushed_before_the_kill(tmp_path, run_python):
    result = run_python(["-c", KILL_SCRIPT, str(tmp_path)], cwd=ROOT)
    assert result.returncode == -9, result.stderr[-3000:]
    assert "flushed epoch 0" in result.stdout
    batches = list(read_batches(str(tmp_path)))
    steps = [b.step for b in batches]
    # Epoch 0 (steps 0-9) was flushed at its end: every batch of it reads back,
    # complete, even though the last event file was cut off mid-run; every step
    # listed has its pack file (an entry is written only after its pack).
    assert steps[:10] == list(range(10))
    assert steps == list(range(len(steps)))
    assert all(b.error is None and len(b.samples) == 4 for b in batches)


KILL_BETWEEN_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from tb_batch_images import BatchImageLogger
    from tb_batch_images.host import writer
    from tests.host.test_faults import _dataset, _model

    real_entry = writer.write_index_entry

    def entry_then_die(event_file, step, entry):
        if step == 12:  # its pack is written and closed; its entry never is
            print("pack 12 written", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        real_entry(event_file, step, entry)

    writer.write_index_entry = entry_then_die
    _model().fit(_dataset(), epochs=3, verbose=0, callbacks=[
        BatchImageLogger(sys.argv[1], every_n_steps=1, max_queue=1000)])
    """
)


@pytest.mark.parametrize("load_fast", [False, True], ids=["false", "true"])
def test_a_kill_between_a_pack_and_its_entry_leaves_an_unnamed_pack_only(
    tmp_path, run_python, plugin_server, load_fast
):
    """Format version 3 writes a step's pack, closes it, then its entry: a process
    killed in between leaves a pack no entry names, and every listed step whole."""
    result = run_python(["-c", KILL_BETWEEN_SCRIPT, str(tmp_path)], cwd=ROOT)
    assert result.returncode == -9, result.stderr[-3000:]
    assert "pack 12 written" in result.stdout
    packs = sorted((tmp_path / "train").rglob("*.pack"))
    assert [p.name for p in packs] == [f"{step:012d}.pack" for step in range(13)]
    batches = list(read_batches(str(tmp_path)))
    assert [b.step for b in batches] == list(range(12))
    assert all(b.error is None and len(b.samples) == 4 for b in batches)
    server = plugin_server(tmp_path, load_fast)
    server.wait_for_steps({"train": 12})
    for step in (0, 11):
        batch = server.json("/samples", run="train", step=step)
        assert batch["lost"] is None and len(batch["samples"]) == 4


INTERRUPT_SCRIPT = textwrap.dedent(
    """
    import sys
    import keras
    from tb_batch_images import BatchImageLogger
    from tests.host.test_faults import _dataset, _model

    class InterruptAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 6:
                raise KeyboardInterrupt

    _model().fit(_dataset(), epochs=1, verbose=0, callbacks=[
        BatchImageLogger(sys.argv[1], every_n_steps=1, max_queue=1000), InterruptAt()])
    """
)


def test_keyboard_interrupt_keeps_what_was_logged(tmp_path, run_python):
    result = run_python(["-c", INTERRUPT_SCRIPT, str(tmp_path)], cwd=ROOT)
    assert result.returncode != 0 and "KeyboardInterrupt" in result.stderr
    assert [b.step for b in read_batches(str(tmp_path))] == list(range(7))


def test_an_error_inside_fit_restores_the_model(tmp_path):
    model = _model()
    original_step = model.train_step

    class Explode(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 3:
                self.model.stop_training = True
                raise RuntimeError("boom")

    logger = BatchImageLogger(str(tmp_path), every_n_steps=1, max_queue=1000)
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(_dataset(), epochs=1, verbose=0, callbacks=[logger, Explode()])
    # The next fit, without the logger, trains normally on the same data.
    model.fit(
        _dataset().map(lambda x, y: (x["image"], y)),
        epochs=1,
        verbose=0,
    )
    assert _step_after_fit(model) is original_step.__func__
    assert [b.step for b in read_batches(str(tmp_path))][:3] == [0, 1, 2]


def test_after_fit_the_model_trains_and_evaluates_without_the_logger(tmp_path):
    model = _model()
    original_step = model.train_step
    logger = BatchImageLogger(str(tmp_path), every_n_steps=1, max_queue=1000)
    model.fit(_dataset(), epochs=1, verbose=0, callbacks=[logger])
    assert _step_after_fit(model) is original_step.__func__
    plain = _dataset().map(lambda x, y: (x["image"], y))
    model.evaluate(plain, verbose=0)  # a bare image tensor, as the model expects
    model.fit(plain, epochs=1, verbose=0)
    assert [b.step for b in read_batches(str(tmp_path))] == list(range(10))
    # and the same logger can log a second fit, continuing the step count
    model.fit(_dataset(), epochs=1, verbose=0, callbacks=[logger])
    steps = [b.step for b in read_batches(str(tmp_path))]
    assert steps == list(range(10)) + list(range(20, 30))
