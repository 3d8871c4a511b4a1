"""Every logged sample is the sample that trained at its step, in every input setup.

Built on tests/fixtures/rig.py: pixels encode the sample id, the tf.data map adds a mark and a
random flip, and a Recorder layer inside the model writes down what each step trained
on. Each test trains a real tiny Keras model with BatchImageLogger and reads the event
files back with read_batches.

Backend-neutral: `make test` runs this file under KERAS_BACKEND=tensorflow, jax and
torch. Off TensorFlow the metadata is `sample_id` (strings cannot reach the step there),
and the configurations a backend does not have are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tb_batch_images import BatchImageLogger, read_batches
from tests.fixtures import rig

BACKEND = keras.backend.backend()
TF_ONLY = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="string filenames and tf.distribute: TensorFlow"
)
NO_TORCH_SPE = pytest.mark.skipif(
    BACKEND == "torch", reason="Keras refuses steps_per_execution > 1 on torch"
)
# TBBI_KERAS_DEFAULT_COMPILE=1 (benchmarks/gpu_check.sh): compile as a user does, with
# Keras's default jit_compile="auto" (XLA on where a GPU is), instead of forcing it off.
KERAS_DEFAULT_COMPILE = os.environ.get("TBBI_KERAS_DEFAULT_COMPILE") == "1"
DEFAULT_JIT = {} if KERAS_DEFAULT_COMPILE else {"jit_compile": False}
# Off TensorFlow, strings never reach the step, and under XLA they cannot pass through
# it: ids travel instead.
DEFAULT_METADATA = (
    "filename" if BACKEND == "tensorflow" and not KERAS_DEFAULT_COMPILE else "sample_id"
)

SAMPLES = 50  # batches of 8: six full ones and a short last batch of 2
BATCH = 8
EPOCHS = 2
STEPS = EPOCHS * 7


def _ids_dataset(shuffle_seed: int | None = 7) -> tf.data.Dataset:
    images = np.stack([rig.raw_image(i) for i in range(SAMPLES)])
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(SAMPLES)))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(SAMPLES, seed=shuffle_seed)
    return dataset


def _label(sample_id: tf.Tensor, loss_kind: str) -> tf.Tensor:
    label = sample_id % rig.CLASSES
    if loss_kind == "categorical":
        return tf.one_hot(label, rig.CLASSES)
    if loss_kind == "multilabel":
        return tf.one_hot(label, rig.CLASSES)
    if loss_kind == "binary":
        return tf.cast(label % 2, tf.float32)
    return label


def tf_data(
    metadata: str = DEFAULT_METADATA,
    loss_kind: str = "sparse",
    shuffle_seed: int | None = 7,
) -> tf.data.Dataset:
    """The rig's tf.data pipeline: shuffle, map (augment), batch, prefetch."""

    def to_example(image, sample_id):
        x = {"image": rig.augment(image)}
        if metadata == "filename":
            x["filename"] = tf.strings.join(
                ["img_", tf.strings.as_string(sample_id), ".png"]
            )
        else:
            x["sample_id"] = sample_id
        return x, _label(sample_id, loss_kind)

    dataset = _ids_dataset(shuffle_seed).map(to_example)
    return dataset.batch(BATCH).prefetch(tf.data.AUTOTUNE)


LOSSES = {
    "sparse": keras.losses.SparseCategoricalCrossentropy(),
    "logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "categorical": "categorical_crossentropy",
    "binary": "binary_crossentropy",
    "multilabel": keras.losses.BinaryCrossentropy(),
}
OUTPUTS = {
    "sparse": "softmax",
    "logits": "logits",
    "categorical": "softmax",
    "binary": "sigmoid",
    "multilabel": "multilabel",
}


def train(
    tmp_path: Path,
    data,
    *,
    loss_kind: str = "sparse",
    filenames: bool = True,
    validation_data=None,
    fit_kwargs: dict | None = None,
    compile_kwargs: dict | None = None,
    logger_kwargs: dict | None = None,
):
    """Trains the rig model with the logger; returns (batches, recorder history)."""
    keras.utils.set_random_seed(1)
    recorder = rig.Recorder()
    model = rig.make_model(recorder, output=OUTPUTS[loss_kind])
    model.compile(
        optimizer="adam",
        loss=LOSSES[loss_kind],
        **{**DEFAULT_JIT, **(compile_kwargs or {})},
    )
    # A queue that never fills: these tests check every step, not drop behaviour.
    options = {
        "every_n_steps": 1,
        "samples_per_batch": 5,
        "max_queue": 1000,
        **(logger_kwargs or {}),
    }
    logger = BatchImageLogger(
        str(tmp_path / "logs"),
        filenames=[rig.filename_of(i) for i in range(SAMPLES)] if filenames else None,
        **options,
    )
    model.fit(
        data,
        epochs=EPOCHS,
        verbose=0,
        validation_data=validation_data,
        callbacks=[logger],
        **(fit_kwargs or {}),
    )
    batches = list(read_batches(str(tmp_path / "logs")))
    return batches, recorder.history()


