"""Segmentation masks in the gallery: headless Chromium against a real `tensorboard`.

The log directory is written here through the writer's own path (`StepWriter`:
`host.writer.write_step`, a pack file of the record, then the pictures, then the
masks as grey PNGs, docs/format.md), with masks built so that every
number is known: the pixel accuracy and mean IoU each sample shows are computed in
this file with numpy from the masks themselves, never by product code.

Runs:
- `seg`: "classes", 3 samples of 8x8. Label: left half class 1, right half class 2.
  Predictions: sample 0 the left 3 columns class 1 (column 3 differs from the label),
  sample 1 the label itself, sample 2 a wider class 1 and two rows of class 0, with
  its label's last row ignored (255);
- `binary`: one sigmoid mask: a foreground square on background, a few ignored pixels;
- `depth`: "values", a dense regression output shown as a viridis map beside the
  picture;
- `markup`: `seg` with a class named `<img src=x onerror=alert(1)>`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tb_batch_images import contract as fmt
from tests.fixtures.browser import Gallery, view_fragment
from tests.fixtures.servers import TensorBoardProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SIZE = 8
IGNORED = 255
MARKUP = "<img src=x onerror=alert(1)>"
CLASS_NAMES = ["sky", "tree", "road"]


# -- the constructed case ------------------------------------------------------------
def _seg_masks() -> list[tuple[np.ndarray, np.ndarray]]:
    """(label, prediction) per sample, uint8 8x8 class maps."""
    label = np.full((SIZE, SIZE), 2, np.uint8)
    label[:, : SIZE // 2] = 1
    first = np.full((SIZE, SIZE), 2, np.uint8)
    first[:, :3] = 1
    third_label = label.copy()
    third_label[-1, :] = IGNORED
    third = np.full((SIZE, SIZE), 2, np.uint8)
    third[:, :5] = 1
    third[:2, :] = 0
    return [(label, first), (label.copy(), label.copy()), (third_label, third)]


def scores(label: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
    """Pixel accuracy, mean IoU and the classes present, over non-ignored pixels."""
    valid = label != IGNORED
    right = prediction[valid] == label[valid]
    classes = sorted(set(np.unique(label[valid])) | set(np.unique(prediction[valid])))
    ious = []
    for index in classes:
        in_label = (label == index) & valid
        in_prediction = (prediction == index) & valid
        union = np.logical_or(in_label, in_prediction).sum()
        ious.append(np.logical_and(in_label, in_prediction).sum() / union)
    return {
        "pixel_accuracy": float(right.mean()),
        "mean_iou": float(np.mean(ious)),
        "mask_classes": [int(index) for index in classes],
    }


def _picture(seed: int) -> np.ndarray:
    """A soft gradient with a little noise (the masks stay easy to see over it)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    grey = 70 + 12 * rows + 6 * cols + rng.integers(0, 12, (SIZE, SIZE))
    return np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)


def _record(samples: list[dict[str, Any]], masks: str, class_names: Any) -> dict:
    from benchmarks import make_logdir

    record = make_logdir.batch_record(
        mode="train",
        step=0,
        epoch=0,
        batch=0,
        sequence=0,
        sample_ids=list(range(len(samples))),
        image_size=SIZE,
    )
    record.update(
        task="raw",
        class_names=class_names,
        num_classes=len(class_names) if class_names else None,
        masks=masks,
        mask_shape=[SIZE, SIZE],
    )
    for position, (sample, extra) in enumerate(
        zip(record["samples"], samples, strict=True)
    ):
        sample.update(
            label=None,
            label_name=None,
            prediction=None,
            prediction_name=None,
            confidence=None,
            correct=None,
            top_k=[],
            output_summary={
                "shape": [SIZE, SIZE, 3],
                "min": 0.0,
                "max": 1.0,
                "mean": 0.5,
            },
            label_mask=len(samples) + 2 * position,
            prediction_mask=len(samples) + 2 * position + 1,
            **extra,
        )
    return record


def _write_run(
    run_dir: Path,
    masks: str,
    pairs: list[tuple[np.ndarray, np.ndarray]],
    extras: list[dict[str, Any]],
    class_names: Any,
) -> dict:
    from tb_batch_images.host import pixels
    from tests.fixtures.logdirs import StepWriter

    record = _record(extras, masks, class_names)
    elements = [fmt.encode_record(record)]
    elements += [pixels.encode_png(_picture(index)) for index in range(len(pairs))]
    for label, prediction in pairs:
        elements += [pixels.encode_png(label), pixels.encode_png(prediction)]
    writer = StepWriter(run_dir)
    writer.step(0, elements)
    writer.close()
    return record


