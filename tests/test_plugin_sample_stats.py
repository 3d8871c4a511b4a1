"""The plugin's data-map routes over both data providers, on a real training's logs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tb_batch_images import BatchImageLogger, read_sample_stats


@pytest.fixture(scope="module")
def stats_logdir(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("stats")
    rng = np.random.default_rng(0)
    images = rng.random((48, 8, 8, 1), dtype=np.float32)
    labels = np.arange(48) % 3
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(
        {"image": images, "sample_id": np.arange(48)},
        labels,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[
            BatchImageLogger(
                str(logdir / "run_a"),
                every_n_steps=3,
                filenames=[f"img_{i}.png" for i in range(48)],
                class_names=["a", "b", "c"],
            )
        ],
    )
    return logdir


@pytest.mark.parametrize("load_fast", [False, True])
def test_sample_stats_routes_serve_what_the_reader_reads(
    stats_logdir, plugin_server, load_fast
):
    server = plugin_server(stats_logdir, load_fast)
    runs = server.wait_for(
        lambda: [
            r for r in server.json("/sample_stats_runs")["runs"] if len(r["steps"]) == 2
        ]
    )
    assert [r["run"] for r in runs] == ["run_a/train"]
    answer = server.json("/sample_stats", run="run_a/train")
    expected = read_sample_stats(str(stats_logdir)).epochs[-1]
    assert answer["epoch"] == 1 and answer["step"] == runs[0]["steps"][-1]
    assert answer["num_samples"] == 48 and answer["filenames"][5] == "img_5.png"
    assert answer["class_names"] == ["a", "b", "c"]
    np.testing.assert_allclose(
        answer["columns"]["confidence"], expected.columns["confidence"], rtol=1e-5
    )
    assert answer["columns"]["count"] == [2] * 48
    assert answer["suspects"][:10] == expected.suspects(10)
    first = server.json("/sample_stats", run="run_a/train", step=runs[0]["steps"][0])
    assert first["epoch"] == 0 and first["columns"]["count"] == [1] * 48
    missing = server.get("/sample_stats", run="nope")
    assert missing.status_code == 404
