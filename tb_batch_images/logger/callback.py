"""`BatchImageLogger`: the Keras callback that logs the real training batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import keras
import numpy as np

from tb_batch_images.capture import keras_internals
from tb_batch_images.capture.backends import strip_metadata_before_symbolic_build
from tb_batch_images.logger.options import LoggerOptions
from tb_batch_images.logger.session import CaptureSession


class BatchImageLogger(keras.callbacks.Callback):
    """Logs the images a model trains on, batch by batch, to TensorBoard.

    At the chosen steps, the logger copies some samples of the real batch, as the model
    received them (after every `tf.data` map, augmentation and shuffle), together with
    their labels, the model's outputs from the training forward pass and the per-sample
    loss. A background thread turns them into images and writes them to
    `log_dir/train` (and `log_dir/validation`), the directories
    `keras.callbacks.TensorBoard` uses, so both show up under the same runs. Open
    TensorBoard's "Batch Images" tab to browse them, or read them back with
    `tb_batch_images.read_batches(log_dir)`.

    Filenames travel in the batch: make `x` a dict with the image, plus a string
    `"filename"` or an integer `"sample_id"` (an index into `filenames=`). The logger
    strips both keys before the model sees `x`. Under `jit_compile=True` (the default
    on GPU) only `"sample_id"` can travel, and so on the JAX and PyTorch backends,
    whose data adapters reject strings before any callback runs.

    Works on every Keras 3 backend (TensorFlow, JAX, PyTorch), under `tf.distribute`
    strategies and JAX's `keras.distribution` (only process 0 / the chief writes). A
    setup it cannot handle (e.g. a train function that bypasses the model's
    `train_step`) gives one warning and the logger turns itself off.

    Logging never stops training: problems (an unwritable `log_dir`, an input that is
    no image, a full queue) give one warning each, and what was dropped is counted in
    the log.

    Args:
        log_dir: directory to write to, any `tf.io.gfile` path (local, `gs://`, ...).
            Use the same `log_dir` as `keras.callbacks.TensorBoard`.
        every_n_steps: log one batch every this many global steps, starting at step 0.
            Defaults to 100. `0` disables the periodic schedule.
        log_steps: extra global steps to log: an iterable of ints, or a function
            `step -> bool`. Defaults to None.
        samples_per_batch: how many samples of a logged batch to keep. Defaults to 16.
        selection: which samples: `"first"` (default), `"random"` or
            `"highest_loss"` (the hardest samples of the batch).
        class_names: names of the classes, indexed by class id. Defaults to None.
        filenames: a sequence mapping the integer `x["sample_id"]` to a filename.
        image_key: the key (or index) of the image in `x` when `x` holds several
            inputs. Defaults to None: found automatically.
        image_layer: which picture to show when the model starts with preprocessing
            layers (`keras.layers.Random*`, `Rescaling`, `Normalization`, `Resizing`,
            `CenterCrop`, ..., or a `Sequential`/functional block made only of them).
            Defaults to None: the output of the last leading preprocessing layer, i.e.
            the picture as the first learning layer received it, taken from the
            training forward pass itself (so the random augmentations shown are the
            ones the model trained on). `Rescaling` and `Normalization` among those
            layers are undone for display from their own parameters. A layer name:
            that layer's output (a ValueError at fit start lists the layers if no
            layer has that name). `False`: show `x` as the model received it.
        output: for a model with several outputs (heads), the name of the one whose
            prediction and loss are shown: a key of the model's dict of outputs (the
            keys of `y` and of the compiled loss), or one of `model.output_names` for
            a list of outputs. Defaults to None: the one head whose compiled loss is a
            classification loss (cross-entropy), else the first head in the model's
            own order. Every head's per-sample loss is logged beside it. A name that
            is no output of the model raises a ValueError at fit start, listing them.
        max_image_size: longest side of a logged image, in pixels; larger inputs are
            downscaled (never upscaled; plain bilinear under TensorFlow's XLA, which
            has no antialiased resize). Defaults to 256. Images whose height and
            width are unknown when the step is traced (a `tf.data` pipeline that
            decodes files without resizing, where the model's `Input` does not fix
            the size either, e.g. `Input((None, None, 3))`) are fitted into it inside
            the step, each batch at its own size, and each sample records its true
            size; under TensorFlow the capture buffers then hold
            `max_image_size x max_image_size` pixels per sample.
        image_format: `"png"` (default, lossless) or `"jpeg"`.
        value_range: `(low, high)`: the input values shown as black and white. Defaults
            to None: uint8 as is; floats in [0, 1], [-1, 1] or [0, 255] recognised per
            batch; anything else (e.g. mean/std normalised) stretched per sample and
            flagged `rescaled`.
        to_pixels: a function from a float batch `[n, h, w, c]` to uint8 pixels, for
            inputs no range describes (e.g. undo your normalisation). Overrides
            `value_range`.
        preprocessing: `"caffe"`, `"torch"` or `"tf"`: the inputs went through
            `keras.applications.imagenet_utils.preprocess_input` in that mode (e.g.
            `keras.applications.resnet50.preprocess_input` is `"caffe"`: BGR with the
            ImageNet means subtracted), undone for display so the pictures show true
            colours. Defaults to None. Not with `to_pixels` or `value_range`. A preset
            that cannot apply (uint8 inputs; `"caffe"`/`"torch"` on inputs without 3
            channels) warns once and the automatic range is used.
        log_validation: also log validation batches during `fit`. Defaults to True.
        validation_batches: how many batches of each validation run to log. Defaults
            to 1.
        top_k: how many classes to record per sample with their probability. Defaults
            to 5.
        max_queue: batches waiting for the background writer at most; more are
            dropped and counted. Defaults to 8.
        sample_stats: the data map: statistics of every sample of every training
            batch (appearances, confidence and variability of the given label,
            fraction correct, margin, forgetting events, last loss, the class
            predicted instead, a suspected-label-error score), accumulated inside
            the compiled step and written once per epoch (read them with
            `tb_batch_images.read_sample_stats`). Needs an integer
            `x["sample_id"]` in the batches, their number (`num_samples=` or
            `filenames=`) and a classification head (softmax or one sigmoid
            output). Defaults to None: on where possible, a log message saying
            why where not. `True`: the same, with a warning where not. `False`:
            off. Device memory: about `40 + 4 * classes` bytes per sample.
        num_samples: how many sample ids there are (ids are `0..num_samples-1`).
            Defaults to None: `len(filenames)` when `filenames=` is given.
        watchlist: with the data map on, how many of the last epoch's top suspects
            to capture (picture, prediction, loss) the next time they appear in a
            training batch, inside the compiled step: no second forward pass.
            Written once per epoch under the `batch_images_watchlist` tag, so the
            gallery's Dataset view shows each suspect's picture. Defaults to 32;
            `0` turns it off. Device memory: `watchlist` pictures at their logged
            size, float32 unless uint8 (32 of 64x64x3: about 1.6 MB), plus 8 KiB
            each.

    Example:

    ```python
    import keras
    import numpy as np
    import tensorflow as tf
    from tb_batch_images import BatchImageLogger

    paths = [f"img_{i}.png" for i in range(64)]
    images = np.random.rand(64, 32, 32, 3).astype("float32")
    labels = np.random.randint(0, 3, size=64)
    dataset = tf.data.Dataset.from_tensor_slices(
        ({"image": images, "filename": paths}, labels)
    ).batch(16)

    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Flatten(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(
        dataset,
        epochs=2,
        callbacks=[
            keras.callbacks.TensorBoard("logs/run1"),
            BatchImageLogger("logs/run1", every_n_steps=2,
                             class_names=["cat", "dog", "bird"]),
        ],
    )
    ```
    """

    def __init__(
        self,
        log_dir: str,
        every_n_steps: int = 100,
        log_steps: Iterable[int] | Callable[[int], bool] | None = None,
        samples_per_batch: int = 16,
        selection: str = "first",
        class_names: Sequence[str] | None = None,
        filenames: Sequence[str] | None = None,
        image_key: str | int | None = None,
        image_layer: str | bool | None = None,
        output: str | None = None,
        max_image_size: int = 256,
        image_format: str = "png",
        value_range: tuple[float, float] | None = None,
        to_pixels: Callable[[np.ndarray], np.ndarray] | None = None,
        preprocessing: str | None = None,
        log_validation: bool = True,
        validation_batches: int = 1,
        top_k: int = 5,
        max_queue: int = 8,
        sample_stats: bool | None = None,
        num_samples: int | None = None,
        watchlist: int = 32,
    ):
        super().__init__()
        options = LoggerOptions.checked(
            log_dir,
            every_n_steps=every_n_steps,
            log_steps=log_steps,
            samples_per_batch=samples_per_batch,
            selection=selection,
            class_names=class_names,
            filenames=filenames,
            image_key=image_key,
            image_layer=image_layer,
            output=output,
            max_image_size=max_image_size,
            image_format=image_format,
            value_range=value_range,
            to_pixels=to_pixels,
            preprocessing=preprocessing,
            log_validation=log_validation,
            validation_batches=validation_batches,
            top_k=top_k,
            max_queue=max_queue,
            sample_stats=sample_stats,
            num_samples=num_samples,
            watchlist=watchlist,
        )
        # The arguments, as checked, under their own names (as Keras's callbacks).
        for field in dataclasses.fields(options):
            setattr(self, field.name, getattr(options, field.name))
        self._session = CaptureSession(options)
        backend = keras.backend.backend()
        for key, message in keras_internals.gaps(backend):
            self._session.warn(key, message)
        problem = strip_metadata_before_symbolic_build()
        if problem is not None and backend != "tensorflow":
            self._session.warn(
                "keras_symbolic_build",
                f"on Keras {keras_internals.KERAS_VERSION} ({backend}), the logger "
                f"cannot take x['sample_id'] and x['filename'] out of the batch Keras "
                f"builds the model with ({problem}): a model that does not take those "
                f"inputs may fail to build; pass a dataset without them to a first "
                f"model.build() or fit",
            )

    # -- Keras lifecycle, in order ------------------------------------------------
    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        self._session.install(model)

    def on_train_begin(self, logs=None) -> None:
        # Not self.model: on JAX that forces a state sync.
        self._session.begin_fit(keras_internals.callback_model(self))

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._session.begin_epoch(epoch)

    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        self._session.schedule.train_begin_batch = batch

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        self._session.end_train_batch(batch)

    def on_test_begin(self, logs=None) -> None:
        self._session.begin_validation()

    def on_test_batch_begin(self, batch: int, logs=None) -> None:
        self._session.schedule.test_begin_batch = batch

    def on_test_end(self, logs=None) -> None:
        self._session.end_validation()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self._session.end_epoch(epoch)

    def on_train_end(self, logs=None) -> None:
        self._session.finish()

    def __del__(self):
        session = getattr(self, "_session", None)
        if session is not None:
            session.close_quietly()