SEG = _seg_masks()
SEG_SCORES = [scores(label, prediction) for label, prediction in SEG]


def _binary_masks() -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros((SIZE, SIZE), np.uint8)
    label[2:6, 2:6] = 1
    label[0, 0] = IGNORED
    prediction = np.zeros((SIZE, SIZE), np.uint8)
    prediction[2:6, 3:7] = 1
    return label, prediction


def _depth_maps() -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    label = (cols * 32 + rows * 3).astype(np.uint8)
    prediction = (255 - label).astype(np.uint8)
    return label, prediction


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mask_logs")
    _write_run(root / "seg" / "train", "classes", SEG, SEG_SCORES, CLASS_NAMES)
    markup_names = [CLASS_NAMES[0], MARKUP, CLASS_NAMES[2]]
    _write_run(root / "markup" / "train", "classes", SEG, SEG_SCORES, markup_names)
    binary = _binary_masks()
    _write_run(root / "binary" / "train", "binary", [binary], [scores(*binary)], None)
    depth = _depth_maps()
    ranges = {"label_range": [0.0, 10.0], "prediction_range": [0.0, 12.0]}
    _write_run(root / "depth" / "train", "values", [depth], [ranges], None)
    return root


@pytest.fixture(scope="module")
def board(logs: Path) -> Iterator[TensorBoardProcess]:
    server = TensorBoardProcess(logs, "--samples_per_plugin", f"{fmt.PLUGIN_NAME}=0")
    try:
        expected = {f"{run}/train": 1 for run in ("seg", "markup", "binary", "depth")}
        server.start().wait_until(lambda: server.steps_kept() == expected)
        yield server
    finally:
        server.stop()


@pytest.fixture
def view(browser_context: Any) -> Iterator[Gallery]:
    gallery = Gallery(browser_context.new_page())
    yield gallery
    gallery.page.close()


# -- reading the page ----------------------------------------------------------------
def _palette(view: Gallery) -> list[list[int]]:
    return view.frame.evaluate(
        "async () => (await import('./static/masks.js')).PALETTE"
    )


def _canvas(view: Gallery, selector: str) -> str:
    """Waits until the canvas at `selector` is drawn; returns the drawn selector."""
    drawn = selector + "[data-state=drawn]"
    view.frame.wait_for_selector(drawn, state="attached")
    return drawn


def _pixels(view: Gallery, selector: str, points: list[tuple[int, int]]) -> list:
    """RGBA of the canvas at each (x, y) of its own pixels."""
    return view.frame.evaluate(
        """([selector, points]) => {
             const canvas = document.querySelector(selector);
             const context = canvas.getContext('2d');
             return points.map(([x, y]) => [...context.getImageData(x, y, 1, 1).data]);
           }""",
        [selector, points],
    )


def _percent(text: str) -> float:
    assert text.endswith("%"), text
    return float(text[:-1]) / 100


def _captions(view: Gallery, field: str) -> dict[int, str]:
    return view.frame.eval_on_selector_all(
        f".tile [data-field={field}]",
        """cells => Object.fromEntries(cells.map(cell =>
             [cell.closest('.tile').dataset.position, cell.textContent]))""",
    )


def _tile(position: int) -> str:
    return f".tile[data-position='{position}']"


def _open(view: Gallery, board: TensorBoardProcess, **state: str) -> None:
    view.open(board.url(view_fragment(**state)))


# -- the tests -----------------------------------------------------------------------
def test_scores_of_the_constructed_case_are_what_the_masks_say():
    """The case itself: sample 0 differs from its label in column 3 only."""
    (label, prediction), *_ = SEG
    assert (label != prediction).sum() == SIZE  # one column of 8 pixels
    assert SEG_SCORES[0]["pixel_accuracy"] == pytest.approx(56 / 64)
    assert SEG_SCORES[0]["mean_iou"] == pytest.approx((24 / 32 + 32 / 40) / 2)
    assert SEG_SCORES[1] == {
        "pixel_accuracy": 1.0,
        "mean_iou": 1.0,
        "mask_classes": [1, 2],
    }
    assert SEG_SCORES[2]["mask_classes"] == [0, 1, 2]
    assert len({round(s["mean_iou"], 6) for s in SEG_SCORES}) == 3  # a strict order


