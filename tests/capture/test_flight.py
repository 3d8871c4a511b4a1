"""The flight recorder: a NaN batch, a loss spike, and a quiet run, on every backend.

A tiny classifier learns three colours (sample ids travel in `x["sample_id"]`). One
run puts a NaN pixel into one sample of the batch at step 150 (the middle of the
second hundred) and trains with `keras.callbacks.TerminateOnNaN` and the logger's
default settings: step 150 must be logged, its culprit first and marked, its file
list in the composition. Another run gives the batch of step 160 wrong labels after
the model has learned: logged as a spike. A run with neither logs only the schedule.
Each trigger has its negative control: the same fit with that trigger off does not
log the step. Runs on every backend (`make test` runs this file under JAX and torch).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tb_batch_images import BatchImageLogger, read_batches, read_composition
from tb_batch_images import contract as fmt

BACKEND = keras.backend.backend()
BATCH = 16
STEPS = 200
NAN_STEP, NAN_POSITION = 150, 5
SPIKE_STEP = 160
CLASSES = 3

COMPILES = (
    [{}, {"jit_compile": True, "steps_per_execution": 4}]
    if BACKEND == "tensorflow"
    else [{}, {"steps_per_execution": 4}]
    if BACKEND == "jax"
    else [{}]  # torch: Keras refuses steps_per_execution > 1
)


def filename_of(sample_id: int) -> str:
    return f"colours/{sample_id:05d}.png"


def _data(nan_at=None, wrong_at=None, steps=STEPS):
    rng = np.random.default_rng(0)
    n = steps * BATCH
    labels = np.arange(n) % CLASSES
    images = rng.uniform(0.0, 0.3, (n, 8, 8, 3)).astype("float32")
    images[np.arange(n), :, :, labels] += 0.6  # the label's channel is bright
    if nan_at is not None:
        images[nan_at * BATCH + NAN_POSITION, 4, 4, 1] = np.nan
    if wrong_at is not None:
        rows = slice(wrong_at * BATCH, (wrong_at + 1) * BATCH)
        labels[rows] = (labels[rows] + 1) % CLASSES
    return {"image": images, "sample_id": np.arange(n)}, labels


def _model(compile_options, model_class=None):
    keras.utils.set_random_seed(0)
    layers = [
        keras.Input((8, 8, 3)),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="tanh"),
        keras.layers.Dense(CLASSES),
    ]
    model = keras.Sequential(layers)
    model.compile(
        keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_options,
    )
    return model


def _fit(log_dir, x, y, compile_options=None, callbacks=(), model=None, **options):
    model = model or _model(compile_options or {})
    logger = BatchImageLogger(
        str(log_dir), filenames=[filename_of(i) for i in range(len(y))], **options
    )
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[logger, *callbacks],
    )
    return {b.step: b for b in read_batches(str(log_dir)) if b.mode == "train"}


@pytest.mark.parametrize("compile_options", COMPILES, ids=str)
def test_a_nan_pixel_with_terminate_on_nan_logs_its_step_culprit_first(
    tmp_path, compile_options
):
    x, y = _data(nan_at=NAN_STEP)
    logged = _fit(
        tmp_path, x, y, compile_options, callbacks=[keras.callbacks.TerminateOnNaN()]
    )
    # Training stopped at the NaN (TerminateOnNaN); the logger's defaults log every
    # 100 steps: only the trigger logs step 150.
    assert sorted(logged) == [0, 100, NAN_STEP]
    batch = logged[NAN_STEP]
    assert batch.trigger == fmt.TRIGGER_NON_FINITE
    assert logged[0].trigger == fmt.TRIGGER_SCHEDULE
    first = batch.samples[0]
    culprit_id = NAN_STEP * BATCH + NAN_POSITION
    assert (first.position, first.sample_id) == (NAN_POSITION, culprit_id)
    assert first.filename == filename_of(culprit_id)
    assert first.culprit and fmt.FLAG_NAN in first.flags
    assert first.loss is None and fmt.FLAG_LOSS_NON_FINITE in first.flags
    assert fmt.FLAG_PREDICTION_NON_FINITE in first.flags
    assert first.prediction is None  # no class from a NaN output
    assert [s.sample_id for s in batch.samples if s.culprit] == [culprit_id]
    assert batch.record["non_finite_samples"] == 1
    assert batch.record["batch_loss"] is None
    assert batch.record["batch_loss_finite"] is False
    # The composition: every step up to the NaN, its batch and loss.
    composition = read_composition(str(tmp_path))
    assert list(composition.steps[: NAN_STEP + 1]) == list(range(NAN_STEP + 1))
    assert (NAN_STEP, fmt.TRIGGER_NON_FINITE) in composition.anomalies()
    ids = list(range(NAN_STEP * BATCH, (NAN_STEP + 1) * BATCH))
    assert composition.sample_ids(NAN_STEP) == ids
    assert composition.sample_ids(37) == list(range(37 * BATCH, 38 * BATCH))
    assert np.isnan(composition.loss(NAN_STEP))
    assert np.isfinite(composition.loss(NAN_STEP - 1))


def test_the_same_nan_run_with_the_trigger_off_does_not_log_the_step(tmp_path):
    x, y = _data(nan_at=NAN_STEP)
    logged = _fit(
        tmp_path,
        x,
        y,
        callbacks=[keras.callbacks.TerminateOnNaN()],
        log_non_finite=False,
    )
    assert sorted(logged) == [0, 100]


def test_a_batch_of_wrong_labels_after_learning_is_logged_as_a_spike(tmp_path):
    x, y = _data(wrong_at=SPIKE_STEP)
    logged = _fit(tmp_path, x, y)
    assert sorted(logged) == [0, 100, SPIKE_STEP]
    batch = logged[SPIKE_STEP]
    assert batch.trigger == fmt.TRIGGER_SPIKE
    record = batch.record
    assert record["batch_loss"] > record["loss_mean"] + 6 * record["loss_deviation"]
    assert record["batch_loss"] > 20 * record["loss_mean"]
    # Highest losses first, each a culprit; every sample has a wrong label.
    losses = [s.loss for s in batch.samples]
    assert losses == sorted(losses, reverse=True)
    assert all(s.culprit for s in batch.samples)
    assert all(s.correct is False for s in batch.samples)
    composition = read_composition(str(tmp_path))
    assert composition.anomalies() == [(SPIKE_STEP, fmt.TRIGGER_SPIKE)]


def test_the_same_spike_with_spikes_off_is_not_logged(tmp_path):
    x, y = _data(wrong_at=SPIKE_STEP)
    logged = _fit(tmp_path, x, y, log_spikes=False)
    assert sorted(logged) == [0, 100]
    assert read_composition(str(tmp_path)).anomalies() == []


def test_a_run_without_anomaly_logs_only_the_schedule(tmp_path):
    x, y = _data()
    logged = _fit(tmp_path, x, y)
    assert sorted(logged) == [0, 100]
    assert {b.trigger for b in logged.values()} == {fmt.TRIGGER_SCHEDULE}
    composition = read_composition(str(tmp_path))
    assert list(composition.steps) == list(range(STEPS))
    assert composition.anomalies() == []
    assert np.all(np.isfinite(composition.losses))
    # The curve falls as the model learns.
    assert composition.losses[-20:].mean() < composition.losses[:5].mean() / 4


class _Boom(keras.callbacks.Callback):
    """A later callback that fails at one step (KeyboardInterrupt or an error)."""

    def __init__(self, step, error):
        super().__init__()
        self.step, self.error = step, error

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.step:
            raise self.error


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()], ids=str)
def test_an_exception_in_a_later_callback_keeps_the_triggered_batch(tmp_path, error):
    x, y = _data(nan_at=NAN_STEP)
    model = _model({})
    logger = BatchImageLogger(
        str(tmp_path), filenames=[filename_of(i) for i in range(len(y))]
    )
    with pytest.raises(type(error)):
        model.fit(
            x,
            y,
            batch_size=BATCH,
            shuffle=False,
            verbose=0,
            callbacks=[logger, _Boom(NAN_STEP, error)],
        )
    # No on_train_end ran: the batch was written at the trigger.
    logged = {b.step: b for b in read_batches(str(tmp_path))}
    assert logged[NAN_STEP].trigger == fmt.TRIGGER_NON_FINITE
    composition = read_composition(str(tmp_path))
    assert composition.sample_ids(NAN_STEP)[NAN_POSITION] == (
        NAN_STEP * BATCH + NAN_POSITION
    )


class OwnLossModel(keras.Model):
    """A model with its own compute_loss (no compiled loss: no per-sample loss)."""

    def __init__(self):
        super().__init__()
        self.flat = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(16, activation="tanh")
        self.out = keras.layers.Dense(CLASSES)

    def call(self, x):
        if isinstance(x, dict):  # {"image"} once the logger took "sample_id" out
            x = x["image"]
        return self.out(self.hidden(self.flat(x)))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, **kwargs):
        losses = keras.losses.sparse_categorical_crossentropy(
            y, y_pred, from_logits=True
        )
        return keras.ops.mean(losses)


def test_a_custom_compute_loss_still_gets_the_spike_trigger(tmp_path):
    x, y = _data(wrong_at=SPIKE_STEP)
    keras.utils.set_random_seed(0)
    model = OwnLossModel()
    model.compile(keras.optimizers.Adam(0.01))
    logged = _fit(tmp_path, x, y, model=model)
    assert sorted(logged) == [0, 100, SPIKE_STEP]
    assert logged[SPIKE_STEP].trigger == fmt.TRIGGER_SPIKE
    assert logged[SPIKE_STEP].record["batch_loss"] > 1.0


def test_keras_io_style_a_diverging_run_logs_the_batch_its_loss_went_nan(tmp_path):
    """As keras.io's image classification example: files on disk,
    `image_dataset_from_directory`, augmentation and rescaling in the model, a
    learning rate far too high, `TerminateOnNaN`, then `model.evaluate(val_ds)`."""
    from PIL import Image

    from tb_batch_images import image_dataset_from_directory

    rng = np.random.default_rng(0)
    for label, name in enumerate(("cats", "dogs")):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(48):
            pixels = rng.integers(0, 120, (24, 24, 3), dtype=np.uint8)
            pixels[..., label] += 120
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i:03d}.png")
    train_ds, val_ds = image_dataset_from_directory(
        str(tmp_path / "images"),
        validation_split=0.25,
        subset="both",
        seed=1337,
        image_size=(24, 24),
        batch_size=8,
    )
    keras.utils.set_random_seed(0)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.RandomFlip("horizontal")(inputs)
    x = keras.layers.Rescaling(1.0 / 255)(x)
    x = keras.layers.Conv2D(8, 3)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(2)(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1e8),  # diverges
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    log_dir = tmp_path / "logs"
    model.fit(
        train_ds,
        epochs=8,
        validation_data=val_ds,
        callbacks=[
            BatchImageLogger(str(log_dir), filenames=train_ds.file_paths),
            keras.callbacks.TerminateOnNaN(),
        ],
        verbose=0,
    )
    composition = read_composition(str(log_dir))
    # TerminateOnNaN stops at a NaN or an Inf loss: either is non-finite.
    bad = ~np.isfinite(composition.losses)
    nan_steps = [int(s) for s in composition.steps[bad]]
    assert nan_steps, "the run did not diverge"
    first = nan_steps[0]
    logged = {b.step: b for b in read_batches(str(log_dir)) if b.mode == "train"}
    assert logged[first].trigger == fmt.TRIGGER_NON_FINITE
    assert logged[first].record["batch_loss_finite"] is False
    files = {s.filename for s in logged[first].samples}
    assert files == set(composition.filenames(first))
    assert all(name.endswith(".png") for name in files)
    model.evaluate(val_ds.without_ids(), verbose=0)  # the model works after fit


def test_later_non_finite_steps_are_rate_limited(tmp_path):
    """Without TerminateOnNaN, a NaN at step 30 makes the weights NaN: every later
    step is non-finite. The first triggers; then waits of 10, 20, 40 steps."""
    x, y = _data(nan_at=30, steps=120)
    logged = _fit(tmp_path, x, y, every_n_steps=0, trigger_cooldown=10)
    expected = [30, 40, 60, 100]
    assert sorted(logged) == expected
    assert {b.trigger for b in logged.values()} == {fmt.TRIGGER_NON_FINITE}
    composition = read_composition(str(tmp_path))
    assert composition.anomalies() == [(s, fmt.TRIGGER_NON_FINITE) for s in expected]
    assert np.all(np.isnan(composition.losses[30:]))


def test_batches_without_sample_ids_still_give_the_loss_curve(tmp_path):
    x, y = _data(steps=40)
    model = _model({})
    logger = BatchImageLogger(str(tmp_path), every_n_steps=20)
    model.fit(
        x["image"], y, batch_size=BATCH, shuffle=False, verbose=0, callbacks=[logger]
    )
    composition = read_composition(str(tmp_path))
    assert list(composition.steps) == list(range(40))
    assert np.all(np.isfinite(composition.losses))
    assert composition.sample_ids(7) == []
    logged = {b.step: b for b in read_batches(str(tmp_path))}
    assert sorted(logged) == [0, 20]
    assert logged[0].record["batch_loss"] == pytest.approx(
        composition.loss(0), rel=1e-5
    )


@pytest.mark.parametrize(
    "options, named",
    [
        ({"spike_threshold": 0}, "spike_threshold"),
        ({"spike_threshold": float("nan")}, "spike_threshold"),
        ({"spike_warmup": -1}, "spike_warmup"),
        ({"trigger_cooldown": 0}, "trigger_cooldown"),
        ({"log_spikes": "yes"}, "log_spikes"),
        ({"log_non_finite": 1}, "log_non_finite"),
        ({"log_composition": None}, "log_composition"),
    ],
    ids=str,
)
def test_bad_trigger_options_name_the_argument(tmp_path, options, named):
    with pytest.raises(ValueError, match=named):
        BatchImageLogger(str(tmp_path), **options)


@pytest.mark.skipif(BACKEND != "jax", reason="a jitted JAX step on the logs path")
def test_a_subclassed_jax_model_with_several_steps_per_call_says_what_it_misses(
    tmp_path,
):
    """Without keras.Input the JAX capture takes the logs path: a jitted call of
    several steps shows only its last step, which the logger says once."""
    x, y = _data(steps=16)
    keras.utils.set_random_seed(0)
    model = OwnLossModel()
    model.compile(keras.optimizers.Adam(0.01), steps_per_execution=4)
    with pytest.warns(RuntimeWarning, match="only the last step of each execution"):
        _fit(tmp_path, x, y, model=model, every_n_steps=0)
    # One row per execution of 4 steps.
    assert len(read_composition(str(tmp_path)).steps) == 4
