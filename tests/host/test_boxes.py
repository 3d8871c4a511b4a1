"""Boxes on the host: format conversion (against Keras's own), matching, the format's
fit, and the checks of one box on known cases."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tb_batch_images.contract import names
from tb_batch_images.host import boxes

HEIGHT, WIDTH = 40.0, 60.0


@pytest.mark.parametrize("box_format", names.BOX_FORMATS)
def test_to_xyxy_is_kerass_convert_format(box_format):
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 1 if box_format.startswith("rel_") else 50, (3, 7, 4))
    expected = keras.ops.convert_to_numpy(
        keras.utils.bounding_boxes.convert_format(
            raw.astype("float32"),
            source=box_format,
            target="xyxy",
            height=HEIGHT,
            width=WIDTH,
        )
    )
    np.testing.assert_allclose(
        boxes.to_xyxy(raw, box_format, HEIGHT, WIDTH), expected, rtol=1e-5, atol=1e-4
    )


def test_the_formats_are_kerass():
    """Every format the logger takes converts in Keras; another does not."""
    for box_format in names.BOX_FORMATS:
        keras.utils.bounding_boxes.convert_format(
            np.zeros((1, 4), "float32"), box_format, "xyxy", height=4, width=4
        )
    with pytest.raises(ValueError):
        keras.utils.bounding_boxes.convert_format(
            np.zeros((1, 4), "float32"), "rel_center_yxhw", "xyxy", height=4, width=4
        )


def test_matching_is_greedy_by_iou_within_a_class():
    label = np.asarray([[0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 50, 10]], float)
    prediction = np.asarray(
        [[0, 0, 10, 12], [0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 50, 10]], float
    )
    label_iou, prediction_iou = boxes.match(
        label, np.asarray([0, 1, 2]), prediction, np.asarray([0, 0, 2, 1])
    )
    # Box 0 takes the exact prediction; box 1's overlap has another class.
    np.testing.assert_allclose(label_iou, [1.0, np.nan, np.nan])
    np.testing.assert_allclose(prediction_iou, [np.nan, 1.0, np.nan, np.nan])


def test_describe_counts_missed_and_spurious():
    raw = np.asarray([[0, 0, 10, 10], [20, 20, 30, 30]] + [[0, 0, 0, 0]] * 2, float)
    classes = np.asarray([0, 1, -1, -1], float)
    predicted = np.asarray([[0, 0, 10, 5], [50, 50, 55, 55], [0, 0, 0, 0]], float)
    field, flags = boxes.describe(
        raw,
        classes,
        2,
        "xyxy",
        (HEIGHT, WIDTH),
        (20, 30),  # the logged picture: half the size
        None,
        None,
        (predicted, np.asarray([0, 0, -1.0]), np.asarray([0.9, 0.8, 0.0]), 2, "xyxy"),
    )
    assert field["label"] == [[0, 0, 5, 5], [10, 10, 15, 15]]
    assert field["label_classes"] == [0, 1]
    assert field["prediction"] == [[0, 0, 5, 2.5], [25, 25, 27.5, 27.5]]
    assert field["label_iou"] == [0.5, None]
    assert field["prediction_iou"] == [0.5, None]
    assert (field["missed"], field["spurious"], field["mean_iou"]) == (1, 1, 0.25)
    assert flags == ["box_missed", "box_spurious"]


@pytest.mark.parametrize(
    "given, values, expected",
    [
        ("xyxy", [[0.1, 0.2, 0.5, 0.6]], "rel_xyxy"),
        ("rel_xyxy", [[6, 8, 30, 24]], "xyxy"),
        ("xyxy", [[70, 50, 90, 60]], None),  # outside: no format fits
        ("yxyx", [[8, 6, 24, 30]], None),  # fits as given
    ],
)
def test_format_problem_names_the_format_that_fits(given, values, expected):
    raw = [np.asarray(values, float)] * 3
    problem = boxes.format_problem(raw, given, [(HEIGHT, WIDTH)] * 3)
    if given == "yxyx":
        assert problem is None
    elif expected is None:
        assert "no format fits" in problem and "outside" in problem
    else:
        assert f"bounding_box_format={expected!r}" in problem


def test_an_empty_region_needs_the_ring_around_the_box_alike_too():
    pixels = np.full((40, 60, 3), 50, np.uint8)
    pixels[10:20, 10:20] = 200  # an object
    on_object = np.asarray([[10, 10, 20, 20]], float)
    inside_object = np.asarray([[12, 12, 18, 18]], float)
    on_background = np.asarray([[30, 25, 50, 35]], float)
    flags = [
        boxes.checks(b, b, np.zeros(1), (HEIGHT, WIDTH), pixels, None)[0]
        for b in (on_object, inside_object, on_background)
    ]
    assert flags == [[], ["empty_region"], ["empty_region"]]