def test_the_overlay_is_drawn_in_the_class_colours_and_the_toggle_switches_masks(
    view: Gallery, board: TensorBoardProcess
):
    _open(view, board, runs="seg")
    palette = _palette(view)
    assert view.control("masks").is_visible()
    assert view.control("masks").input_value() == "prediction"
    overlay = _canvas(view, f"{_tile(0)} canvas.mask-overlay[data-mask=prediction]")
    # Left half: class 1 in both masks; column 3: class 2 predicted, class 1 labelled.
    left, column_3, right = _pixels(view, overlay, [(0, 4), (3, 4), (6, 4)])
    assert left == [*palette[1], 255]
    assert column_3 == [*palette[2], 255]
    assert right == [*palette[2], 255]
    assert palette[1] != palette[2]

    # The overlay lies exactly over the picture.
    boxes = view.frame.evaluate(
        """(tile) => ['img', 'canvas.mask-overlay'].map(selector => {
             const box = document.querySelector(tile + ' ' + selector).getBoundingClientRect();
             return [box.x, box.y, box.width, box.height];
           })""",
        _tile(0),
    )
    assert boxes[0] == pytest.approx(boxes[1], abs=0.5)

    view.control("masks").select_option("label")
    overlay = _canvas(view, f"{_tile(0)} canvas.mask-overlay[data-mask=label]")
    left, column_3, right = _pixels(view, overlay, [(0, 4), (3, 4), (6, 4)])
    assert (left, column_3, right) == (
        [*palette[1], 255],
        [*palette[1], 255],
        [*palette[2], 255],
    )
    assert view.frame.locator(".mask-overlay[data-mask=prediction]").count() == 0
    # Sample 2's label ignores its last row: transparent there.
    ignored = _canvas(view, f"{_tile(2)} canvas.mask-overlay[data-mask=label]")
    assert _pixels(view, ignored, [(0, SIZE - 1)])[0][3] == 0
    assert "masks=label" in view.page.url

    view.control("masks").select_option("off")
    view.frame.wait_for_selector(".mask-overlay", state="detached")
    assert view.frame.locator(".tile").count() == 3
    assert view.frame.locator(".mask-legend").count() == 0
    assert "masks=off" in view.page.url
    assert view.errors == [] and view.console_errors == []


def test_the_opacity_slider_sets_the_overlay_opacity_and_the_url(
    view: Gallery, board: TensorBoardProcess
):
    _open(view, board, runs="seg")
    overlay = _canvas(view, f"{_tile(0)} canvas.mask-overlay")

    def opacity() -> float:
        return float(
            view.frame.eval_on_selector(overlay, "c => getComputedStyle(c).opacity")
        )

    assert opacity() == pytest.approx(0.5)
    assert view.control("mask_opacity").input_value() == "50"
    view.control("mask_opacity").fill("20")
    view.frame.wait_for_function(
        "s => getComputedStyle(document.querySelector(s)).opacity === '0.2'",
        arg=overlay,
    )
    assert opacity() == pytest.approx(0.2)
    assert f"p.{fmt.PLUGIN_NAME}.mask_opacity=20" in view.page.url
    # Kept in the URL: a fresh page opens with it.
    view.page.goto("about:blank")
    _open(view, board, runs="seg", mask_opacity="80")
    overlay = _canvas(view, f"{_tile(0)} canvas.mask-overlay")
    assert opacity() == pytest.approx(0.8)
    assert view.control("mask_opacity").input_value() == "80"


