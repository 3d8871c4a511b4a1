"""Object detection: the label boxes of each logged sample, after augmentation, on its
picture; predicted boxes from the same forward pass; the checks of each box.

The keras.io way: a `tf.data` pipeline augments pictures and boxes together with
Keras's own box-aware layers (`RandomFlip`, `RandomTranslation` with
`bounding_box_format="xyxy"` on `{"images": ..., "bounding_boxes": {...}}`) and
hands `(images, bounding_boxes)` to the model. Each picture is one distinct object
(a coloured rectangle) on a constant background, so a test can find the object in
the logged pixels without the product's code: every logged label box must cover it
(IoU >= 0.8), and the boxes before augmentation, the negative control, must not.

Backend-neutral: `make test` runs this file under KERAS_BACKEND=tensorflow, jax and
torch.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tb_batch_images import BatchImageLogger, read_batches

SAMPLES = 16
BATCH = 8
SIDE = 48
SLOTS = 3  # boxes per sample in y, padded with label -1
CLASSES = 3
BACKGROUND = (0.2, 0.2, 0.2)
OBJECT = (0.95, 0.55, 0.1)


def dataset_arrays(seed: int = 0):
    """Pictures with one rectangle each (left half, so a flip moves it), its box
    (xyxy pixels) in slot 0, padding after it."""
    rng = np.random.default_rng(seed)
    images = np.empty((SAMPLES, SIDE, SIDE, 3), "float32")
    images[:] = BACKGROUND
    boxes = np.full((SAMPLES, SLOTS, 4), -1.0, "float32")
    labels = np.full((SAMPLES, SLOTS), -1, "int32")
    for i in range(SAMPLES):
        width, height = rng.integers(14, 22, 2)
        x1 = rng.integers(2, SIDE // 2 - width // 2)
        y1 = rng.integers(2, SIDE - height - 2)
        images[i, y1 : y1 + height, x1 : x1 + width] = OBJECT
        boxes[i, 0] = [x1, y1, x1 + width, y1 + height]
        labels[i, 0] = i % CLASSES
    return images, boxes, labels


def augmented_dataset(images, boxes, labels, augment=True) -> tf.data.Dataset:
    """As keras.io's detection guides write it: augment a dict, then (x, y)."""
    flip = keras.layers.RandomFlip("horizontal", bounding_box_format="xyxy", seed=3)
    shift = keras.layers.RandomTranslation(
        0.15, 0.15, bounding_box_format="xyxy", fill_mode="constant", seed=4
    )

    def augment_batch(inputs):
        augmented = shift(
            flip(
                {"images": inputs["images"], "bounding_boxes": inputs["bounding_boxes"]}
            )
        )
        images = augmented["images"]
        return {"images": images, "sample_id": inputs["sample_id"]}, augmented[
            "bounding_boxes"
        ]

    data = tf.data.Dataset.from_tensor_slices(
        {
            "images": images,
            "sample_id": np.arange(SAMPLES),
            "bounding_boxes": {"boxes": boxes, "labels": labels},
        }
    )
    data = data.shuffle(SAMPLES, seed=1).batch(BATCH)
    if augment:
        return data.map(augment_batch)
    return data.map(
        lambda d: (
            {"images": d["images"], "sample_id": d["sample_id"]},
            d["bounding_boxes"],
        )
    )


