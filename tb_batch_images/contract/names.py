"""The names and versions of the on-disk format (docs/format.md), shared by writer and readers.

Nothing here depends on Keras or TensorFlow: the readers (the TensorBoard plugin,
`read_batches`) import it without the training side. The gallery's copies of these
constants (`frontend/contract.js`) are generated from this module and checked by a test.
"""

from __future__ import annotations

PLUGIN_NAME = "batch_images"
# 2: masks of dense outputs (elements after the images); 3: a small index entry per
# logged step in the event file, its record and pictures in a pack file (packs.py)
FORMAT_VERSION = 3

# Tags written by the logger. Batches of images live under BATCHES_TAG (format
# versions 1 and 2: blob sequences; version 3: index entries under INDEX_TAG_PREFIX +
# shard, which readers present as BATCHES_TAG); the logger's own health (what it
# dropped and why) lives under STATUS_TAG.
BATCHES_TAG = "batch_images"
INDEX_TAG_PREFIX = "batch_images_index/"
INDEX_SHARD_STEPS = 10_000  # steps per index tag
# A run's pack files: <run>/PACKS_DIR/<writer id>/<step // PACK_FOLDER_STEPS>/<step>.pack
PACKS_DIR = "plugins/" + PLUGIN_NAME
PACK_FOLDER_STEPS = 1_000
STATUS_TAG = "batch_images_status"
# Every sample's training dynamics, once per epoch (train run only).
SAMPLE_STATS_TAG = "batch_images_sample_stats"
# Pictures of the watchlist (the last epoch's top suspects), captured the next time
# they appear in a training batch: batch records of their own tag and series kind.
WATCHLIST_TAG = "batch_images_watchlist"

# Every training step's composition (sample ids and batch loss), in blocks of steps:
# the loss curve and the file list of any step (docs/format.md, "Composition").
COMPOSITION_TAG = "batch_images_composition"

# What a time series holds: the `kind` of its SummaryMetadata.plugin_data.content.
SERIES_BATCHES = "batches"
SERIES_STATUS = "status"
SERIES_SAMPLE_STATS = "sample_stats"
SERIES_WATCHLIST = "watchlist"
SERIES_COMPOSITION = "composition"
SERIES_BATCH_INDEX = "batch_index"  # version 3: one index entry per logged step
# Series whose values are batch records (element 0) followed by images.
BATCH_SERIES = (SERIES_BATCHES, SERIES_WATCHLIST)
# 2: `weighted_confidence`, `weighted_correct` (the suspect score's parts) and
# `last_predicted`; values of version 1 lack them and still read (each value lists
# its columns).
SAMPLE_STATS_VERSION = 2
COMPOSITION_VERSION = 1

# Why a batch was logged: the record's `trigger` (docs/format.md). A batch the schedule
# chose is "schedule" unless the step was also an anomaly.
TRIGGER_SCHEDULE = "schedule"
TRIGGER_NON_FINITE = "non_finite"
TRIGGER_SPIKE = "spike"
TRIGGERS = (TRIGGER_SCHEDULE, TRIGGER_NON_FINITE, TRIGGER_SPIKE)
# The composition's per-step trigger codes: index into this tuple (0: no trigger).
TRIGGER_CODES = ("", TRIGGER_NON_FINITE, TRIGGER_SPIKE)

# The columns of a sample-stats value, in order (float32, one row per sample id).
SAMPLE_STATS_COLUMNS = (
    "count",
    "confidence",
    "variability",
    "correct",
    "margin",
    "forgetting",
    "last_loss",
    "last_correct",
    "label",
    "predicted_instead",
    "suspect_score",
    "weighted_confidence",
    "weighted_correct",
    "last_predicted",
)

# Training and validation: the sub-directories of the user's log_dir, the same as
# keras.callbacks.TensorBoard's.
MODES = ("train", "validation")
MODE_DIRS = {"train": "train", "validation": "validation"}

# Keys of the ``x`` dict that carry metadata; stripped before the model sees x.
FILENAME_KEY = "filename"
SAMPLE_ID_KEY = "sample_id"
METADATA_KEYS = (FILENAME_KEY, SAMPLE_ID_KEY)

