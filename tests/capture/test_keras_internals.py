"""A Keras whose internals moved: the logger says what is off, once, and fit goes on.

Every private piece of Keras the logger uses is reached through
`tb_batch_images.capture.keras_internals`, checked when the logger is made. Here a
piece is taken away or changed the way a Keras release would (monkeypatched), on
every backend: the constructor and `fit()` complete, one warning names the Keras
version and the feature that is off, and the batches are still logged.
"""

from __future__ import annotations

import importlib
import warnings

import keras
import numpy as np
import pytest

from tb_batch_images import BatchImageLogger, read_batches
from tb_batch_images.capture import keras_internals

BACKEND = keras.backend.backend()


def _data(count: int = 32):
    rng = np.random.default_rng(0)
    x = {
        "image": rng.random((count, 12, 12, 3)).astype("float32"),
        "sample_id": np.arange(count),
    }
    return x, np.arange(count) % 3


def _model(augment: bool = False) -> keras.Model:
    inputs = keras.Input((12, 12, 3), name="image")
    hidden = inputs
    if augment:  # keras.io's habit: augmentation layers at the start of the model
        hidden = keras.layers.RandomFlip("horizontal", name="flip")(hidden)
        hidden = keras.layers.Rescaling(1.0, name="rescaling")(hidden)
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def _fit_with_logger(tmp_path, model: keras.Model) -> list[str]:
    """Makes the logger and fits; returns the logger's warnings (all of them)."""
    x, y = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = BatchImageLogger(
            str(tmp_path / "logs"), every_n_steps=1, num_samples=32
        )
        model.fit(
            x, y, batch_size=8, epochs=1, shuffle=False, callbacks=[logger], verbose=0
        )
    return [
        str(w.message) for w in caught if str(w.message).startswith("tb_batch_images")
    ]


def test_the_preprocessing_base_class_gone_costs_only_custom_layers(
    tmp_path, monkeypatch
):
    for module_name, name in (
        ("keras.src.layers.preprocessing.data_layer", "DataLayer"),
        ("keras.src.layers.preprocessing.tf_data_layer", "TFDataLayer"),
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        monkeypatch.delattr(module, name, raising=False)
    messages = _fit_with_logger(tmp_path, _model(augment=True))
    off = [m for m in messages if "preprocessing layers are recognised" in m]
    assert len(off) == 1, messages
    assert f"Keras {keras.version()}" in off[0]
    batches = [b for b in read_batches(str(tmp_path / "logs")) if b.mode == "train"]
    assert len(batches) == 4
    # The built-in layers are still found: the pictures come from after them.
    assert batches[0].record["image_source"] == "rescaling"


def test_a_symbolic_build_with_an_unknown_signature_turns_off_one_feature(
    tmp_path, monkeypatch
):
    owner = keras_internals.symbolic_build_owner()
    original = owner.__dict__["_symbolic_build"]

    def _symbolic_build(self, *args, **kwargs):  # what a new Keras might look like
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, "_symbolic_build", _symbolic_build)
    messages = _fit_with_logger(tmp_path, _model())
    off = [m for m in messages if "builds the model with" in m]
    if BACKEND == "tensorflow":
        assert off == []  # TensorFlow builds from specs: nothing to strip there
    else:
        assert len(off) == 1, messages
        assert f"Keras {keras.version()}" in off[0]
    batches = [b for b in read_batches(str(tmp_path / "logs")) if b.mode == "train"]
    assert len(batches) == 4
    assert [s.sample_id for s in batches[0].samples] == list(range(8))


def test_a_keras_as_expected_gives_no_warning(tmp_path):
    """The negative control: nothing moved, nothing said."""
    messages = _fit_with_logger(tmp_path, _model(augment=True))
    assert [m for m in messages if "on Keras" in m] == []
    assert keras_internals.gaps(BACKEND) == []


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX state")
def test_a_jax_state_in_another_layout_turns_off_capture_not_training(
    tmp_path, monkeypatch
):
    """A JAX trainer whose state does not hold the metrics where Keras 3.15 and
    3.16 keep them: the capture says so once and turns off; fit completes."""
    monkeypatch.setattr(keras_internals, "jax_metric_values", lambda model, s: None)
    messages = _fit_with_logger(tmp_path, _model())
    off = [m for m in messages if "JAX state" in m]
    assert len(off) == 1, messages
    assert f"Keras {keras.version()}" in off[0]
