"""The detail view of a two-head model, in headless Chromium against a real `tensorboard`.

A functional model with a `cls` softmax head and a `box` regression head trains with
the real `BatchImageLogger`; the detail view must list every head's per-sample loss,
say which head the prediction and loss come from, and agree with the records read
from the event files. Keras refuses markup in output names, but a log is data: a copy
of the run whose `box` head is renamed to markup (written with the logger's own
summary writer) must show the markup as text and run nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tb_batch_images import contract as fmt
from tb_batch_images import read_batches
from tests.fixtures.browser import Gallery, view_fragment
from tests.fixtures.servers import TensorBoardProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MARKUP_HEAD = "<img src=x onerror=alert(1)>"
HEADS = {"heads": ["cls", "box"], "markup": ["cls", MARKUP_HEAD]}


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    from tb_batch_images import BatchImageLogger

    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("heads_logs")
    inputs = keras.Input((8, 8, 3), name="image")
    hidden = keras.layers.Flatten()(inputs)
    model = keras.Model(
        inputs,
        {
            "cls": keras.layers.Dense(3, activation="softmax")(hidden),
            "box": keras.layers.Dense(2)(hidden),
        },
    )
    model.compile("adam", loss={"cls": "sparse_categorical_crossentropy", "box": "mse"})
    rng = np.random.default_rng(0)
    images = rng.random((16, 8, 8, 3), dtype="float32")
    targets = {
        "cls": np.arange(16) % 3,
        "box": rng.random((16, 2), dtype="float32"),
    }
    model.fit(
        {"image": images, "sample_id": np.arange(16)},
        targets,
        batch_size=8,
        epochs=1,
        verbose=0,
        callbacks=[BatchImageLogger(str(root / "heads"), every_n_steps=1)],
    )
    _copy_with_markup_head(root / "heads" / "train", root / "markup" / "train")
    return root


def _copy_with_markup_head(source: Path, target: Path) -> None:
    from tb_batch_images.host import pixels
    from tests.fixtures.logdirs import StepWriter

    writer = StepWriter(target)
    for batch in read_batches(str(source)):
        record = dict(batch.record)
        record["samples"] = [dict(s) for s in record["samples"]]
        for sample in record["samples"]:
            losses = sample["head_losses"]
            sample["head_losses"] = {"cls": losses["cls"], MARKUP_HEAD: losses["box"]}
        images = [pixels.encode(s.image, 256, "png")[0] for s in batch.samples]
        elements = [fmt.encode_record(record), *images]
        writer.step(batch.step, elements)
    writer.close()


@pytest.fixture(scope="module")
def board(logs: Path) -> Iterator[TensorBoardProcess]:
    server = TensorBoardProcess(logs, "--samples_per_plugin", f"{fmt.PLUGIN_NAME}=0")
    try:
        expected = {"heads/train": 2, "markup/train": 2}
        server.start().wait_until(lambda: server.steps_kept() == expected)
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("run", ["heads", "markup"])
def test_the_detail_view_lists_every_heads_loss_as_text(
    browser_context: Any, board: TensorBoardProcess, logs: Path, run: str
) -> None:
    (batch, _) = list(read_batches(str(logs / run)))
    assert batch.warnings == []
    sample = batch.samples[0]
    assert batch.record["output"] == "cls"
    expected = sample.record["head_losses"]
    assert list(expected) == HEADS[run]

    view = Gallery(browser_context.new_page())
    try:
        view.open(board.url(view_fragment(runs=run, step=batch.step)))
        view.frame.click(f".tile[data-position='{sample.position}']")
        view.frame.wait_for_selector(".detail")
        rows = view.frame.eval_on_selector_all(
            ".detail dd[data-field=head_loss]",
            """cells => cells.map(cell => [cell.dataset.head,
                 cell.previousElementSibling.textContent, cell.textContent])""",
        )
        assert [head for head, _, _ in rows] == HEADS[run]
        for head, key, value in rows:
            assert key == f"loss of {head}"
            number = float(value.split()[0])
            assert number == pytest.approx(
                expected[head], rel=6e-3, abs=1e-3
            )  # 3 digits
        assert rows[0][2].endswith("(shown)") and not rows[1][2].endswith("(shown)")
        assert view.frame.inner_text(".detail dd[data-field=output]") == "cls"
        loss = view.frame.inner_text(".detail dd[data-field=loss]")
        assert loss.endswith("(output cls)")
        view.page.wait_for_timeout(300)  # time for an injected handler to fire
        assert view.injected_markup() == 0
        assert view.errors == [] and view.dialogs == []
    finally:
        view.page.close()