# Per-sample flags, documented in docs/format.md.
FLAG_NAN = "nan"
FLAG_INF = "inf"
FLAG_CONSTANT = "constant"
FLAG_CLIPPED = "clipped"
FLAG_RESCALED = "rescaled"
FLAG_LABEL_OUT_OF_RANGE = "label_out_of_range"
FLAG_LOSS_NON_FINITE = "loss_non_finite"  # the sample's loss is NaN or Inf
FLAG_PREDICTION_NON_FINITE = "prediction_non_finite"  # an output is NaN or Inf
FLAGS = (
    FLAG_NAN,
    FLAG_INF,
    FLAG_CONSTANT,
    FLAG_CLIPPED,
    FLAG_RESCALED,
    FLAG_LABEL_OUT_OF_RANGE,
    FLAG_LOSS_NON_FINITE,
    FLAG_PREDICTION_NON_FINITE,
)

# Object detection (docs/format.md, "Boxes"): the box formats the logger reads (Keras's
# own, `keras.utils.bounding_boxes.convert_format`); records store every box as xyxy
# pixels of the logged picture.
BOX_FORMATS = (
    "xyxy",
    "yxyx",
    "xywh",
    "center_xywh",
    "center_yxhw",
    "rel_xyxy",
    "rel_yxyx",
    "rel_xywh",
    "rel_center_xywh",
)
# Checks of one label box (a box's `label_flags`).
BOX_ZERO_AREA = "zero_area"
BOX_OUTSIDE = "outside"
BOX_CUT = "cut"
BOX_TINY = "tiny"
BOX_LABEL_OUT_OF_RANGE = "label_out_of_range"
BOX_DUPLICATE = "duplicate"
BOX_EMPTY = "empty_region"
BOX_CHECKS = (
    BOX_ZERO_AREA,
    BOX_OUTSIDE,
    BOX_CUT,
    BOX_TINY,
    BOX_LABEL_OUT_OF_RANGE,
    BOX_DUPLICATE,
    BOX_EMPTY,
)
# Sample flags of detection samples: "box_<check>" when any label box has that check,
# and what the sample's boxes as a whole show.
FLAG_BOXES_CAPPED = "boxes_capped"  # more boxes than the record keeps
FLAG_BOX_MISSED = "box_missed"  # a label box no prediction matched
FLAG_BOX_SPURIOUS = "box_spurious"  # a predicted box that matched no label box
BOX_FLAGS = (
    *(f"box_{check}" for check in BOX_CHECKS),
    FLAG_BOXES_CAPPED,
    FLAG_BOX_MISSED,
    FLAG_BOX_SPURIOUS,
)
# Where a record's predicted boxes come from (`box_predictions`).
BOX_PREDICTIONS_MODEL = "model"  # the detector's own decoder (KerasHub)
BOX_PREDICTIONS_FUNCTION = "decode_predictions"  # BatchImageLogger(decode_predictions=)
BOX_PREDICTION_SOURCES = (BOX_PREDICTIONS_MODEL, BOX_PREDICTIONS_FUNCTION)

# How a record's masks read (docs/format.md, "masks"): class maps, one sigmoid
# channel, or dense values (depth, heatmaps).
MASK_CLASSES = "classes"
MASK_BINARY = "binary"
MASK_VALUES = "values"
MASK_TYPES = (MASK_CLASSES, MASK_BINARY, MASK_VALUES)

# The encodings of logged pictures (`image_format`) and their MIME types. Masks are
# always PNG.
IMAGE_MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}
IMAGE_FORMATS = tuple(IMAGE_MIME_TYPES)

# The record's `task`: how labels and outputs read (docs/format.md).
TASK_SPARSE_CATEGORICAL = "sparse_categorical"
TASK_CATEGORICAL = "categorical"
TASK_BINARY = "binary"  # one sigmoid output; several sigmoid outputs: "multilabel"
TASK_MULTILABEL = "multilabel"
TASK_RAW = "raw"
TASK_DETECTION = "detection"  # y holds boxes: the samples carry `boxes`
TASKS = (
    TASK_SPARSE_CATEGORICAL,
    TASK_CATEGORICAL,
    TASK_BINARY,
    TASK_MULTILABEL,
    TASK_RAW,
    TASK_DETECTION,
)