def _train_batches(batches):
    return [b for b in batches if b.mode == "train"]


def assert_all_steps_logged(batches, steps: int = STEPS):
    logged = [b.step for b in _train_batches(batches)]
    assert logged == list(range(steps))


def test_tf_data_logs_the_trained_batch(tmp_path):
    validation = tf_data(shuffle_seed=None).take(3)
    batches, history = train(tmp_path, tf_data(), validation_data=validation)
    assert_all_steps_logged(batches)
    train_batches = _train_batches(batches)
    assert rig.check_correspondence(train_batches, history) == sum(
        len(b.samples) for b in train_batches
    )
    # epoch/batch attribution, and the short last batch of each epoch
    assert [(b.epoch, b.batch) for b in train_batches] == [
        (e, i) for e in range(EPOCHS) for i in range(7)
    ]
    assert [b.batch_size for b in train_batches if b.batch == 6] == [2, 2]
    assert [len(b.samples) for b in train_batches if b.batch == 6] == [2, 2]


def test_validation_batches_are_the_first_validation_batch_each_epoch(tmp_path):
    validation = tf_data(shuffle_seed=None).take(3)  # ids 0..23 in order
    batches, _ = train(tmp_path, tf_data(), validation_data=validation)
    validation_batches = [b for b in batches if b.mode == "validation"]
    assert [b.epoch for b in validation_batches] == list(range(EPOCHS))
    assert [b.step for b in validation_batches] == [7, 14]
    for batch in validation_batches:
        assert batch.run == "validation" and batch.batch == 0
        for sample in batch.samples:
            sample_id = rig.decode_id(sample.image)
            assert sample_id == sample.position  # unshuffled: batch 0 is ids 0..7
            assert sample.filename == rig.filename_of(sample_id)
            assert rig.has_mark(sample.image)
            rig.check_label_and_loss(sample, sample_id, "sparse")


def test_several_validation_batches_share_one_record_per_validation_run(tmp_path):
    validation = tf_data(shuffle_seed=None).take(3)  # ids 0..23 in order
    batches, _ = train(
        tmp_path,
        tf_data(),
        validation_data=validation,
        logger_kwargs={"validation_batches": 3, "samples_per_batch": 8},
    )
    validation_batches = [b for b in batches if b.mode == "validation"]
    assert [b.step for b in validation_batches] == [7, 14]
    for batch in validation_batches:
        assert batch.batch_size == 24
        assert [s.record["batch"] for s in batch.samples] == [0] * 8 + [1] * 8 + [2] * 8
        for sample in batch.samples:
            sample_id = rig.decode_id(sample.image)
            assert sample_id == sample.record["batch"] * BATCH + sample.position
            assert sample.filename == rig.filename_of(sample_id)


def test_negative_control_a_shift_by_one_batch_is_caught(tmp_path):
    batches, history = train(tmp_path, tf_data())
    train_batches = _train_batches(batches)[:-1]
    with pytest.raises(AssertionError):
        rig.check_correspondence(train_batches, history, shift=1)
    # and a wrong filename under an image is caught too
    train_batches[0].samples[0].filename = rig.filename_of(999)
    with pytest.raises(AssertionError):
        rig.check_correspondence(train_batches, history)


def test_compiled_step_with_sample_ids_logs_the_trained_batch(tmp_path):
    """XLA on TensorFlow and JAX, torch.compile on PyTorch."""
    batches, history = train(
        tmp_path,
        tf_data(metadata="sample_id"),
        filenames=True,
        compile_kwargs={"jit_compile": True},
    )
    assert_all_steps_logged(batches)
    rig.check_correspondence(_train_batches(batches), history)
    assert all(s.sample_id is not None for b in batches for s in b.samples)


@TF_ONLY
def test_xla_with_string_filenames_fails_at_once_naming_sample_id(tmp_path):
    with pytest.raises(ValueError, match="sample_id"):
        train(tmp_path, tf_data(), compile_kwargs={"jit_compile": True})


def test_run_eagerly_logs_the_trained_batch(tmp_path):
    batches, history = train(tmp_path, tf_data(), compile_kwargs={"run_eagerly": True})
    assert_all_steps_logged(batches)
    rig.check_correspondence(_train_batches(batches), history)