def test_mean_iou_and_pixel_accuracy_are_shown_sorted_and_filtered(
    view: Gallery, board: TensorBoardProcess
):
    _open(view, board, runs="seg")
    shown_iou = _captions(view, "mean_iou")
    shown_accuracy = _captions(view, "pixel_accuracy")
    for position, expected in enumerate(SEG_SCORES):
        # formatPercent: one decimal of a percent.
        assert _percent(shown_iou[str(position)]) == pytest.approx(
            expected["mean_iou"], abs=0.0005
        )
        assert _percent(shown_accuracy[str(position)]) == pytest.approx(
            expected["pixel_accuracy"], abs=0.0005
        )

    offered = view.frame.eval_on_selector_all(
        "[data-control=sort] option",
        "options => options.filter(o => !o.hidden).map(o => o.value)",
    )
    assert {"mean_iou_asc", "pixel_accuracy_desc"} <= set(offered)  # masks here
    by_iou = sorted(range(3), key=lambda position: SEG_SCORES[position]["mean_iou"])
    view.control("sort").select_option("mean_iou_asc")
    view.frame.wait_for_function(
        "order => [...document.querySelectorAll('.tile')].map(t => t.dataset.position).join() === order",
        arg=",".join(map(str, by_iou)),
    )
    assert [tile["position"] for tile in view.tiles()] == by_iou
    view.control("sort").select_option("mean_iou_desc")
    view.frame.wait_for_function(
        "first => document.querySelector('.tile').dataset.position === first",
        arg=str(by_iou[-1]),
    )
    assert [tile["position"] for tile in view.tiles()] == by_iou[::-1]
    by_accuracy = sorted(range(3), key=lambda p: SEG_SCORES[p]["pixel_accuracy"])
    view.control("sort").select_option("pixel_accuracy_asc")
    view.frame.wait_for_function(
        "order => [...document.querySelectorAll('.tile')].map(t => t.dataset.position).join() === order",
        arg=",".join(map(str, by_accuracy)),
    )

    # max_iou: keep samples whose mean IoU is at most the value (sample 1 has 1.0).
    limit = 0.9
    kept = sorted(p for p in range(3) if SEG_SCORES[p]["mean_iou"] <= limit)
    assert len(kept) == 2
    view.control("max_iou").fill(str(limit))
    view.frame.wait_for_function(
        "count => document.querySelectorAll('.tile').length === count", arg=len(kept)
    )
    assert sorted(tile["position"] for tile in view.tiles()) == kept
    assert "max_iou=0.9" in view.page.url
    assert (
        view.frame.locator("[data-field=shown]").inner_text()
        == "showing 2 of 3 after filters"
    )
    view.control("clear").click()
    view.frame.wait_for_function(
        "() => document.querySelectorAll('.tile').length === 3"
    )
    assert "max_iou" not in view.page.url


def test_the_legend_names_the_visible_classes_in_their_colours(
    view: Gallery, board: TensorBoardProcess
):
    _open(view, board, runs="seg")
    palette = _palette(view)
    legend = view.frame.eval_on_selector_all(
        ".mask-legend .legend-item",
        """items => items.map(item => [Number(item.dataset.class),
             item.querySelector('.legend-name').textContent,
             item.querySelector('.swatch').dataset.colour])""",
    )
    hex_of = ["#" + "".join(f"{part:02x}" for part in palette[i]) for i in range(3)]
    assert legend == [[index, CLASS_NAMES[index], hex_of[index]] for index in (0, 1, 2)]
    # Only the visible samples' classes: sample 1 alone has no class 0.
    view.control("q").fill("img_00001")
    view.frame.wait_for_function(
        "() => document.querySelectorAll('.tile').length === 1"
    )
    classes = view.frame.eval_on_selector_all(
        ".mask-legend .legend-item", "items => items.map(i => Number(i.dataset.class))"
    )
    assert classes == [1, 2]


def test_the_detail_view_shows_the_overlay_and_the_scores(
    view: Gallery, board: TensorBoardProcess
):
    _open(view, board, runs="seg")
    palette = _palette(view)
    view.frame.click(_tile(0))
    view.frame.wait_for_selector(".detail")
    expected = SEG_SCORES[0]
    iou = view.frame.inner_text(".detail dd[data-field=mean_iou]")
    accuracy = view.frame.inner_text(".detail dd[data-field=pixel_accuracy]")
    assert _percent(iou) == pytest.approx(expected["mean_iou"], abs=0.0005)
    assert _percent(accuracy) == pytest.approx(expected["pixel_accuracy"], abs=0.0005)
    overlay = _canvas(view, ".detail canvas.mask-overlay[data-mask=prediction]")
    assert _pixels(view, overlay, [(3, 0)]) == [[*palette[2], 255]]
    boxes = view.frame.evaluate(
        """() => ['.detail-image', '.detail canvas.mask-overlay'].map(selector => {
             const box = document.querySelector(selector).getBoundingClientRect();
             return [box.x, box.y, box.width, box.height];
           })"""
    )
    assert boxes[0] == pytest.approx(boxes[1], abs=0.5)
    assert boxes[0][2] > SIZE * 4  # shown scaled up
    # The same toggle, from the detail view.
    view.frame.locator("[data-control=detail_masks]").select_option("label")
    overlay = _canvas(view, ".detail canvas.mask-overlay[data-mask=label]")
    assert _pixels(view, overlay, [(3, 0)]) == [[*palette[1], 255]]
    assert "masks=label" in view.page.url
    assert view.errors == []


