"""The plugin's loss-curve routes over both data providers, on a real training's logs.

A model learns for 60 steps, then one batch of wrong labels makes its loss spike; the
curve must hold every step (downsampled only for drawing), the spike as an anomaly
and as its bucket's max, the logged steps, and `/composition` the file list of any
step, logged or not.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tb_batch_images import BatchImageLogger, read_composition

BATCH, STEPS, SPIKE = 8, 90, 70


@pytest.fixture(scope="module")
def curve_logdir(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("curve")
    rng = np.random.default_rng(0)
    n = BATCH * STEPS
    labels = np.arange(n) % 3
    images = rng.uniform(0, 0.3, (n, 6, 6, 3)).astype("float32")
    images[np.arange(n), :, :, labels] += 0.6
    labels[SPIKE * BATCH : (SPIKE + 1) * BATCH] += 1
    labels %= 3
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6, 6, 3)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    model.compile(
        keras.optimizers.Adam(0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(
        {"image": images, "sample_id": np.arange(n)},
        labels,
        batch_size=BATCH,
        shuffle=False,
        verbose=0,
        validation_data=(
            {"image": images[:16], "sample_id": np.arange(16)},
            labels[:16],
        ),
        callbacks=[
            BatchImageLogger(
                str(logdir / "run_a"),
                every_n_steps=40,
                spike_warmup=30,
                filenames=[f"img_{i}.png" for i in range(n)],
            )
        ],
    )
    return logdir


@pytest.mark.parametrize("load_fast", [False, True])
def test_loss_curve_and_composition_routes(curve_logdir, plugin_server, load_fast):
    server = plugin_server(curve_logdir, load_fast)
    expected = read_composition(str(curve_logdir), "run_a/train")
    assert expected.anomalies() == [(SPIKE, "spike")]

    def loaded():
        response = server.get("/loss_curve", run="run_a/train")
        if response.status_code != 200:
            return None
        answer = response.get_json()
        return answer if answer["total_steps"] == STEPS else None

    whole = server.wait_for(loaded)
    assert whole["logged"] == [0, 40, SPIKE, 80]
    assert whole["anomalies"] == [
        {"step": SPIKE, "trigger": "spike", "loss": pytest.approx(expected.loss(SPIKE))}
    ]
    # Fewer steps than buckets: one bucket per step, exact.
    assert whole["buckets"]["first"] == list(range(STEPS))
    np.testing.assert_allclose(whole["buckets"]["max"], expected.losses, rtol=1e-5)
    # Downsampled for drawing: 9 buckets of 10 steps; the spike is its bucket's max.
    small = server.json("/loss_curve", run="run_a/train", buckets="9")
    assert small["buckets"]["first"] == list(range(0, STEPS, 10))
    assert small["buckets"]["max_step"][SPIKE // 10] == SPIKE
    assert small["buckets"]["trigger"][SPIKE // 10] == "spike"
    assert small["anomalies"] == whole["anomalies"]  # never downsampled
    # A zoomed range.
    zoom = server.json("/loss_curve", run="run_a/train", start="65", end="74")
    assert zoom["buckets"]["first"] == list(range(65, 75))
    # Any step's file list, logged or not.
    step = server.json("/composition", run="run_a/train", step="33")
    assert step["logged"] is False and step["trigger"] is None
    assert step["sample_ids"] == list(range(33 * BATCH, 34 * BATCH))
    assert step["filenames"] == [f"img_{i}.png" for i in step["sample_ids"]]
    assert step["loss"] == pytest.approx(expected.loss(33), rel=1e-5)
    spike = server.json("/composition", run="run_a/train", step=str(SPIKE))
    assert spike["logged"] is True and spike["trigger"] == "spike"


def test_bad_parameters_are_4xx(curve_logdir, plugin_server):
    server = plugin_server(curve_logdir, False)
    server.wait_for(
        lambda: server.get("/loss_curve", run="run_a/train").status_code == 200
    )
    for path, params, code in [
        ("/loss_curve", {}, 400),
        ("/loss_curve", {"run": "nope"}, 404),
        ("/loss_curve", {"run": "run_a/train", "buckets": "0"}, 400),
        ("/loss_curve", {"run": "run_a/train", "start": "1.5"}, 400),
        ("/composition", {"run": "run_a/train"}, 400),
        ("/composition", {"run": "run_a/train", "step": "100000"}, 404),
        ("/composition", {"run": "nope", "step": "1"}, 404),
    ]:
        assert server.get(path, **params).status_code == code, (path, params)
    # A run of the plugin without composition (no training steps recorded): empty.
    empty = server.json("/loss_curve", run="run_a/validation")
    assert empty["total_steps"] == 0 and empty["buckets"]["first"] == []