@NO_TORCH_SPE
@pytest.mark.parametrize("jit_compile", [False, True])
def test_steps_per_execution_attributes_each_step(tmp_path, jit_compile):
    batches, history = train(
        tmp_path,
        tf_data(metadata="sample_id"),
        filenames=True,
        compile_kwargs={"steps_per_execution": 3, "jit_compile": jit_compile},
    )
    assert_all_steps_logged(batches)
    rig.check_correspondence(_train_batches(batches), history)


@NO_TORCH_SPE
def test_steps_per_execution_with_a_sparse_schedule(tmp_path):
    batches, history = train(
        tmp_path,
        tf_data(metadata="sample_id"),
        filenames=True,
        compile_kwargs={"steps_per_execution": 4},
        logger_kwargs={"every_n_steps": 5, "log_steps": [3]},
    )
    assert [b.step for b in _train_batches(batches)] == [0, 3, 5, 10]
    rig.check_correspondence(_train_batches(batches), history)


class _RigPyDataset(keras.utils.PyDataset):
    def __init__(self, seed: int):
        super().__init__()
        self.order = np.random.default_rng(seed).permutation(SAMPLES)
        self.flips = np.random.default_rng(seed + 1).integers(0, 2, SAMPLES)

    def __len__(self):
        return -(-SAMPLES // BATCH)

    def __getitem__(self, index):
        ids = self.order[index * BATCH : (index + 1) * BATCH]
        images = np.stack([_marked(i, self.flips[i]) for i in ids])
        return {"image": images, "sample_id": ids}, ids % rig.CLASSES


def _marked(sample_id: int, flip: int = 0) -> np.ndarray:
    image = rig.raw_image(sample_id)
    if flip:
        image = image[:, ::-1]
    image = image.copy()
    image[rig.MARK_ROW] = 1.0
    return image


def test_pydataset_logs_the_trained_batch(tmp_path):
    batches, history = train(tmp_path, _RigPyDataset(seed=3), filenames=True)
    assert_all_steps_logged(batches)
    rig.check_correspondence(_train_batches(batches), history)


def test_numpy_arrays_with_shuffle_log_the_trained_batch(tmp_path):
    ids = np.arange(SAMPLES)
    x = {"image": np.stack([_marked(i) for i in ids]), "sample_id": ids}
    batches, history = train(
        tmp_path,
        x,
        filenames=True,
        fit_kwargs={"y": ids % rig.CLASSES, "batch_size": BATCH, "shuffle": True},
    )
    assert_all_steps_logged(batches)
    rig.check_correspondence(_train_batches(batches), history)
    # shuffled: the logged order is not the array order
    assert [s.sample_id for s in _train_batches(batches)[0].samples] != [0, 1, 2, 3, 4]


def test_python_generator_logs_the_trained_batch(tmp_path):
    def generate():
        rng = np.random.default_rng(5)
        while True:
            order = rng.permutation(SAMPLES)
            for start in range(0, SAMPLES, BATCH):
                chosen = order[start : start + BATCH]
                images = np.stack([_marked(i, rng.integers(0, 2)) for i in chosen])
                yield {"image": images, "sample_id": chosen}, chosen % rig.CLASSES

    batches, history = train(
        tmp_path, generate(), filenames=True, fit_kwargs={"steps_per_epoch": 7}
    )
    assert_all_steps_logged(batches)
    rig.check_correspondence(_train_batches(batches), history)


def test_repeated_dataset_with_steps_per_epoch(tmp_path):
    data = tf_data().repeat()
    batches, history = train(tmp_path, data, fit_kwargs={"steps_per_epoch": 5})
    assert_all_steps_logged(batches, steps=10)
    assert [(b.epoch, b.batch) for b in _train_batches(batches)] == [
        (e, i) for e in range(EPOCHS) for i in range(5)
    ]
    rig.check_correspondence(_train_batches(batches), history)


@pytest.mark.parametrize("loss_kind", ["logits", "categorical", "binary", "multilabel"])
def test_outputs_and_losses_of_each_classification_head(tmp_path, loss_kind):
    batches, history = train(
        tmp_path, tf_data(loss_kind=loss_kind), loss_kind=loss_kind
    )
    rig.check_correspondence(_train_batches(batches), history, loss_kind=loss_kind)
    record = _train_batches(batches)[0].record
    expected_task = {
        "logits": "sparse_categorical",
        "categorical": "categorical",
        "binary": "binary",
        "multilabel": "multilabel",
    }[loss_kind]
    assert record["task"] == expected_task
    for sample in _train_batches(batches)[0].samples:
        probabilities = [entry["probability"] for entry in sample.top_k]
        assert all(0.0 <= p <= 1.0 for p in probabilities)
        if loss_kind in ("logits", "categorical"):
            assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)


