"""Segmentation and dense outputs: label and predicted masks, pixel accuracy, mean IoU.

A constructed case whose answer is known without the product's code: each picture is
a class map drawn as grey levels (class / 2), and a fixed 1x1 convolution (trained
with learning rate 0, so its weights never move) reads the class back, so the
model's predicted mask of a sample is exactly its drawn map. The labels are those
maps with known pixels changed. Every logged mask is compared with the maps of the
sample its `sample_id` names, and the scores with pixel accuracy and IoU computed
here with plain loops; the same masks compared with another sample's maps is the
negative control and must differ.

Backend-neutral: `make test` runs this file under KERAS_BACKEND=tensorflow, jax and
torch.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tb_batch_images import BatchImageLogger, read_batches

SAMPLES = 12
BATCH = 4
SIDE = 8
CLASSES = 3


def truth_maps(scale: int = 1) -> np.ndarray:
    """[SAMPLES, SIDE, SIDE] class maps, different for every sample."""
    rng = np.random.default_rng(0)
    maps = rng.integers(0, CLASSES, (SAMPLES, SIDE, SIDE))
    return np.repeat(np.repeat(maps, scale, axis=1), scale, axis=2)


def label_maps(truth: np.ndarray) -> np.ndarray:
    """The truth with known changes: sample i has its first i % 4 columns shifted."""
    labels = truth.copy()
    for i in range(SAMPLES):
        columns = i % 4
        labels[i, :, :columns] = (truth[i, :, :columns] + 1) % CLASSES
    return labels


def pixel_accuracy(label: np.ndarray, prediction: np.ndarray) -> float:
    return float(np.mean(label == prediction))


def mean_iou(label: np.ndarray, prediction: np.ndarray, classes) -> float:
    ious = []
    for c in classes:
        union = np.sum((label == c) | (prediction == c))
        if union:
            ious.append(np.sum((label == c) & (prediction == c)) / union)
    return float(np.mean(ious))


def _fixed_conv(filters: int, kernel: list[float], bias: list[float]):
    layer = keras.layers.Conv2D(filters, 1, name="read_class")
    layer.build((None, None, None, 1))
    layer.set_weights(
        [np.asarray(kernel, "float32").reshape(1, 1, 1, filters), np.asarray(bias)]
    )
    return layer


def _train(tmp_path: Path, model, loss, images, y, jit_compile="auto"):
    """One epoch with learning rate 0 (the fixed layers stay fixed), every batch."""
    model.compile(
        keras.optimizers.SGD(learning_rate=0.0), loss=loss, jit_compile=jit_compile
    )
    ids = np.arange(SAMPLES)
    data = tf.data.Dataset.from_tensor_slices(
        ({"image": images.astype("float32"), "sample_id": ids}, y)
    )
    logger = BatchImageLogger(
        str(tmp_path),
        every_n_steps=1,
        samples_per_batch=BATCH,
        class_names=["sky", "<b>road</b>", "car"],
        max_queue=100,
    )
    data = data.shuffle(SAMPLES, seed=1).batch(BATCH)
    model.fit(data, epochs=1, verbose=0, callbacks=[logger])
    batches = [b for b in read_batches(str(tmp_path)) if b.mode == "train"]
    assert len(batches) == SAMPLES // BATCH
    for batch in batches:
        assert batch.warnings == []
    return batches


def _class_model(scale: int):
    image = keras.Input((SIDE * scale, SIDE * scale, 1), name="image")
    # Logits w * x + b: argmax is class 0 at x=0, 1 at x=0.5, 2 at x=1.
    logits = _fixed_conv(CLASSES, [0.0, 10.0, 20.0], [0.0, -2.5, -10.0])(image)
    if scale > 1:
        logits = keras.layers.MaxPooling2D(scale)(logits)  # the map at 1/scale
    return keras.Model(image, logits)


SPARSE_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize(
    "scale, jit_compile", [(1, False), (2, False), (2, True)], ids=["1", "2", "2-xla"]
)
def test_class_masks_are_the_samples_own_maps_with_their_scores(
    tmp_path, scale, jit_compile
):
    """Masks at the picture's size (scale 2: the model's map is half the picture's
    size and is shown scaled up), each sample's own, with pixel accuracy and IoU."""
    if jit_compile and keras.backend.backend() == "torch":
        pytest.skip("jit_compile=True is torch.compile under PyTorch: not run here")
    truth = truth_maps()
    labels = label_maps(truth)
    pictures = truth_maps(scale)[..., None] / 2.0
    model = _class_model(scale)
    batches = _train(tmp_path, model, SPARSE_LOSS, pictures, labels, jit_compile)
    seen = set()
    for batch in batches:
        assert batch.record["masks"] == "classes"
        assert batch.record["mask_shape"] == [SIDE * scale, SIDE * scale]
        for sample in batch.samples:
            sid = sample.sample_id
            seen.add(sid)
            own_truth = np.repeat(np.repeat(truth[sid], scale, 0), scale, 1)
            own_label = np.repeat(np.repeat(labels[sid], scale, 0), scale, 1)
            np.testing.assert_array_equal(sample.prediction_mask, own_truth)
            np.testing.assert_array_equal(sample.label_mask, own_label)
            other = (sid + 1) % SAMPLES  # negative control: another sample's maps
            assert not np.array_equal(sample.prediction_mask, truth_maps(scale)[other])
            assert sample.image.shape[:2] == sample.prediction_mask.shape
            fields = sample.record
            assert fields["pixel_accuracy"] == pytest.approx(
                pixel_accuracy(labels[sid], truth[sid])
            )
            assert fields["mean_iou"] == pytest.approx(
                mean_iou(labels[sid], truth[sid], range(CLASSES))
            )
            assert fields["mask_classes"] == sorted(
                set(labels[sid].ravel()) | set(truth[sid].ravel())
            )
            assert fields["label"] is None and fields["prediction"] is None
    assert seen == set(range(SAMPLES))
    # Sample i % 4 == 0 has an unchanged label: a perfect score; the others do not.
    scores = {s.sample_id: s.record["mean_iou"] for b in batches for s in b.samples}
    assert scores[0] == 1.0 and scores[4] == 1.0 and scores[3] < 1.0


