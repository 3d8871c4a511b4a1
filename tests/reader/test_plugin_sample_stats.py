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
    # A run whose data map is off: the batches carry no sample ids.
    plain = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    plain.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.warns(RuntimeWarning, match="data map") as caught:
        plain.fit(
            images,
            labels,
            batch_size=8,
            epochs=1,
            verbose=0,
            callbacks=[BatchImageLogger(str(logdir / "run_off"), every_n_steps=3)],
        )
    logdir.joinpath("warning.txt").write_text(
        next(str(w.message) for w in caught if "data map" in str(w.message))
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


@pytest.mark.parametrize("load_fast", [False, True])
def test_sample_routes_find_each_samples_logged_pictures_and_epochs(
    stats_logdir, plugin_server, load_fast
):
    from tb_batch_images import read_batches

    server = plugin_server(stats_logdir, load_fast)
    server.wait_for(
        lambda: [
            r for r in server.json("/sample_stats_runs")["runs"] if len(r["steps"]) == 2
        ]
    )
    # sample id -> (step, source) of its last picture: a logged batch, or a watchlist
    # capture (the default watchlist=32 watches the 32 top suspects of epoch 0).
    latest = {}
    for source, watchlist in (("batch", False), ("watchlist", True)):
        for batch in read_batches(str(stats_logdir), "run_a/train", watchlist):
            for sample in batch.samples:
                if latest.get(sample.sample_id, (-1,))[0] <= batch.step:
                    latest[sample.sample_id] = (batch.step, source)
    never = sorted(set(range(48)) - set(latest))
    assert latest and never  # every 3rd step is logged: some samples never are
    watched = [i for i, (_, source) in latest.items() if source == "watchlist"]
    batched = [i for i, (_, source) in latest.items() if source == "batch"]
    assert watched and batched
    ids = sorted(batched)[:5] + sorted(watched)[:5] + never[:2]
    answer = server.json(
        "/sample_pictures", run="run_a/train", ids=",".join(map(str, ids))
    )
    for sample_id in ids:
        picture = answer["pictures"][str(sample_id)]
        if sample_id in never:
            assert picture is None
            continue
        assert (picture["step"], picture["source"]) == latest[sample_id]
        assert picture["sample_id"] == sample_id
        assert picture["filename"] == f"img_{sample_id}.png"
        image = server.get("/image", key=picture["image"])
        assert image.status_code == 200 and image.data[:4] == b"\x89PNG"

    sample_id = sorted(latest)[0]
    detail = server.json("/sample", run="run_a/train", sample_id=sample_id)
    expected = read_sample_stats(str(stats_logdir)).epochs
    assert [row["epoch"] for row in detail["epochs"]] == [0, 1]
    for row, epoch in zip(detail["epochs"], expected, strict=True):
        assert row["count"] == epoch.columns["count"][sample_id]
        assert row["confidence"] == pytest.approx(
            float(epoch.columns["confidence"][sample_id]), rel=1e-5
        )
    assert detail["filename"] == f"img_{sample_id}.png"
    assert detail["appearances"][-1]["step"] == latest[sample_id][0]

    for route, params, status in [
        ("/sample_pictures", {"run": "run_a/train", "ids": "1,x"}, 400),
        ("/sample_pictures", {"run": "run_a/train", "ids": "-1"}, 400),
        ("/sample_pictures", {"run": "run_a/train"}, 400),
        (
            "/sample_pictures",
            {"run": "run_a/train", "ids": ",".join(["1"] * 1001)},
            400,
        ),
        ("/sample_pictures", {"run": "nope", "ids": "1"}, 404),
        ("/sample", {"run": "run_a/train", "sample_id": "1.5"}, 400),
        ("/sample", {"run": "run_a/train", "sample_id": "48"}, 404),
        ("/sample", {"run": "nope", "sample_id": "1"}, 404),
    ]:
        response = server.get(route, **params)
        assert response.status_code == status, (route, params, response.data)
        assert "error" in response.get_json()


@pytest.mark.parametrize("load_fast", [False, True])
def test_confusion_csv_and_why_the_data_map_is_off(
    stats_logdir, plugin_server, load_fast
):
    server = plugin_server(stats_logdir, load_fast)
    listing = server.wait_for(
        lambda: (
            answer
            if (answer := server.json("/sample_stats_runs"))["off"]
            and [r for r in answer["runs"] if len(r["steps"]) == 2]
            else None
        )
    )
    # The run without ids: the logger's own reason, as its warning said it.
    warning = (stats_logdir / "warning.txt").read_text()
    assert [off["run"] for off in listing["off"]] == ["run_off/train"]
    assert listing["off"][0]["reason"] in warning
    assert "sample_id" in listing["off"][0]["reason"]

    answer = server.json("/sample_stats", run="run_a/train")
    stats = read_sample_stats(str(stats_logdir), run="run_a/train")
    # The confusion matrix: given label x the prediction of the last appearance,
    # counted from read_sample_stats's rows of the last epoch.
    expected = np.zeros((3, 3), int)
    for row in stats:
        if row["epoch"] == 1:
            expected[row["label"], row["last_predicted"]] += 1
    assert answer["confusion"] == expected.tolist()
    assert sum(map(sum, answer["confusion"])) == 48
    right = [c["right"] for c in answer["classes"]]
    assert right == np.diag(expected).tolist()
    assert [p["epoch"] for p in answer["class_trend"]] == [0, 1]
    table = stats.epochs[-1]
    for index, summary in enumerate(table.class_summary()):
        assert answer["class_trend"][-1]["loss"][index] == pytest.approx(
            summary["loss"], rel=1e-5
        )
    assert answer["reliability"] == table.reliability()
    assert answer["non_finite"] == 0

    # The CSV download: every sample seen, ranked as read_sample_stats ranks them.
    response = server.get("/suspects.csv", run="run_a/train")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert "suspects_run_a_train_epoch1.csv" in response.headers["Content-Disposition"]
    assert response.data.decode("utf-8") == stats.suspects(None).to_csv()
    assert server.get("/suspects.csv", run="nope").status_code == 404
    assert server.get("/suspects.csv", run="run_a/train", step="x").status_code == 400