def test_a_binary_mask_draws_the_foreground_only(
    view: Gallery, board: TensorBoardProcess
):
    _open(view, board, runs="binary")
    palette = _palette(view)
    overlay = _canvas(view, f"{_tile(0)} canvas.mask-overlay[data-mask=prediction]")
    label, prediction = _binary_masks()
    assert prediction[3, 6] == 1 and prediction[3, 1] == 0
    inside, outside = _pixels(view, overlay, [(6, 3), (1, 3)])
    assert inside == [*palette[1], 255]
    assert outside[3] == 0  # class 0: transparent
    view.control("masks").select_option("label")
    overlay = _canvas(view, f"{_tile(0)} canvas.mask-overlay[data-mask=label]")
    assert label[3, 6] == 0 and label[0, 0] == IGNORED
    label_at, ignored = _pixels(view, overlay, [(6, 3), (0, 0)])
    assert label_at[3] == 0 and ignored[3] == 0
    legend = view.frame.eval_on_selector_all(
        ".mask-legend .legend-item",
        "items => items.map(i => [Number(i.dataset.class), i.textContent])",
    )
    assert legend == [[1, "foreground"]]
    expected = scores(label, prediction)
    shown = _captions(view, "mean_iou")["0"]
    assert _percent(shown) == pytest.approx(expected["mean_iou"], abs=0.0005)


def test_a_dense_output_is_a_colour_map_beside_the_picture(
    view: Gallery, board: TensorBoardProcess
):
    _open(view, board, runs="depth")
    value_map = _canvas(view, f"{_tile(0)} canvas.value-map[data-mask=prediction]")
    assert view.frame.locator(".mask-overlay").count() == 0
    image, canvas = view.frame.evaluate(
        """(tile) => ['img', 'canvas.value-map'].map(selector => {
             const box = document.querySelector(tile + ' ' + selector).getBoundingClientRect();
             return [box.x, box.y, box.width, box.height];
           })""",
        _tile(0),
    )
    assert canvas[0] >= image[0] + image[2] - 0.5  # beside, not over
    assert canvas[2] > 0 and canvas[3] > 0
    points = [(x, y) for y in range(0, SIZE, 3) for x in range(SIZE)]
    colours = {tuple(colour) for colour in _pixels(view, value_map, points)}
    assert len(colours) > SIZE // 2  # the pixels vary
    assert all(colour[3] == 255 for colour in colours)
    # viridis: the predicted map falls from 255 at column 0 (yellow: high red and
    # green, low blue) to 31 at column 7 (dark purple-blue).
    _, prediction = _depth_maps()
    (high,) = _pixels(view, value_map, [(0, 0)])
    (low,) = _pixels(view, value_map, [(SIZE - 1, 0)])
    assert prediction[0, 0] > prediction[0, SIZE - 1]
    assert high[0] > 200 and high[1] > 200 and high[2] < 80
    assert low[0] < 120 and low[2] > 80
    assert view.frame.inner_text(f"{_tile(0)} [data-field=mask_range]") == "0 – 12"
    view.control("masks").select_option("label")
    _canvas(view, f"{_tile(0)} canvas.value-map[data-mask=label]")
    assert view.frame.inner_text(f"{_tile(0)} [data-field=mask_range]") == "0 – 10"


def test_class_names_with_markup_are_text_in_the_legend(
    view: Gallery, board: TensorBoardProcess
):
    _open(view, board, runs="markup")
    names = view.frame.eval_on_selector_all(
        ".mask-legend .legend-name", "names => names.map(n => n.textContent)"
    )
    assert MARKUP in names
    view.frame.click(_tile(2))
    view.frame.wait_for_selector(".detail .mask-legend")
    view.page.wait_for_timeout(300)  # time for an injected handler to fire
    assert view.injected_markup() == 0
    assert view.dialogs == [] and view.errors == []


def test_screenshot_of_the_masks(view: Gallery, board: TensorBoardProcess):
    _open(view, board, runs="seg")
    _canvas(view, f"{_tile(2)} canvas.mask-overlay")
    view.screenshot("masks.png")
