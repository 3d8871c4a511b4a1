"""Every Keras 3 backend: scale-out on keras.distribution, and setups the logger cannot
handle leave fit() running.

Runs under each KERAS_BACKEND (`make test` runs it once per backend); tests that need
one backend skip on the others. The distributed tests run in fresh processes, since
the number of JAX host devices and `jax.distributed` are fixed at start-up.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from tb_batch_images import BatchImageLogger, read_batches
from tests.fixtures import rig
from tests.fixtures.paths import python_path

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parents[2]
JAX_ONLY = pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution on JAX")
TF_ONLY = pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute")

# Shared by the distributed scripts: the rig's tf.data pipeline with ids, the rig
# model, the logger, and the correspondence checks against the recorder.
_TRAIN = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    import keras
    from tb_batch_images import BatchImageLogger, read_batches
    from tests.fixtures import rig
    from tests.capture.test_capture_correspondence import tf_data, SAMPLES

    def train(logdir, samples_per_batch=8, selection="first", full_batches=None):
        keras.utils.set_random_seed(1)  # the same initial weights on every process
        recorder = rig.Recorder()
        model = rig.make_model(recorder)
        model.compile("adam", "sparse_categorical_crossentropy")
        data = tf_data(metadata="sample_id")
        if full_batches:
            data = data.take(full_batches)
        model.fit(data, epochs=2, verbose=0, callbacks=[
            BatchImageLogger(logdir, every_n_steps=1, max_queue=1000,
                             samples_per_batch=samples_per_batch, selection=selection,
                             filenames=[rig.filename_of(i) for i in range(SAMPLES)])])
        return recorder.history()
    """
)

DATA_PARALLEL_SCRIPT = _TRAIN + textwrap.dedent(
    """
    import jax
    logdir = sys.argv[1]
    devices = jax.devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    history = train(logdir)
    batches = [b for b in read_batches(logdir) if b.mode == "train"]
    checked = rig.check_correspondence(batches, history)
    origins = [(s.position, s.record["device"], s.record["process"], b.batch_size)
               for b in batches for s in b.samples]
    print(json.dumps({"devices": len(devices), "checked": checked,
                      "steps": [b.step for b in batches], "origins": origins,
                      "replicas": batches[0].record["num_replicas"]}))
    """
)


