"""The loss curve in headless Chromium, against a real `tensorboard` and real logs.

A classifier of drawn shapes trains with the real `BatchImageLogger` (every 50 steps);
at step 130 its batch has wrong labels, after the model has learned: the logger's
spike trigger logs it. The tab must draw the curve (one bucket per step here), list
the spike as the run's anomaly, open the spike's batch on a click on the curve (its
badge, the culprits first), and show the file list of a step that was not logged,
as the event files hold it (`read_composition`). The screenshot is the README's. A
second run has a NaN pixel in one sample at step 90 and stops there (TerminateOnNaN):
its batch shows the culprit first, its prediction and loss as "NaN".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tb_batch_images import contract as fmt
from tb_batch_images import read_batches, read_composition
from tests.fixtures.browser import Gallery, view_fragment
from tests.fixtures.servers import TensorBoardProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BATCH, STEPS, SPIKE, UNLOGGED = 16, 160, 130, 77
NAN_STEP, NAN_POSITION = 90, 3
CLASSES = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    from tb_batch_images import BatchImageLogger

    root = tmp_path_factory.mktemp("loss_curve_logs")
    rng = np.random.default_rng(0)
    n = BATCH * STEPS
    labels = np.arange(n) % 3
    images = rng.uniform(0.0, 0.35, (n, 16, 16, 3)).astype("float32")
    rows, cols = np.mgrid[0:16, 0:16]
    for index, label in enumerate(labels):
        cx, cy = rng.integers(5, 11, 2)
        mask = (cols - cx) ** 2 + (rows - cy) ** 2 <= 16
        images[index][mask, label] = 0.95
    filenames = [f"shapes/{CLASSES[i % 3]}/{i:04d}.png" for i in range(n)]
    wrong = labels.copy()
    wrong[SPIKE * BATCH : (SPIKE + 1) * BATCH] += 1  # wrong labels, once learned
    wrong %= 3
    with_nan = images.copy()
    with_nan[NAN_STEP * BATCH + NAN_POSITION, 8, 8, 0] = np.nan
    for run, x, y, activation, callbacks in (
        ("spike", images, wrong, "relu", []),
        ("nan", with_nan, labels, "tanh", [keras.callbacks.TerminateOnNaN()]),
    ):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((16, 16, 3)),
                keras.layers.Conv2D(8, 3, activation=activation),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3),
            ]
        )
        model.compile(
            keras.optimizers.Adam(0.02),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        logger = BatchImageLogger(
            str(root / run),
            every_n_steps=50,
            spike_warmup=60,
            class_names=CLASSES,
            filenames=filenames,
        )
        model.fit(
            {"image": x, "sample_id": np.arange(n)},
            y,
            batch_size=BATCH,
            shuffle=False,
            verbose=0,
            callbacks=[logger, *callbacks],
        )
    return root


@pytest.fixture(scope="module")
def board(logs: Path) -> Iterator[TensorBoardProcess]:
    server = TensorBoardProcess(logs, "--samples_per_plugin", f"{fmt.PLUGIN_NAME}=0")
    try:
        expected = {"spike/train": 5, "nan/train": 3}
        server.start().wait_until(lambda: server.steps_kept() == expected)
        yield server
    finally:
        server.stop()


def _click_step(view: Gallery, step: int) -> None:
    """Clicks the curve where `step` is drawn (one bucket per step here)."""
    canvas = view.frame.locator(".loss-canvas")
    box = canvas.bounding_box()
    count = int(canvas.get_attribute("data-drawn"))
    x = (step + 0.5) / count * box["width"]
    canvas.click(position={"x": x, "y": box["height"] / 2})


def test_the_curve_opens_the_spike_and_shows_an_unlogged_steps_files(
    browser_context: Any, board: TensorBoardProcess, logs: Path
) -> None:
    logged = {b.step: b for b in read_batches(str(logs), run="spike/train")}
    assert sorted(logged) == [0, 50, 100, SPIKE, 150]
    assert logged[SPIKE].trigger == fmt.TRIGGER_SPIKE
    composition = read_composition(str(logs), "spike/train")
    assert composition.anomalies() == [(SPIKE, fmt.TRIGGER_SPIKE)]

    view = Gallery(browser_context.new_page())
    try:
        view.open(board.url(view_fragment(runs="spike", step=0)))
        view.frame.wait_for_selector(f".loss-canvas[data-drawn='{STEPS}']")
        anomalies = view.frame.eval_on_selector_all(
            ".loss-anomalies .anomaly",
            "items => items.map(item => [Number(item.dataset.step), item.dataset.trigger])",
        )
        assert anomalies == [[SPIKE, fmt.TRIGGER_SPIKE]]

        # A click on the spike opens its batch: the badge, the culprits first.
        _click_step(view, SPIKE)
        view.wait_ready(step=SPIKE)
        badge = view.frame.locator(".batch-header .trigger-badge")
        assert badge.get_attribute("data-trigger") == fmt.TRIGGER_SPIKE
        assert badge.inner_text() == "loss spike"
        tiles = view.tiles()
        culprits = view.frame.eval_on_selector_all(
            ".tile", "tiles => tiles.map(t => t.classList.contains('is-culprit'))"
        )
        expected = [s for s in logged[SPIKE].samples if s.culprit]
        assert expected and culprits[: len(expected)] == [True] * len(expected)
        assert {t["filename"] for t in tiles[: len(expected)]} == {
            s.filename for s in expected
        }
        view.screenshot("loss_curve.png")

        # A step that was not logged: its file list and loss, from the composition.
        _click_step(view, UNLOGGED)
        files = view.frame.wait_for_selector(f".step-files[data-step='{UNLOGGED}']")
        names = view.frame.eval_on_selector_all(
            ".step-files .file-list li .file-name",
            "items => items.map(i => i.textContent)",
        )
        assert names == composition.filenames(UNLOGGED)
        assert len(names) == BATCH
        assert f"Step {UNLOGGED} was not logged" in files.inner_text()
        assert view.errors == [] and view.dialogs == []
    finally:
        view.page.close()


def test_a_nan_batch_shows_its_culprit_first_and_nan_as_nan(
    browser_context: Any, board: TensorBoardProcess, logs: Path
) -> None:
    logged = {b.step: b for b in read_batches(str(logs), run="nan/train")}
    assert sorted(logged) == [0, 50, NAN_STEP]
    assert logged[NAN_STEP].trigger == fmt.TRIGGER_NON_FINITE
    view = Gallery(browser_context.new_page())
    try:
        view.open(board.url(view_fragment(runs="nan", step=NAN_STEP)))
        view.wait_ready(step=NAN_STEP)
        badge = view.frame.locator(".batch-header .trigger-badge")
        assert badge.inner_text() == "non-finite"
        first = view.tiles()[0]
        assert first["position"] == NAN_POSITION
        assert first["prediction"] == "NaN" and first["loss"] == "NaN"
        assert fmt.FLAG_NAN in first["flags"]
        assert fmt.FLAG_PREDICTION_NON_FINITE in first["flags"]
        culprits = view.frame.eval_on_selector_all(
            ".tile.is-culprit", "tiles => tiles.map(t => Number(t.dataset.position))"
        )
        assert culprits == [NAN_POSITION]
        anomalies = view.frame.eval_on_selector_all(
            ".loss-anomalies .anomaly", "items => items.map(i => i.textContent)"
        )
        assert anomalies == [f"step {NAN_STEP} · non-finite · loss NaN"]
        assert view.errors == [] and view.dialogs == []
    finally:
        view.page.close()
