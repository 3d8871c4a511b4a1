"""keras.io's recipes as keras.io writes them, with the logger in the callbacks.

- After `fit`, `model.evaluate(val_ds)` and `model.predict(val_ds)` on the datasets of
  `tb_batch_images.image_dataset_from_directory` (x holds the image and its
  `sample_id`), on a `Sequential` and a functional model: the keys are taken out as
  in `fit`. A model that never met the logger still raises Keras's own error (the
  negative control; `.without_ids()` is for it).
- `keras.distribution.DataParallel` and `ModelParallel` built from
  `keras.distribution.list_devices()` strings, as the distribution guide writes them
  (JAX, two host devices, in a fresh process), logging real batches.

Runs under every backend (`tests/capture/` is `every_backend`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from tb_batch_images import BatchImageLogger, image_dataset_from_directory, read_batches
from tests.capture.test_datasets import CLASSES, SIZE, _model, _write_tree
from tests.fixtures.paths import python_path

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def datasets(tmp_path):
    _write_tree(tmp_path / "pictures")
    return image_dataset_from_directory(
        str(tmp_path / "pictures"),
        validation_split=0.25,
        subset="both",
        seed=3,
        image_size=SIZE,
        batch_size=8,
        verbose=False,
    )


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_evaluate_and_predict_after_fit_take_the_loaders_batches(
    tmp_path, datasets, kind
):
    train_ds, val_ds = datasets
    keras.utils.set_random_seed(0)
    model = _model(kind)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    logger = BatchImageLogger(
        str(tmp_path / "logs"),
        every_n_steps=2,
        filenames=train_ds.file_paths,
        class_names=train_ds.class_names,
    )
    model.fit(train_ds, validation_data=val_ds, epochs=2, callbacks=[logger], verbose=0)

    loss, accuracy = model.evaluate(val_ds, verbose=0)  # as keras.io writes it
    assert np.isfinite(loss) and 0.0 <= accuracy <= 1.0
    expected_loss, _ = model.evaluate(val_ds.without_ids(), verbose=0)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    predictions = model.predict(val_ds, verbose=0)
    assert predictions.shape == (9, len(CLASSES))
    np.testing.assert_allclose(
        predictions, model.predict(val_ds.without_ids(), verbose=0), rtol=1e-5
    )
    # fit again with the same logger: still captured, still evaluable.
    model.fit(train_ds, epochs=1, callbacks=[logger], verbose=0)
    assert np.isfinite(model.evaluate(val_ds, verbose=0)[0])
    assert [b for b in read_batches(str(tmp_path / "logs")) if b.mode == "train"]


_NEVER_MET = textwrap.dedent(
    """
    import sys
    from tests.capture.test_datasets import SIZE, _model
    from tb_batch_images import image_dataset_from_directory
    _, val_ds = image_dataset_from_directory(
        sys.argv[1], validation_split=0.25, subset="both", seed=3, image_size=SIZE,
        batch_size=8, verbose=False)
    model = _model("sequential")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.evaluate(val_ds.without_ids(), verbose=0)
    try:
        model.evaluate(val_ds, verbose=0)
    except ValueError as error:
        print("raised", type(error).__name__)
    else:
        print("evaluated")
    """
)


def test_a_model_that_never_met_the_logger_still_needs_without_ids(tmp_path):
    """The negative control, in a fresh process (no logger was ever made there):
    Keras itself refuses the loader's batches on a Sequential model."""
    _write_tree(tmp_path / "pictures")
    result = subprocess.run(
        [sys.executable, "-c", _NEVER_MET, str(tmp_path / "pictures")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": python_path(), "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().splitlines()[-1] == "raised ValueError"


# -- keras.distribution, as the distribution guide writes it (JAX) ------------------
_DISTRIBUTED = textwrap.dedent(
    """
    import json, sys
    import keras
    import numpy as np
    from tb_batch_images import BatchImageLogger, read_batches
    from tests.fixtures import rig
    from tests.capture.test_capture_correspondence import tf_data, SAMPLES

    logdir, recipe = sys.argv[1], sys.argv[2]
    devices = keras.distribution.list_devices()  # strings, e.g. "cpu:0"
    if recipe == "data_parallel":
        distribution = keras.distribution.DataParallel(devices=devices)
    else:
        mesh = keras.distribution.DeviceMesh(
            shape=(1, len(devices)), axis_names=["batch", "model"], devices=devices
        )
        layout_map = keras.distribution.LayoutMap(mesh)
        layout_map["conv2d.*kernel"] = (None, None, None, "model")  # 4 filters
        distribution = keras.distribution.ModelParallel(
            layout_map=layout_map, batch_dim_name="batch"
        )
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(1)
    recorder = rig.Recorder()
    model = rig.make_model(recorder)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(tf_data(metadata="sample_id"), epochs=2, verbose=0, callbacks=[
        BatchImageLogger(logdir, every_n_steps=1, max_queue=1000, samples_per_batch=8,
                         filenames=[rig.filename_of(i) for i in range(SAMPLES)])])
    batches = [b for b in read_batches(logdir) if b.mode == "train"]
    checked = rig.check_correspondence(batches, recorder.history())
    print(json.dumps({
        "devices": [str(d) for d in devices], "checked": checked,
        "steps": [b.step for b in batches],
        "replicas": batches[0].record["num_replicas"],
        "origins": sorted({s.record.get("device") for b in batches for s in b.samples}),
    }))
    """
)


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution runs on JAX")
@pytest.mark.parametrize(
    ("recipe", "replicas", "origins"),
    [("data_parallel", 2, [0, 1]), ("model_parallel", 1, [0])],
)
def test_distribution_from_list_devices_strings_logs_real_batches(
    tmp_path, recipe, replicas, origins
):
    result = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTED, str(tmp_path / "logs"), recipe],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": python_path(),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "KERAS_BACKEND": "jax",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(isinstance(d, str) for d in summary["devices"])
    assert len(summary["devices"]) == 2
    assert summary["steps"] == list(range(14))
    assert summary["checked"] > 0
    assert summary["replicas"] == replicas
    assert summary["origins"] == origins
    assert "could not read the captured batch" not in result.stderr