def toy_detector(box=(4.0, 4.0, 20.0, 20.0), learning_rate=0.0, **compile_args):
    """A tiny detector whose outputs match y's keys: SLOTS boxes and class scores.

    Its kernels are zero and its biases a fixed box and fixed class scores, frozen:
    every predicted box is `box`, class 1 at probability softmax([0, 2, 0])[1] (a
    known answer for the matching). Frozen, not only learning rate 0: on Keras
    3.12-3.14 `SparseCategoricalCrossentropy(ignore_class=-1)` multiplies the padded
    slots' probabilities by 0 before the log, their gradients are NaN, and 0 * NaN
    makes those slots' biases NaN after the first step (3.15 uses `where`)."""
    image = keras.Input((SIDE, SIDE, 3), name="images")
    features = keras.layers.GlobalAveragePooling2D()(image)
    boxes = keras.layers.Dense(
        SLOTS * 4,
        trainable=False,
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(list(box) * SLOTS),
    )(features)
    scores = keras.layers.Dense(
        SLOTS * CLASSES,
        trainable=False,
        kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant([0.0, 2.0, 0.0] * SLOTS),
    )(features)
    model = keras.Model(
        image,
        {
            "boxes": keras.layers.Reshape((SLOTS, 4), name="boxes")(boxes),
            "labels": keras.layers.Softmax(name="labels")(
                keras.layers.Reshape((SLOTS, CLASSES))(scores)
            ),
        },
    )
    model.compile(
        keras.optimizers.SGD(learning_rate=learning_rate),
        loss={
            "boxes": "mse",
            "labels": keras.losses.SparseCategoricalCrossentropy(ignore_class=-1),
        },
        **compile_args,
    )
    return model


def decode(y_pred, images):
    """The toy detector's boxes, in xyxy pixels of `images`: the user's decoder."""
    scores = y_pred["labels"]
    return {
        "boxes": y_pred["boxes"],
        "labels": keras.ops.argmax(scores, axis=-1),
        "confidence": keras.ops.max(scores, axis=-1),
    }