def _run(script: str, args: list[str], env: dict, timeout: float = 600):
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": python_path(),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "KERAS_BACKEND": "jax",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@JAX_ONLY
def test_jax_data_parallel_over_two_host_devices(tmp_path):
    process = _run(
        DATA_PARALLEL_SCRIPT,
        [str(tmp_path / "logs")],
        {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-4000:]
    summary = _last_json(stdout)
    assert summary["devices"] == 2 and summary["replicas"] == 2
    assert summary["steps"] == list(range(14))
    assert summary["checked"] > 0
    # The samples are real samples of the global batch, each with the device whose
    # shard of the batch it was in (the short last batch of 2 is split 1 + 1).
    devices_seen = set()
    for position, device, process_index, batch_size in summary["origins"]:
        assert device == min(position // max(1, batch_size // 2), 1)
        assert process_index == 0
        devices_seen.add(device)
    assert devices_seen == {0, 1}


TWO_PROCESS_SCRIPT = _TRAIN + textwrap.dedent(
    """
    import jax
    address, process_id, logdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(coordinator_address=address, num_processes=2,
                               process_id=process_id)
    # As keras.io's distribution guide writes it: device strings, every process.
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=keras.distribution.list_devices()))
    # Keras splits each global batch into one half per process; a short last batch
    # would leave the processes with different step counts (and a hang), so six
    # full batches of 8 per epoch.
    history = train(logdir, full_batches=6)
    result = {"process": jax.process_index(), "devices": len(jax.devices()),
              "written": os.path.isdir(logdir)}
    if process_id == 0:
        batches = [b for b in read_batches(logdir) if b.mode == "train"]
        result["checked"] = rig.check_correspondence(batches, history)
        result["steps"] = [b.step for b in batches]
        result["processes"] = sorted({s.record["process"] for b in batches
                                      for s in b.samples})
        result["batch_sizes"] = sorted({b.batch_size for b in batches})
    print(json.dumps(result))
    """
)


@JAX_ONLY
def test_jax_two_processes_on_localhost_only_process_zero_writes(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    processes = [
        _run(
            TWO_PROCESS_SCRIPT,
            [address, str(i), str(tmp_path / f"logs_{i}")],
            {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=300))
    finally:
        for process in processes:
            process.kill()
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-4000:]
    first, second = (_last_json(stdout) for stdout, _ in outputs)
    assert first["devices"] == second["devices"] == 2
    assert first["written"] and not second["written"]  # process 0 writes, alone
    assert first["checked"] > 0
    # Each process feeds half of every global batch of 8.
    assert first["batch_sizes"] == [8]
    assert first["processes"] == [0, 1]  # samples from both processes' shares
    assert first["steps"] == list(range(12))


# -- setups the logger cannot handle: one warning, fit() completes -----------------
def _class_step_model() -> keras.Model:
    """A model whose train function calls the class's train_step, not the instance's
    (as Keras's NNX path does): the logger never sees the batch."""

    class ClassStepModel(keras.Model):
        def make_train_function(self, force=False):
            if self.train_function is not None and not force:
                return self.train_function
            self.train_function = _class_step_function(self)
            return self.train_function

    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(hidden)
    return ClassStepModel(inputs, outputs)


def _class_step_function(model):
    step = type(model).train_step
    if BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function
        def function(iterator):
            return step(model, next(iterator))

        return function
    if BACKEND == "jax":
        import jax

        jitted = jax.jit(lambda state, data: step(model, state, data))

        def function(state, iterator):
            return jitted(state, next(iterator))

        return function

    def function(data):
        return step(model, data[0])

    return function


def test_a_trainer_that_bypasses_the_step_warns_once_and_fit_completes(tmp_path):
    model = _class_step_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    images = np.random.default_rng(0).random((32, 8, 8, 3), dtype=np.float32)
    labels = np.arange(32) % 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(
            images,
            labels,
            batch_size=8,
            epochs=2,
            verbose=0,
            callbacks=[BatchImageLogger(str(tmp_path), every_n_steps=1)],
        )
    assert len(history.history["loss"]) == 2  # training went on
    ours = [str(w.message) for w in caught if "tb_batch_images" in str(w.message)]
    assert len(ours) == 1, ours
    assert "never called its train_step" in ours[0]
    assert "Training goes on" in ours[0]
    assert not [b for b in read_batches(str(tmp_path)) if b.mode == "train"]


def test_the_same_model_without_the_bypass_logs(tmp_path):
    """The control for the test above: an ordinary functional model logs batches."""
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(3, activation="softmax")(
        keras.layers.Flatten()(inputs)
    )
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    images = np.random.default_rng(0).random((32, 8, 8, 3), dtype=np.float32)
    model.fit(
        images,
        np.arange(32) % 3,
        batch_size=8,
        epochs=1,
        verbose=0,
        callbacks=[BatchImageLogger(str(tmp_path), every_n_steps=1)],
    )
    steps = [b.step for b in read_batches(str(tmp_path)) if b.mode == "train"]
    assert steps == [0, 1, 2, 3]
    record = next(iter(read_batches(str(tmp_path)))).record
    assert record["backend"] == BACKEND


def _fit_with_string_filenames(tmp_path, **compile_kwargs):
    import tensorflow as tf

    images = np.zeros((16, 8, 8, 3), np.float32)
    names = [rig.filename_of(i) for i in range(16)]
    data = tf.data.Dataset.from_tensor_slices(
        ({"image": images, "filename": names}, np.zeros(16, np.int64))
    ).batch(8)
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    model.compile("adam", "sparse_categorical_crossentropy", **compile_kwargs)
    model.fit(
        data,
        epochs=1,
        verbose=0,
        callbacks=[BatchImageLogger(str(tmp_path), every_n_steps=1)],
    )


@pytest.mark.skipif(BACKEND == "tensorflow", reason="strings travel on TensorFlow")
def test_string_filenames_off_tensorflow_point_to_sample_id(tmp_path):
    with pytest.raises(Exception) as raised:
        _fit_with_string_filenames(tmp_path)
    notes = "\n".join(getattr(raised.value, "__notes__", []))
    assert "sample_id" in notes and "filenames=" in notes, (raised.value, notes)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="strings travel on TensorFlow")
def test_string_filenames_in_an_eager_step_warn_and_pictures_are_still_logged(tmp_path):
    """Uncompiled, Keras may let the strings through to the step (JAX); the logger
    cannot carry them off TensorFlow, says so once, and logs the pictures."""
    refused = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _fit_with_string_filenames(tmp_path, jit_compile=False)
        except (ValueError, TypeError) as error:
            # Keras refused the strings itself: torch (ValueError), the 3.16
            # nightly's jax.device_put (TypeError, "not a valid JAX array type").
            refused = error
    if refused is not None:  # then the logger's note says what to do
        notes = "\n".join(getattr(refused, "__notes__", []))
        assert "sample_id" in notes, (refused, notes)
        return
    # The data map's own "off" warning (no integer ids) is tested in
    # test_data_map_reasons; here, the strings are said once.
    ours = [
        str(w.message)
        for w in caught
        if "tb_batch_images" in str(w.message) and "the data map" not in str(w.message)
    ]
    assert len(ours) == 1 and "sample_id" in ours[0], ours
    batches = [b for b in read_batches(str(tmp_path)) if b.mode == "train"]
    assert [b.step for b in batches] == [0, 1]
    assert all(s.filename is None for b in batches for s in b.samples)


# -- tf.distribute: only the chief writes -------------------------------------------
@TF_ONLY
@pytest.mark.parametrize("chief", [True, False])
def test_under_a_tf_strategy_only_the_chief_writes(tmp_path, monkeypatch, chief):
    """A worker whose strategy says it should not save summaries (a non-chief worker
    of multi-worker training) trains with the logger and writes nothing; the chief
    (the control) writes every step. Keras 3 cannot run MultiWorkerMirroredStrategy
    itself (keras#20585), so the non-chief worker is a MirroredStrategy whose
    `should_save_summary` answers as a non-chief worker's does."""
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    monkeypatch.setattr(
        type(strategy.extended), "should_save_summary", property(lambda _: chief)
    )
    images = np.random.default_rng(0).random((32, 8, 8, 3), dtype=np.float32)
    data = tf.data.Dataset.from_tensor_slices(
        ({"image": images, "sample_id": np.arange(32)}, np.arange(32) % 3)
    ).batch(8)
    with strategy.scope():
        inputs = keras.Input((8, 8, 3))
        outputs = keras.layers.Dense(3, activation="softmax")(
            keras.layers.Flatten()(inputs)
        )
        model = keras.Model(inputs, outputs)
        model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(
        data,
        epochs=2,
        verbose=0,
        callbacks=[BatchImageLogger(str(tmp_path), every_n_steps=1)],
    )
    assert len(history.history["loss"]) == 2  # the ids were stripped either way
    steps = [b.step for b in read_batches(str(tmp_path)) if b.mode == "train"]
    assert steps == (list(range(8)) if chief else [])