def test_ignored_label_pixels_are_left_out_of_the_scores(tmp_path):
    """A label pixel that is no class (255, the loss's `ignore_class`) is left out of
    both scores and drawn as 255."""
    truth = truth_maps()
    labels = label_maps(truth)
    ignored = labels.copy()
    ignored[:, 0, 0] = 255
    loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=255
    )
    batches = _train(tmp_path, _class_model(1), loss, truth[..., None] / 2.0, ignored)
    keep = np.ones((SIDE, SIDE), bool)
    keep[0, 0] = False
    for sample in (s for b in batches for s in b.samples):
        sid = sample.sample_id
        assert sample.label_mask[0, 0] == 255
        assert sample.record["pixel_accuracy"] == pytest.approx(
            pixel_accuracy(labels[sid][keep], truth[sid][keep])
        )
        assert sample.record["mean_iou"] == pytest.approx(
            mean_iou(labels[sid][keep], truth[sid][keep], range(CLASSES))
        )


def test_one_hot_labels_read_as_their_class(tmp_path):
    truth = truth_maps()
    labels = label_maps(truth)
    one_hot = np.eye(CLASSES, dtype="float32")[labels]  # [n, h, w, classes]
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    batches = _train(tmp_path, _class_model(1), loss, truth[..., None] / 2.0, one_hot)
    for sample in (s for b in batches for s in b.samples):
        np.testing.assert_array_equal(sample.label_mask, labels[sample.sample_id])
        np.testing.assert_array_equal(sample.prediction_mask, truth[sample.sample_id])


def test_binary_masks_threshold_the_sigmoid(tmp_path):
    truth = truth_maps() % 2  # 0 / 1 maps
    labels = np.where(label_maps(truth) != truth, 1 - truth, truth)  # columns flipped
    image = keras.Input((SIDE, SIDE, 1), name="image")
    logit = _fixed_conv(1, [20.0], [-10.0])(image)  # > 0 where x = 1
    model = keras.Model(image, keras.layers.Activation("sigmoid")(logit))
    pictures = truth[..., None].astype(float)
    batches = _train(
        tmp_path, model, "binary_crossentropy", pictures, labels[..., None]
    )
    for batch in batches:
        assert batch.record["masks"] == "binary"
        for sample in batch.samples:
            sid = sample.sample_id
            np.testing.assert_array_equal(sample.prediction_mask, truth[sid])
            np.testing.assert_array_equal(sample.label_mask, labels[sid])
            assert sample.record["mean_iou"] == pytest.approx(
                mean_iou(labels[sid], truth[sid], (0, 1))
            )


def test_dense_values_are_quantised_between_the_samples_range(tmp_path):
    """A regression map (depth): the mask is the value scaled to 0..255 between the
    sample's own min and max, which the record gives."""
    rng = np.random.default_rng(5)
    pictures = rng.uniform(0.0, 1.0, (SAMPLES, SIDE, SIDE, 1))
    image = keras.Input((SIDE, SIDE, 1), name="image")
    model = keras.Model(image, _fixed_conv(1, [3.0], [1.0])(image))  # 3x + 1
    batches = _train(tmp_path, model, "mse", pictures, 2.0 * pictures)
    for batch in batches:
        assert batch.record["masks"] == "values"
        for sample in batch.samples:
            sid = sample.sample_id
            depth = 3.0 * pictures[sid, ..., 0] + 1.0
            low, high = sample.record["prediction_range"]
            assert (low, high) == pytest.approx((depth.min(), depth.max()), abs=1e-5)
            shown = low + sample.prediction_mask / 255.0 * (high - low)
            np.testing.assert_allclose(shown, depth, atol=(high - low) / 255)
            label_low, label_high = sample.record["label_range"]
            target = 2.0 * pictures[sid, ..., 0]
            assert (label_low, label_high) == pytest.approx(
                (target.min(), target.max()), abs=1e-5
            )
            assert "mean_iou" not in sample.record


def test_a_map_of_another_size_is_shown_raw_with_one_warning(tmp_path):
    image = keras.Input((SIDE, SIDE, 1), name="image")
    logits = _fixed_conv(CLASSES, [0.0, 10.0, 20.0], [0.0, -2.5, -10.0])(image)
    logits = keras.layers.Cropping2D(((0, 3), (0, 0)))(logits)  # 5 x 8: no scale
    model = keras.Model(image, logits)
    model.compile(
        keras.optimizers.SGD(learning_rate=0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    truth = truth_maps()
    data = tf.data.Dataset.from_tensor_slices(
        ({"image": (truth[..., None] / 2.0).astype("float32")}, truth[:, :5])
    ).batch(BATCH)
    logger = BatchImageLogger(str(tmp_path), every_n_steps=1, samples_per_batch=2)
    with pytest.warns(RuntimeWarning, match="not as a mask"):
        model.fit(data, epochs=1, verbose=0, callbacks=[logger])
    batches = [b for b in read_batches(str(tmp_path)) if b.mode == "train"]
    assert batches and all("masks" not in b.record for b in batches)
    assert batches[0].samples[0].prediction_mask is None
