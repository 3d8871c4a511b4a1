"""A KerasHub object detector, built from configs (no weights downloaded): a tiny
`ResNetBackbone` in a `RetinaNetBackbone` in a `RetinaNetObjectDetector`.

The detector carries its own box format and decoder: the logger reads both from the
model (no `bounding_box_format=` given), logs the label boxes of the augmented batch
and the boxes the detector's own `decode_predictions` (anchors + non-max suppression)
gives for the same forward pass.

keras-hub is installed without its dependencies (`make setup`; they would pull full
TensorFlow beside tensorflow-cpu): see the Makefile.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

try:
    import keras_hub
except ImportError as error:  # KerasHub's own use of keras.src names Keras dropped
    pytest.skip(
        f"keras_hub does not import on Keras {keras.version()} ({error})",
        allow_module_level=True,
    )

from tests.capture.test_boxes import (
    CLASSES,
    SAMPLES,
    SIDE,
    augmented_dataset,
    covers,
    dataset_arrays,
    fit_logged,
)

MAX_DETECTIONS = 10


def tiny_retinanet() -> keras_hub.models.RetinaNetObjectDetector:
    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],  # ResNetBackbone wants 64 filters first
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16, 16],
        stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2],
        block_type="basic_block",
        image_shape=(SIDE, SIDE, 3),
    )
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder,
        min_level=3,
        max_level=4,
        use_p5=False,
        image_shape=(SIDE, SIDE, 3),
    )
    model = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone,
        num_classes=CLASSES,
        bounding_box_format="xyxy",
        pre_logits_num_conv_layers=1,
        # Keep every box an untrained model scores (the default keeps those > 0.5).
        prediction_decoder=keras_hub.layers.NonMaxSuppression(
            bounding_box_format="xyxy",
            from_logits=True,
            confidence_threshold=0.0,
            max_detections=MAX_DETECTIONS,
        ),
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-3))
    return model


def test_keras_hub_retinanet_boxes_and_its_own_predictions(tmp_path):
    images, boxes, labels = dataset_arrays()
    batches, texts = fit_logged(
        tmp_path, augmented_dataset(images, boxes, labels), tiny_retinanet()
    )
    assert not [text for text in texts if "box" in text and "data map" not in text]
    assert len(batches) == 2
    assert min(covers(batches, lambda sample: sample.boxes["label"])) >= 0.8
    for batch in batches:
        record = batch.record
        assert record["task"] == "detection"
        assert record["box_format"] == "xyxy"  # the model's own
        assert record["box_predictions"] == "model"
        assert record["num_classes"] == 3
        for sample in batch.samples:
            predicted = sample.boxes
            count = len(predicted["prediction"])
            assert 0 < count <= MAX_DETECTIONS
            assert sample.record["boxes"]["prediction_count"] == count
            scores = predicted["prediction_scores"]
            assert np.all((scores >= 0) & (scores <= 1))
            assert np.all(np.diff(scores) <= 1e-6)  # best first
            assert set(predicted["prediction_classes"].tolist()) <= set(range(CLASSES))
            boxes_xyxy = predicted["prediction"]
            assert np.all(boxes_xyxy[:, 2] >= boxes_xyxy[:, 0])
            field = sample.record["boxes"]
            assert len(field["label"]) == 1 and field["missed"] in (0, 1)
            assert 0.0 <= field["mean_iou"] <= 1.0
    assert sum(1 for b in batches for s in b.samples) == SAMPLES
