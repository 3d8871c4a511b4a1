"""Object detection in the gallery: headless Chromium against a real `tensorboard`.

The log directory is written by the real logger during a real (tiny) Keras training:
a keras.io-style `tf.data` pipeline flips pictures and boxes together
(`keras.layers.RandomFlip(..., bounding_box_format="xyxy")`), and the model is a
"colour detector" that finds the red, green and blue object of each picture with
`keras.ops` (a box per colour: class 0, 1, 2), so its predicted boxes are right where
the objects are, and the faults put into the labels show as flags:

- sample 2 has a label box on the empty background (`box_empty_region`, missed);
- sample 3's blue object touches the border, and a step after the flip widens its
  label box by 14 pixels each way, past the border (`box_cut`: Keras's own layers
  clip boxes to the picture, a hand-written step may not);
- sample 4 repeats a label box (`box_duplicate`).

Every rectangle drawn is compared with the boxes `read_batches` reads from the same
log; class names hold markup, which must stay text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tb_batch_images import contract as fmt
from tests.fixtures.browser import Gallery, view_fragment
from tests.fixtures.servers import TensorBoardProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SIDE = 96
SAMPLES = 6
SLOTS = 3
MARKUP = "<img src=x onerror=alert(1)>"
CLASS_NAMES = ["apple", "leaf", MARKUP]
BACKGROUND = (0.86, 0.86, 0.84)
COLOURS = [(0.9, 0.15, 0.1), (0.1, 0.7, 0.2), (0.15, 0.3, 0.9)]
# (class, x1, y1, x2, y2) of each picture's objects; boxes may pass the border.
OBJECTS = [
    [(0, 10, 12, 40, 44), (1, 52, 50, 86, 80)],
    [(2, 20, 30, 70, 60)],
    [(0, 60, 10, 88, 36), (1, 8, 56, 40, 90)],
    [(2, 74, 20, 96, 52), (0, 14, 60, 44, 88)],
    [(1, 30, 24, 66, 70)],
    [(0, 6, 6, 30, 30), (1, 40, 40, 60, 60), (2, 66, 66, 92, 92)],
]
EXTRA_LABELS = {2: (0, 60, 50, 84, 74), 4: (1, 30, 24, 66, 70)}  # empty; duplicate


def _arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    images = np.empty((SAMPLES, SIDE, SIDE, 3), "float32")
    images[:] = BACKGROUND
    boxes = np.zeros((SAMPLES, SLOTS, 4), "float32")
    labels = np.full((SAMPLES, SLOTS), -1, "int32")
    for i, objects in enumerate(OBJECTS):
        for slot, (cls, x1, y1, x2, y2) in enumerate(objects):
            images[i, y1:y2, x1:x2] = COLOURS[cls]
            boxes[i, slot] = [x1, y1, x2, y2]
            labels[i, slot] = cls
        if i in EXTRA_LABELS:
            cls, *box = EXTRA_LABELS[i]
            boxes[i, len(objects)] = box
            labels[i, len(objects)] = cls
    return images, boxes, labels, [f"pic_{i:02d}.png" for i in range(SAMPLES)]


def _colour_detector():
    """Finds each colour's object with keras.ops: [B, 3, 4] boxes, [B, 3, 3] scores
    (slot c: class c at 0.9 - 0.1 c where that colour is present, else uniform)."""
    import keras

    ops = keras.ops

    class ColourBoxes(keras.layers.Layer):
        def call(self, images):
            xs = ops.arange(SIDE, dtype="float32")
            boxes, present = [], []
            for c in range(3):
                a, b = [o for o in range(3) if o != c]
                mask = ops.logical_and(
                    images[..., c] > 0.6,
                    ops.logical_and(images[..., a] < 0.45, images[..., b] < 0.45),
                )
                cols, rows = ops.any(mask, axis=1), ops.any(mask, axis=2)
                x1 = ops.min(ops.where(cols, xs, float(SIDE)), axis=1)
                x2 = ops.max(ops.where(cols, xs + 1.0, 0.0), axis=1)
                y1 = ops.min(ops.where(rows, xs, float(SIDE)), axis=1)
                y2 = ops.max(ops.where(rows, xs + 1.0, 0.0), axis=1)
                boxes.append(ops.stack([x1, y1, x2, y2], axis=-1))
                present.append(ops.cast(ops.any(cols, axis=1), "float32"))
            present = ops.stack(present, axis=1)  # [B, 3]
            confidence = ops.convert_to_tensor([0.9, 0.8, 0.7])
            one_hot = ops.eye(3)[None] * (confidence[None, :, None])
            rest = (1.0 - confidence[None, :, None]) / 2.0 * (1.0 - ops.eye(3)[None])
            scores = present[..., None] * (one_hot + rest) + (
                1.0 - present[..., None]
            ) * (ops.ones((1, 3, 3)) / 3.0)
            return ops.stack(boxes, axis=1), scores

    image = keras.Input((SIDE, SIDE, 3), name="image")
    found_boxes, scores = ColourBoxes()(image)
    nudge = keras.layers.Dense(1, kernel_initializer="zeros")(
        keras.layers.GlobalAveragePooling2D()(image)
    )  # a trainable weight for the optimizer; adds 0
    model = keras.Model(
        image,
        {
            "boxes": found_boxes + 0.0 * nudge[:, :, None],
            "labels": scores + 0.0 * nudge[:, :, None],
        },
    )
    model.compile(
        keras.optimizers.SGD(learning_rate=0.0),
        loss={
            "boxes": "mse",
            "labels": keras.losses.SparseCategoricalCrossentropy(ignore_class=-1),
        },
    )
    return model


def _decode(y_pred, images):
    import keras

    ops = keras.ops
    confidence = ops.max(y_pred["labels"], axis=-1)
    return {
        "boxes": y_pred["boxes"],
        "labels": ops.where(confidence >= 0.5, ops.argmax(y_pred["labels"], -1), -1),
        "confidence": confidence,
    }


def _train(log_dir: Path, seed: int) -> None:
    import keras
    import tensorflow as tf

    from tb_batch_images import BatchImageLogger

    images, boxes, labels, names = _arrays()
    flip = keras.layers.RandomFlip("horizontal", bounding_box_format="xyxy", seed=seed)

    def augment(inputs):
        out = flip(
            {"images": inputs["images"], "bounding_boxes": inputs["bounding_boxes"]}
        )
        boxes = out["bounding_boxes"]["boxes"]
        widen = tf.scatter_nd([[3, 0, 0], [3, 0, 2]], [-14.0, 14.0], tf.shape(boxes))
        bounding_boxes = {**out["bounding_boxes"], "boxes": boxes + widen}
        return {"image": out["images"], "filename": inputs["filename"]}, bounding_boxes

    data = (
        tf.data.Dataset.from_tensor_slices(
            {
                "images": images,
                "filename": names,
                "bounding_boxes": {"boxes": boxes, "labels": labels},
            }
        )
        .batch(SAMPLES)
        .map(augment)
    )
    logger = BatchImageLogger(
        str(log_dir),
        every_n_steps=1,
        class_names=CLASS_NAMES,
        bounding_box_format="xyxy",
        decode_predictions=_decode,
        log_validation=False,
    )
    _colour_detector().fit(data, epochs=2, verbose=0, callbacks=[logger])


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("box_logs")
    _train(root / "detector", seed=1)
    _train(root / "detector_b", seed=7)
    return root


@pytest.fixture(scope="module")
def records(logs: Path) -> dict[tuple[str, int], Any]:
    """What read_batches reads: {(run, step): batch}."""
    from tb_batch_images import read_batches

    return {(b.run, b.step): b for b in read_batches(str(logs))}


@pytest.fixture(scope="module")
def board(logs: Path) -> Iterator[TensorBoardProcess]:
    server = TensorBoardProcess(logs, "--samples_per_plugin", f"{fmt.PLUGIN_NAME}=0")
    try:
        expected = {"detector/train": 2, "detector_b/train": 2}
        server.start().wait_until(lambda: server.steps_kept() == expected)
        yield server
    finally:
        server.stop()


@pytest.fixture
def view(browser_context: Any) -> Iterator[Gallery]:
    gallery = Gallery(browser_context.new_page())
    yield gallery
    gallery.page.close()


def _open(view: Gallery, board: TensorBoardProcess, **state: str) -> None:
    view.open(board.url(view_fragment(**state)))
    view.frame.wait_for_selector(".tile svg.box-overlay", state="attached")


def _rects(view: Gallery, scope: str) -> list[dict[str, Any]]:
    return view.frame.eval_on_selector_all(
        f"{scope} svg.box-overlay g.box",
        """groups => groups.map(g => {
             const r = g.querySelector('rect');
             return {side: g.dataset.side, index: Number(g.dataset.index),
                     cls: g.dataset.class, flags: g.dataset.flags,
                     box: ['x', 'y', 'width', 'height'].map(k => Number(r.getAttribute(k)))};
           })""",
    )


def _tile_of(view: Gallery, position: int) -> str:
    return f".tile[data-position='{position}']"


def _xywh(box: list[float]) -> list[float]:
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1, y2 - y1]


def test_the_boxes_drawn_are_the_logged_boxes_of_each_sample(
    view: Gallery, board: TensorBoardProcess, records
):
    _open(view, board, runs="detector", step="1")
    batch = records[("detector/train", 1)]
    assert view.control("boxes").is_visible()
    assert view.control("boxes").input_value() == "both"
    for sample in batch.samples:
        drawn = _rects(view, _tile_of(view, sample.position))
        labels = [r for r in drawn if r["side"] == "label"]
        predictions = [r for r in drawn if r["side"] == "prediction"]
        np.testing.assert_allclose(
            [r["box"] for r in labels],
            [_xywh(b) for b in sample.boxes["label"].tolist()],
            atol=0.01,
        )
        np.testing.assert_allclose(
            np.reshape([r["box"] for r in predictions], (-1, 4)),
            [_xywh(b) for b in sample.boxes["prediction"].tolist()],
            atol=0.01,
        )
        assert [int(r["cls"]) for r in labels] == sample.boxes["label_classes"].tolist()
    # The overlay lies exactly over the picture.
    image, overlay = view.frame.evaluate(
        """(tile) => ['img', 'svg.box-overlay'].map(selector => {
             const box = document.querySelector(tile + ' ' + selector).getBoundingClientRect();
             return [box.x, box.y, box.width, box.height];
           })""",
        _tile_of(view, 0),
    )
    assert image == pytest.approx(overlay, abs=0.5)
    # The colour detector finds every real object: flagged samples are the faults.
    assert any(
        "box_empty_region" in s.flags and "box_missed" in s.flags for s in batch.samples
    )
    assert view.errors == [] and view.console_errors == []


def test_the_toggle_shows_label_prediction_both_or_no_boxes(
    view: Gallery, board: TensorBoardProcess
):
    _open(view, board, runs="detector")
    sides = lambda: {r["side"] for r in _rects(view, ".grid")}  # noqa: E731
    assert sides() == {"label", "prediction"}
    view.control("boxes").select_option("label")
    view.frame.wait_for_selector("svg.box-overlay[data-boxes=label]", state="attached")
    assert sides() == {"label"}
    assert "boxes=label" in view.page.url
    view.control("boxes").select_option("prediction")
    view.frame.wait_for_selector(
        "svg.box-overlay[data-boxes=prediction]", state="attached"
    )
    assert sides() == {"prediction"}
    view.control("boxes").select_option("off")
    view.frame.wait_for_selector("svg.box-overlay", state="detached")
    assert view.frame.locator(".tile").count() == SAMPLES
    assert view.frame.locator(".box-legend").count() == 0


def test_the_flag_filter_keeps_the_samples_whose_boxes_fail_a_check(
    view: Gallery, board: TensorBoardProcess, records
):
    _open(view, board, runs="detector", step="1")
    batch = records[("detector/train", 1)]
    for flag in ("box_empty_region", "box_cut", "box_duplicate"):
        expected = sorted(s.position for s in batch.samples if flag in s.flags)
        assert len(expected) == 1, flag
        view.control("flag").select_option(flag)
        view.frame.wait_for_function(
            "n => document.querySelectorAll('.tile').length === n", arg=len(expected)
        )
        assert [tile["position"] for tile in view.tiles()] == expected
        flagged = [r for r in _rects(view, ".grid") if r["flags"]]
        assert flag.removeprefix("box_") in {r["flags"] for r in flagged}
    view.control("clear").click()
    view.frame.wait_for_function(
        "n => document.querySelectorAll('.tile').length === n", arg=SAMPLES
    )
    # Box counts: at least 3 label boxes.
    three = sorted(s.position for s in batch.samples if len(s.boxes["label"]) >= 3)
    view.control("min_boxes").fill("3")
    view.frame.wait_for_function(
        "n => document.querySelectorAll('.tile').length === n", arg=len(three)
    )
    assert [tile["position"] for tile in view.tiles()] == three
    assert "min_boxes=3" in view.page.url


def test_sorting_by_box_count(view: Gallery, board: TensorBoardProcess, records):
    _open(view, board, runs="detector", step="1")
    batch = records[("detector/train", 1)]
    counts = {s.position: len(s.boxes["label"]) for s in batch.samples}
    view.control("sort").select_option("boxes_desc")
    expected = sorted(counts, key=lambda p: (-counts[p], p))
    view.frame.wait_for_function(
        "order => [...document.querySelectorAll('.tile')].map(t => t.dataset.position).join() === order",
        arg=",".join(map(str, expected)),
    )


def test_the_detail_view_lists_the_boxes_with_names_as_text(
    view: Gallery, board: TensorBoardProcess, records
):
    _open(view, board, runs="detector", step="1")
    batch = records[("detector/train", 1)]
    sample = next(s for s in batch.samples if "box_cut" in s.flags)
    view.frame.click(_tile_of(view, sample.position))
    view.frame.wait_for_selector(".detail .box-table")
    rows = view.frame.eval_on_selector_all(
        ".detail .box-row",
        "rows => rows.map(r => [r.dataset.side, [...r.cells].map(c => c.textContent)])",
    )
    label_rows = [cells for side, cells in rows if side == "label"]
    assert len(label_rows) == len(sample.boxes["label"])
    assert len(rows) - len(label_rows) == len(sample.boxes["prediction"])
    assert any("cut" in cells[-1] for cells in label_rows)
    texts = view.frame.eval_on_selector_all(
        ".detail svg.box-overlay text", "nodes => nodes.map(n => n.textContent)"
    )
    assert any(MARKUP in text for text in texts)  # class 2's name, as text
    view.screenshot("boxes-detail.png")
    view.frame.locator("[data-control=detail_boxes]").select_option("label")
    view.frame.wait_for_selector(".detail svg.box-overlay[data-boxes=label]")
    view.page.wait_for_timeout(300)
    assert view.injected_markup() == 0
    assert view.dialogs == [] and view.errors == []
    assert view.frame.locator(".detail svg g.is-prediction").count() == 0


def test_compare_and_history_views_draw_the_boxes(
    view: Gallery, board: TensorBoardProcess
):
    _open(view, board, runs="detector,detector_b")
    assert view.frame.locator(".column").count() == 2
    for column in ("detector", "detector_b"):
        assert _rects(view, f".column[data-group='{column}']")
    view.frame.locator(".tile .history-button").first.click()
    view.frame.wait_for_selector(".strip-item svg.box-overlay", state="attached")
    strip = view.frame.locator(".strip-item").count()
    assert strip == 4  # two steps in two runs
    assert view.frame.locator(".strip-item svg.box-overlay").count() == strip


def test_screenshot_of_the_boxes(view: Gallery, board: TensorBoardProcess):
    _open(view, board, runs="detector", step="1")
    view.screenshot("boxes.png")


def test_the_log_holds_what_the_page_was_built_from(records):
    """The constructed case: the faults are where this file put them."""
    for (run, _), batch in records.items():
        assert batch.record["task"] == "detection", run
        by_name = {s.filename: s for s in batch.samples}
        assert "box_empty_region" in by_name["pic_02.png"].flags
        assert "box_cut" in by_name["pic_03.png"].flags
        assert "box_duplicate" in by_name["pic_04.png"].flags
        clean = [by_name[f"pic_0{i}.png"] for i in (0, 1, 5)]
        for sample in clean:
            assert json.dumps(sample.record["boxes"]["label_flags"]).count('"') == 0
            assert sample.record["boxes"]["missed"] == 0
            assert sample.record["boxes"]["spurious"] == 0