def fit_logged(tmp_path: Path, data, model=None, **logger_args):
    """One epoch, every batch logged; the train batches and the warnings given."""
    model = model or toy_detector()
    logger = BatchImageLogger(
        str(tmp_path),
        **{
            "every_n_steps": 1,
            "samples_per_batch": BATCH,
            "max_queue": 100,
            "class_names": ["a", "b", "c"],
            **logger_args,
        },
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(data, epochs=1, verbose=0, callbacks=[logger])
    texts = [str(w.message) for w in caught if "tb_batch_images" in str(w.message)]
    batches = [b for b in read_batches(str(tmp_path)) if b.mode == "train"]
    return batches, texts


def object_box(picture: np.ndarray) -> np.ndarray:
    """xyxy pixel box of the object in a logged uint8 picture, found by colour."""
    red = picture[..., 0].astype(float) / 255.0
    mask = red > (BACKGROUND[0] + OBJECT[0]) / 2
    ys, xs = np.nonzero(mask)
    assert len(xs), "no object in the logged picture"
    return np.asarray([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def covers(batches, boxes_of) -> list[float]:
    """The IoU of each logged sample's box (`boxes_of(sample)`: [K, 4]) with the
    object found in its logged picture."""
    found = []
    for batch in batches:
        for sample in batch.samples:
            boxes = boxes_of(sample)
            assert len(boxes) == 1
            found.append(iou(boxes[0], object_box(sample.image)))
    return found


@pytest.mark.parametrize("max_image_size", [48, 32], ids=["full", "downscaled"])
def test_label_boxes_cover_the_object_in_the_logged_picture(tmp_path, max_image_size):
    """After Keras's box-aware flip and shift, each logged sample's label box covers
    the object visible in its own logged picture; the boxes before augmentation (the
    negative control) do not."""
    images, boxes, labels = dataset_arrays()
    batches, texts = fit_logged(
        tmp_path,
        augmented_dataset(images, boxes, labels),
        bounding_box_format="xyxy",
        max_image_size=max_image_size,
    )
    assert len(batches) == SAMPLES // BATCH
    scale = max_image_size / SIDE
    ious = covers(batches, lambda sample: sample.boxes["label"])
    assert min(ious) >= 0.8, ious
    for batch in batches:
        assert batch.warnings == []
        assert batch.record["task"] == "detection"
        assert batch.record["box_format"] == "xyxy"
        for sample in batch.samples:
            assert sample.image.shape[:2] == (max_image_size, max_image_size)
            assert sample.boxes["label_classes"].tolist() == [sample.sample_id % 3]
            assert sample.record["boxes"]["count"] == 1
            assert sample.label is None and sample.prediction is None
    # Negative control: the same samples' boxes as the dataset gave them, before
    # the augmentation, scaled to the logged picture as the logger scales them.
    before = covers(batches, lambda sample: boxes[sample.sample_id, :1] * scale)
    assert sum(value < 0.8 for value in before) >= len(before) // 4, before
    assert min(before) < 0.8


def test_predicted_boxes_from_decode_predictions_are_matched(tmp_path):
    """decode_predictions= on the same forward pass: the toy detector's fixed box,
    class and score, matched with the label box by IoU as computed here."""
    images, boxes, labels = dataset_arrays()
    fixed = np.asarray([4.0, 4.0, 20.0, 20.0])
    batches, texts = fit_logged(
        tmp_path,
        augmented_dataset(images, boxes, labels, augment=False),
        bounding_box_format="xyxy",
        decode_predictions=decode,
    )
    probability = float(np.exp(2.0) / (np.exp(2.0) + 2.0))
    for batch in batches:
        assert batch.record["box_predictions"] == "decode_predictions"
        for sample in batch.samples:
            predicted = sample.boxes
            np.testing.assert_allclose(predicted["prediction"], [fixed] * SLOTS)
            assert predicted["prediction_classes"].tolist() == [1] * SLOTS
            np.testing.assert_allclose(
                predicted["prediction_scores"], [probability] * SLOTS, rtol=1e-5
            )
            field = sample.record["boxes"]
            label_box = boxes[sample.sample_id, 0]
            overlap = iou(label_box, fixed)
            matched = sample.sample_id % CLASSES == 1 and overlap >= 0.5
            assert field["missed"] == (0 if matched else 1)
            assert field["spurious"] == SLOTS - (1 if matched else 0)
            assert field["mean_iou"] == pytest.approx(overlap if matched else 0.0)
            assert ("box_missed" in sample.flags) == (not matched)
            assert "box_spurious" in sample.flags
    assert not any("predicted boxes are not" in text for text in texts)


def test_boxes_under_xla_and_steps_per_execution(tmp_path):
    """jit_compile=True and steps_per_execution=2 (TensorFlow, JAX): every step's
    boxes are its own, the predicted ones decoded in the compiled step."""
    if keras.backend.backend() == "torch":
        pytest.skip("torch: jit_compile=True is torch.compile, no steps_per_execution")
    images, boxes, labels = dataset_arrays()
    model = toy_detector(jit_compile=True, steps_per_execution=2)
    batches, texts = fit_logged(
        tmp_path,
        augmented_dataset(images, boxes, labels),
        model,
        bounding_box_format="xyxy",
        decode_predictions=decode,
    )
    assert len(batches) == SAMPLES // BATCH
    assert min(covers(batches, lambda sample: sample.boxes["label"])) >= 0.8
    for batch in batches:
        for sample in batch.samples:
            assert len(sample.boxes["prediction"]) == SLOTS


def test_boxes_follow_a_random_selection_of_each_step(tmp_path):
    """selection="random", 3 of 8 samples, steps_per_execution=2: each logged
    sample's label boxes and class are its own (the picture it sits on, its
    sample_id), whichever samples the step chose, on every step of an execution."""
    images, boxes, labels = dataset_arrays()
    # Keras 3.15's PyTorch trainer takes steps_per_execution=1 only.
    torch = keras.backend.backend() == "torch"
    model = toy_detector(steps_per_execution=1 if torch else 2)
    batches, texts = fit_logged(
        tmp_path,
        augmented_dataset(images, boxes, labels),
        model,
        bounding_box_format="xyxy",
        decode_predictions=decode,
        samples_per_batch=3,
        selection="random",
    )
    assert len(batches) == SAMPLES // BATCH
    assert min(covers(batches, lambda sample: sample.boxes["label"])) >= 0.8
    positions = []
    for batch in batches:
        assert len(batch.samples) == 3
        assert len({sample.sample_id for sample in batch.samples}) == 3
        positions += [sample.position for sample in batch.samples]
        for sample in batch.samples:
            assert sample.boxes["label_classes"].tolist() == [sample.sample_id % 3]
            assert len(sample.boxes["prediction"]) == SLOTS
    # Random: not only the first three positions of each batch.
    assert max(positions) > 2, positions


def test_boxes_without_a_format_give_one_warning(tmp_path):
    """y holds boxes, the logger was told no format: one warning saying how to set
    it; training and the pictures go on."""
    images, boxes, labels = dataset_arrays()
    batches, texts = fit_logged(
        tmp_path, augmented_dataset(images, boxes, labels, augment=False)
    )
    said = [text for text in texts if "no bounding_box_format" in text]
    assert len(said) == 1, texts
    assert "bounding_box_format='xyxy'" in said[0]
    assert len(batches) == SAMPLES // BATCH
    assert all(sample.boxes is None for b in batches for sample in b.samples)
    assert all(sample.image is not None for b in batches for sample in b.samples)


@pytest.mark.parametrize(
    "given, expected", [("xyxy", "rel_xyxy"), ("rel_xyxy", "xyxy")]
)
def test_boxes_in_another_format_give_one_warning_naming_it(tmp_path, given, expected):
    """Relative values given as xyxy, or pixels as rel_xyxy: one warning naming the
    format they fit; training goes on and the boxes are drawn as given."""
    images, boxes, labels = dataset_arrays()
    if expected == "rel_xyxy":
        boxes = np.where(labels[..., None] >= 0, boxes / SIDE, boxes)
    batches, texts = fit_logged(
        tmp_path,
        augmented_dataset(images, boxes, labels, augment=False),
        bounding_box_format=given,
    )
    said = [text for text in texts if "do not fit" in text]
    assert len(said) == 1, texts
    assert f"bounding_box_format={expected!r}" in said[0]
    assert len(batches) == SAMPLES // BATCH


def test_no_predicted_boxes_is_said_once(tmp_path):
    images, boxes, labels = dataset_arrays()
    batches, texts = fit_logged(
        tmp_path,
        augmented_dataset(images, boxes, labels, augment=False),
        bounding_box_format="xyxy",
    )
    assert len([t for t in texts if "predicted boxes are not" in t]) == 1, texts
    for batch in batches:
        assert batch.record.get("box_predictions") is None
        for sample in batch.samples:
            assert "prediction" not in sample.boxes


def test_each_box_is_checked(tmp_path):
    """Known faults, one per box of sample 0, each flagged on its box and the
    sample; the object's own box has none; the per-sample loss is the compiled
    loss's (the detector's class head)."""
    images, boxes, labels = dataset_arrays()
    x1, y1, x2, y2 = boxes[0, 0]
    faults = [
        ([x1, y1, x2, y2], 0, []),
        ([10, 10, 10, 20], 1, ["zero_area"]),
        ([60, 60, 70, 70], 1, ["outside"]),
        ([-6, y1, x1 + 4, y2], 1, ["cut"]),
        ([x1, y1, x1 + 1, y1 + 5], 1, ["tiny"]),
        ([x1, y1, x2, y2], 2, ["label_out_of_range"]),  # class_names: a, b
        ([x1, y1, x2, y2], 0, ["duplicate"]),
        ([36, 38, 46, 46], 1, ["empty_region"]),
    ]
    slots = len(faults)
    many_boxes = np.full((SAMPLES, slots, 4), -1.0, "float32")
    many_labels = np.full((SAMPLES, slots), -1, "int32")
    many_boxes[:, :1], many_labels[:, :1] = boxes[:, :1], labels[:, :1]
    many_boxes[0] = [box for box, _, _ in faults]
    many_labels[0] = [label for _, label, _ in faults]
    images[0, 36:48, 30:48] = BACKGROUND  # nothing near the empty-region box
    data = tf.data.Dataset.from_tensor_slices(
        (
            {"images": images, "sample_id": np.arange(SAMPLES)},
            {"boxes": many_boxes, "labels": many_labels},
        )
    ).batch(BATCH)
    model = toy_detector_for(slots)
    batches, texts = fit_logged(
        tmp_path, data, model, bounding_box_format="xyxy", class_names=["a", "b"]
    )
    first = next(s for b in batches for s in b.samples if s.sample_id == 0)
    field = first.record["boxes"]
    assert field["label_flags"] == [flags for _, _, flags in faults]
    assert field["count"] == slots
    for flag in ("zero_area", "outside", "cut", "tiny", "label_out_of_range"):
        assert f"box_{flag}" in first.flags
    assert {"box_duplicate", "box_empty_region"} <= set(first.flags)
    other = next(s for b in batches for s in b.samples if s.sample_id == 1)
    assert other.record["boxes"]["label_flags"] == [[]]
    assert not [flag for flag in other.flags if flag.startswith("box")]
    for batch in batches:
        for sample in batch.samples:
            assert sample.loss is not None and np.isfinite(sample.loss)
            assert set(sample.record["head_losses"]) == {"boxes", "labels"}


def toy_detector_for(slots: int, label_key: str = "labels"):
    """The toy detector for `slots` boxes, its class output named `label_key`."""
    global SLOTS
    kept, SLOTS = SLOTS, slots
    try:
        model = toy_detector()
    finally:
        SLOTS = kept
    if label_key == "labels":
        return model
    image = model.inputs[0]
    renamed = keras.Model(
        image, {"boxes": model(image)["boxes"], label_key: model(image)["labels"]}
    )
    renamed.compile(
        keras.optimizers.SGD(learning_rate=0.0),
        loss={
            "boxes": "mse",
            label_key: keras.losses.SparseCategoricalCrossentropy(ignore_class=-1),
        },
    )
    return renamed


def test_more_boxes_than_kept_are_counted_and_flagged(tmp_path):
    """120 boxes in y: the first 100 are kept, the count says 120, the sample is
    flagged boxes_capped; KerasCV's "classes" key is read as the labels."""
    images, boxes, labels = dataset_arrays()
    slots = 120
    many_boxes = np.tile(boxes[:, :1], (1, slots, 1))
    many_boxes[..., 0] += np.arange(slots)[None, :] * 0.01  # no duplicates
    many_labels = np.tile(labels[:, :1], (1, slots))
    data = tf.data.Dataset.from_tensor_slices(
        (
            {"images": images, "sample_id": np.arange(SAMPLES)},
            {"boxes": many_boxes, "classes": many_labels},
        )
    ).batch(BATCH)
    model = toy_detector_for(slots, label_key="classes")
    batches, texts = fit_logged(tmp_path, data, model, bounding_box_format="xyxy")
    for batch in batches:
        assert batch.record["max_boxes"] == 100
        for sample in batch.samples:
            assert sample.boxes["label"].shape == (100, 4)
            assert sample.record["boxes"]["count"] == slots
            assert "boxes_capped" in sample.flags
            np.testing.assert_allclose(
                sample.boxes["label"][:, 0],
                boxes[sample.sample_id, 0, 0] + np.arange(100) * 0.01,
                atol=0.006,
            )


def test_detection_model_turns_the_data_map_off_once(tmp_path):
    """A detector with sample ids and sample_stats=True: the data map says once
    that it is off, and why; the batches are logged."""
    images, boxes, labels = dataset_arrays()
    batches, texts = fit_logged(
        tmp_path,
        augmented_dataset(images, boxes, labels),
        bounding_box_format="xyxy",
        sample_stats=True,
        num_samples=SAMPLES,
    )
    said = [text for text in texts if "data map" in text]
    assert len(said) == 1 and "object detector" in said[0], texts
    assert len(batches) == SAMPLES // BATCH


def test_ragged_boxes_from_tf_data(tmp_path):
    """TensorFlow only: a RaggedTensor y (boxes of varying count per sample, as
    `ragged_batch` gives them) is padded in the step; each sample keeps its own."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("a RaggedTensor y reaches the step only under TensorFlow")
    images, boxes, labels = dataset_arrays()
    per_sample = [boxes[i, : 1 + i % 3].copy() for i in range(SAMPLES)]
    for sample_boxes in per_sample:  # extra boxes, each its own
        sample_boxes[1:] = sample_boxes[0] + np.arange(1, len(sample_boxes))[:, None]
    ragged_boxes = tf.ragged.constant(
        [b.tolist() for b in per_sample], ragged_rank=1, dtype=tf.float32
    )
    ragged_labels = tf.ragged.constant(
        [[i % CLASSES] * len(b) for i, b in enumerate(per_sample)], dtype=tf.int32
    )
    data = tf.data.Dataset.from_tensor_slices(
        (
            {"images": images, "sample_id": np.arange(SAMPLES)},
            {"boxes": ragged_boxes, "labels": ragged_labels},
        )
    ).ragged_batch(BATCH)

    class RaggedDetector(keras.Model):
        def compute_loss(self, x=None, y=None, y_pred=None, *args, **kwargs):
            return keras.ops.mean(y_pred * 0.0)

    image = keras.Input((SIDE, SIDE, 3), name="images")
    model = RaggedDetector(image, keras.layers.Dense(1)(keras.layers.Flatten()(image)))
    model.compile("sgd")
    batches, texts = fit_logged(tmp_path, data, model, bounding_box_format="xyxy")
    assert len(batches) == SAMPLES // BATCH
    for batch in batches:
        for sample in batch.samples:
            expected = per_sample[sample.sample_id]
            np.testing.assert_allclose(sample.boxes["label"], expected, atol=0.006)
            assert sample.record["boxes"]["count"] == len(expected)


def test_a_subclassed_detector_without_declared_inputs(tmp_path):
    """A detector written as a subclass (no `keras.Input`: on JAX the capture then
    leaves the step in its logs, not the metrics-state slots): each logged sample's
    label boxes still cover the object of its own picture, the predictions decoded."""

    class Detector(keras.Model):
        def __init__(self):
            super().__init__()
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.boxes = keras.layers.Dense(SLOTS * 4)
            self.scores = keras.layers.Dense(SLOTS * CLASSES)

        def call(self, inputs):
            features = self.pool(inputs["images"])
            boxes = keras.ops.reshape(self.boxes(features), (-1, SLOTS, 4))
            scores = keras.ops.reshape(self.scores(features), (-1, SLOTS, CLASSES))
            return {"boxes": boxes, "labels": keras.ops.softmax(scores)}

    model = Detector()
    model.compile(
        keras.optimizers.SGD(learning_rate=0.0),
        loss={
            "boxes": "mse",
            "labels": keras.losses.SparseCategoricalCrossentropy(ignore_class=-1),
        },
    )
    images, boxes, labels = dataset_arrays()
    batches, texts = fit_logged(
        tmp_path,
        augmented_dataset(images, boxes, labels),
        model,
        bounding_box_format="xyxy",
        decode_predictions=decode,
    )
    assert len(batches) == SAMPLES // BATCH
    assert min(covers(batches, lambda sample: sample.boxes["label"])) >= 0.8
    for batch in batches:
        for sample in batch.samples:
            assert sample.boxes["label_classes"].tolist() == [sample.sample_id % 3]
            assert len(sample.boxes["prediction"]) == SLOTS