def test_regression_outputs_are_recorded_raw(tmp_path):
    def to_example(image, sample_id):
        return {"image": rig.augment(image), "sample_id": sample_id}, tf.cast(
            sample_id, tf.float32
        )

    data = _ids_dataset().map(to_example).batch(BATCH)
    keras.utils.set_random_seed(1)
    recorder = rig.Recorder()
    model = rig.make_model(recorder, output="linear")
    model.compile("adam", "mse", **DEFAULT_JIT)
    model.fit(
        data,
        epochs=1,
        verbose=0,
        callbacks=[BatchImageLogger(str(tmp_path), every_n_steps=1, max_queue=1000)],
    )
    batches = list(read_batches(str(tmp_path)))
    assert batches
    predictions = model.predict(data.map(lambda x, y: x["image"]), verbose=0)
    assert predictions.shape[1] == 1
    for batch in batches:
        assert batch.record["task"] == "raw"
        for sample in batch.samples:
            sample_id = rig.decode_id(sample.image)
            assert sample.label == [float(sample_id)]
            (value,) = sample.prediction
            assert sample.loss == pytest.approx((value - sample_id) ** 2, rel=1e-3)
            assert sample.record["output_summary"]["shape"] == [1]


def test_highest_loss_selection_keeps_the_hardest_samples(tmp_path):
    batches, history = train(
        tmp_path, tf_data(), logger_kwargs={"selection": "highest_loss"}
    )
    train_batches = _train_batches(batches)
    rig.check_correspondence(train_batches, history)
    for batch in train_batches:
        losses = [s.loss for s in batch.samples]
        assert losses == sorted(losses, reverse=True)


def test_random_selection_keeps_distinct_real_samples(tmp_path):
    batches, history = train(tmp_path, tf_data(), logger_kwargs={"selection": "random"})
    rig.check_correspondence(_train_batches(batches), history)
    positions = [tuple(s.position for s in b.samples) for b in _train_batches(batches)]
    assert all(len(set(p)) == len(p) for p in positions)
    assert any(p != tuple(range(len(p))) for p in positions)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tb_batch_images import BatchImageLogger, read_batches
    from tests.fixtures import rig
    from tests.capture.test_capture_correspondence import tf_data, SAMPLES

    logdir = sys.argv[1]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        recorder = rig.Recorder()
        model = rig.make_model(recorder)
        model.compile("adam", "sparse_categorical_crossentropy", jit_compile=False)
    model.fit(tf_data(metadata="sample_id"), epochs=2, verbose=0, callbacks=[
        BatchImageLogger(logdir, every_n_steps=1, samples_per_batch=4, max_queue=1000,
                         filenames=[rig.filename_of(i) for i in range(SAMPLES)])])
    batches = [b for b in read_batches(logdir) if b.mode == "train"]
    checked = rig.check_correspondence(batches, recorder.history())
    print(json.dumps({"checked": checked, "steps": [b.step for b in batches],
                      "replicas": batches[0].record["num_replicas"]}))
    """
)


@TF_ONLY
def test_mirrored_strategy_logs_replica_zeros_share(tmp_path, run_python):
    root = Path(__file__).resolve().parents[2]
    result = run_python(["-c", MIRRORED_SCRIPT, str(tmp_path / "logs")], cwd=root)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["replicas"] == 2
    assert summary["steps"] == list(range(STEPS))
    assert summary["checked"] > 0


@pytest.mark.skipif(
    BACKEND == "torch",
    reason="Keras 3.15's torch sparse_categorical_crossentropy fails on per-pixel "
    "outputs without the logger too ('grad_input must be contiguous' in backward)",
)
def test_dense_map_outputs_are_logged_as_the_pictures_own_masks(tmp_path):
    """A segmentation-like model: [batch, 8, 8, 2] outputs (half the picture's size),
    per-pixel targets that depend on the sample id: each logged label mask is its own
    picture's (format 2 draws dense maps as masks, not raw lists)."""

    def to_example(image, sample_id):
        target = tf.fill([8, 8], sample_id % 2)
        return {"image": rig.augment(image), "sample_id": sample_id}, target

    data = _ids_dataset().map(to_example).batch(BATCH)
    inputs = keras.Input((rig.SIZE, rig.SIZE, 3), name="image")
    hidden = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(
        inputs
    )
    outputs = keras.layers.Conv2D(2, 1, activation="softmax")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", **DEFAULT_JIT)
    model.fit(
        data,
        epochs=1,
        verbose=0,
        callbacks=[BatchImageLogger(str(tmp_path), every_n_steps=1, max_queue=100)],
    )
    batches = list(read_batches(str(tmp_path)))
    assert len(batches) == 7
    odd_and_even = set()
    for batch in batches:
        assert batch.record["masks"] == "classes"
        assert batch.record["mask_shape"] == [rig.SIZE, rig.SIZE]
        for sample in batch.samples:
            sample_id = rig.decode_id(sample.image)
            odd_and_even.add(sample_id % 2)
            summary = sample.record["output_summary"]
            assert summary["shape"] == [8, 8, 2]
            assert 0.0 <= summary["min"] <= summary["mean"] <= summary["max"] <= 1.0
            assert sample.label_mask.shape == (rig.SIZE, rig.SIZE)
            assert (sample.label_mask == sample_id % 2).all()
            assert set(np.unique(sample.prediction_mask)) <= {0, 1}
            assert 0.0 <= sample.record["pixel_accuracy"] <= 1.0
            assert sample.loss is not None and sample.loss > 0
    assert odd_and_even == {0, 1}  # both label values seen: the check can fail


@pytest.mark.skipif(BACKEND != "torch", reason="torch.utils.data.DataLoader: torch")
def test_torch_dataloader_logs_the_trained_batch(tmp_path):
    import torch

    class RigTorchDataset(torch.utils.data.Dataset):
        def __init__(self):
            self.flips = np.random.default_rng(4).integers(0, 2, SAMPLES)

        def __len__(self):
            return SAMPLES

        def __getitem__(self, index):
            image = torch.from_numpy(_marked(index, self.flips[index]))
            return {"image": image, "sample_id": index}, index % rig.CLASSES

    loader = torch.utils.data.DataLoader(
        RigTorchDataset(),
        batch_size=BATCH,
        shuffle=True,
        generator=torch.Generator().manual_seed(2),
    )
    batches, history = train(tmp_path, loader)
    assert_all_steps_logged(batches)
    rig.check_correspondence(_train_batches(batches), history)
    # shuffled by the loader: the logged order is not the dataset order
    assert [s.sample_id for s in _train_batches(batches)[0].samples] != [0, 1, 2, 3, 4]


class _Subclassed(keras.Model):
    """The rig's classifier as a subclass: no keras.Input, no declared inputs."""

    def __init__(self, recorder):
        super().__init__()
        self.recorder = recorder
        self.conv = keras.layers.Conv2D(4, 3, strides=2, activation="relu")
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(rig.CLASSES, activation="softmax")

    def call(self, images, training=None):
        seen = self.recorder(images, training=training)
        return self.dense(self.flatten(self.conv(seen)))


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX capture without keras.Input")
def test_a_jax_model_without_input_and_several_steps_per_call_names_its_steps(
    tmp_path,
):
    """A subclassed model (no keras.Input) takes JAX's per-call path: one call
    runs up to steps_per_execution steps (4, then the epoch's short last 3), and
    the arrays it hands back are its last step's. Each must be logged at that step,
    with that step's pictures: the step is known only when Keras ends the batch."""
    keras.utils.set_random_seed(1)
    recorder = rig.Recorder()
    model = _Subclassed(recorder)
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", steps_per_execution=4
    )
    images = np.stack([rig.raw_image(i) for i in range(SAMPLES)])
    labels = np.array([rig.label_of(i) for i in range(SAMPLES)])
    logger = BatchImageLogger(
        str(tmp_path / "logs"), every_n_steps=1, samples_per_batch=5, max_queue=1000
    )
    with pytest.warns(RuntimeWarning, match="only the last step of each execution"):
        model.fit(
            images,
            labels,
            batch_size=BATCH,
            epochs=EPOCHS,
            shuffle=False,
            verbose=0,
            callbacks=[logger],
        )
    history = recorder.history()
    batches = _train_batches(read_batches(str(tmp_path / "logs")))
    # 7 steps an epoch: calls of steps 0-3 and 4-6, then 7-10 and 11-13.
    assert [b.step for b in batches] == [3, 6, 10, 13]
    for batch in batches:
        trained_ids = history[batch.step][0]
        assert batch.batch_size == len(trained_ids)
        for sample in batch.samples:
            assert trained_ids[sample.position] == rig.decode_id(sample.image), (
                f"step {batch.step}: the picture of another step"
            )
