"""In-graph capture of the real training batch.

`BatchImageLogger` wraps the model's `train_step`/`test_step`. The wrapper strips the
metadata keys (`filename`, `sample_id`) from `x`, runs the model's own step, and records
the `y_pred` the step handed to `compute_metrics`: the training forward pass, so there is
no second forward pass. On the chosen steps (the regular schedule is decided in the
graph from a step counter; irregular steps are named by the host in a small `want`
variable) it copies the chosen samples' inputs, labels, outputs and per-sample loss into
fixed-shape variables, one slot per step of an execution (`steps_per_execution`). The
training thread reads those variables back after the execution, in one call; everything
else happens on the background writer thread.

Variables are `ON_READ` / `ONLY_FIRST_REPLICA`, so under a `tf.distribute` strategy each
replica writes its own copy and the host reads replica 0's share of the batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from tb_batch_images import format as fmt

# Values of labels and outputs kept per sample (flattened); min/max/mean cover the rest.
VALUES_PER_SAMPLE = 1024
SELECTIONS = ("first", "random", "highest_loss")


class CaptureError(ValueError):
    """The data cannot be captured; the message says what to do instead."""


@dataclasses.dataclass
class InputLayout:
    """Where the image is in `x` and how one sample is laid out."""

    image_key: Any  # dict key or tuple index, None when x is the image tensor
    layout: str  # "HWC", "CHW" or "HW"
    input_shape: list[int]  # one sample, as the model receives it
    input_dtype: str
    stored_shape: list[int]  # [h, w, c] after layout change and downscaling
    stored_dtype: tf.DType
    has_sample_id: bool
    has_filename: bool


def find_image(x_spec: Any, image_key: Any) -> tuple[Any, tf.TensorSpec]:
    """(key, spec) of the image input in an element spec of `x`.

    Raises CaptureError when no input can be an image.
    """
    if isinstance(x_spec, dict):
        if image_key is not None:
            if image_key not in x_spec:
                raise CaptureError(
                    f"image_key={image_key!r} is not a key of the input dict "
                    f"(keys: {sorted(map(str, x_spec))})"
                )
            return image_key, x_spec[image_key]
        candidates = [
            key
            for key, spec in x_spec.items()
            if key not in fmt.METADATA_KEYS and _could_be_image(spec)
        ]
        for preferred in ("image", "images", "img", "pixels", "input"):
            if preferred in candidates:
                return preferred, x_spec[preferred]
        if len(candidates) == 1:
            return candidates[0], x_spec[candidates[0]]
        if not candidates:
            raise CaptureError(
                f"no input in the x dict looks like an image batch (keys: "
                f"{sorted(map(str, x_spec))}); images are [batch, height, width, "
                f"channels] or [batch, height, width] numeric tensors"
            )
        raise CaptureError(
            f"several inputs could be the image ({sorted(map(str, candidates))}); "
            f"pass image_key= to BatchImageLogger"
        )
    if isinstance(x_spec, (tuple, list)):
        index = image_key if isinstance(image_key, int) else None
        if index is None:
            candidates = [i for i, s in enumerate(x_spec) if _could_be_image(s)]
            if len(candidates) != 1:
                raise CaptureError(
                    "the model has several inputs; pass image_key=<index> "
                    "to BatchImageLogger"
                )
            index = candidates[0]
        return index, x_spec[index]
    if not _could_be_image(x_spec):
        raise CaptureError(
            f"the input ({_describe_spec(x_spec)}) is not an image batch; images "
            f"are [batch, height, width, channels] or [batch, height, width] numbers"
        )
    return None, x_spec


def _could_be_image(spec: Any) -> bool:
    if not isinstance(spec, tf.TensorSpec):
        return False
    if not (spec.dtype.is_floating or spec.dtype.is_integer or spec.dtype.is_bool):
        return False
    rank = spec.shape.rank
    return rank in (3, 4) and spec.shape[1:].is_fully_defined()


def _describe_spec(spec: Any) -> str:
    if isinstance(spec, (tf.TensorSpec, tf.RaggedTensorSpec, tf.SparseTensorSpec)):
        return f"shape {spec.shape}, dtype {spec.dtype.name}"
    return type(spec).__name__


def layout_for(
    x_spec: Any,
    image_key: Any,
    max_image_size: int,
    data_format: str,
) -> InputLayout:
    """Decides how to capture the image input described by `x_spec`."""
    key, spec = find_image(x_spec, image_key)
    sample_shape = [int(d) for d in spec.shape[1:]]
    if len(sample_shape) == 2:
        layout = "HW"
        height, width, channels = sample_shape[0], sample_shape[1], 1
    elif _is_channels_first(sample_shape, data_format):
        layout = "CHW"
        channels, height, width = sample_shape
    else:
        layout = "HWC"
        height, width, channels = sample_shape
    scale = min(1.0, max_image_size / max(height, width))
    stored_h = max(1, round(height * scale))
    stored_w = max(1, round(width * scale))
    downscaled = (stored_h, stored_w) != (height, width)
    if spec.dtype == tf.uint8 and not downscaled:
        stored_dtype = tf.uint8
    else:
        stored_dtype = tf.float32
    has = isinstance(x_spec, dict)
    return InputLayout(
        image_key=key,
        layout=layout,
        input_shape=sample_shape,
        input_dtype=spec.dtype.name,
        stored_shape=[stored_h, stored_w, channels],
        stored_dtype=stored_dtype,
        has_sample_id=has and fmt.SAMPLE_ID_KEY in x_spec,
        has_filename=has and fmt.FILENAME_KEY in x_spec,
    )


def _is_channels_first(sample_shape: list[int], data_format: str) -> bool:
    first, last = sample_shape[0], sample_shape[-1]
    if data_format == "channels_first":
        return first in (1, 2, 3, 4)
    return first in (1, 3, 4) and last not in (1, 2, 3, 4)


def check_metadata_specs(x_spec: Any, jit_compile: bool) -> None:
    """Raises CaptureError for metadata the step cannot carry."""
    if not isinstance(x_spec, dict):
        return
    filename_spec = x_spec.get(fmt.FILENAME_KEY)
    if filename_spec is not None:
        if getattr(filename_spec, "dtype", None) != tf.string:
            raise CaptureError(
                f"x['{fmt.FILENAME_KEY}'] must hold strings; to pass integer ids "
                f"use x['{fmt.SAMPLE_ID_KEY}'] and BatchImageLogger(filenames=...)"
            )
        if jit_compile:
            raise CaptureError(
                f"string filenames cannot travel through an XLA-compiled train step "
                f"(jit_compile=True, the default on GPU). Put an integer "
                f"x['{fmt.SAMPLE_ID_KEY}'] (the index into your list of paths) in "
                f"the batch instead of x['{fmt.FILENAME_KEY}'], and pass the list as "
                f"BatchImageLogger(..., filenames=paths)"
            )
    sample_id_spec = x_spec.get(fmt.SAMPLE_ID_KEY)
    if (
        sample_id_spec is not None
        and not getattr(sample_id_spec, "dtype", tf.string).is_integer
    ):
        raise CaptureError(
            f"x['{fmt.SAMPLE_ID_KEY}'] must hold integers (got "
            f"{_describe_spec(sample_id_spec)}); put strings in x['{fmt.FILENAME_KEY}']"
        )


def check_sample_weight_spec(sample_weight_spec: Any) -> None:
    """A third element of strings is filenames in the sample-weight slot."""
    for spec in tf.nest.flatten(sample_weight_spec):
        if getattr(spec, "dtype", None) == tf.string:
            raise CaptureError(
                "the dataset yields (images, labels, filenames); Keras reads a third "
                "element as sample weights. Yield ({'image': images, 'filename': "
                "filenames}, labels) instead: BatchImageLogger strips 'filename' from "
                "x before the model sees it. Example: "
                "ds = ds.map(lambda img, label, name: ({'image': img, 'filename': "
                "name}, label))"
            )


def strip_metadata(x: Any, unwrap_single: bool) -> tuple[Any, dict[str, Any]]:
    """Removes metadata keys from a dict `x`; returns (x for the model, metadata)."""
    if not isinstance(x, dict) or not any(k in x for k in fmt.METADATA_KEYS):
        return x, {}
    metadata = {k: x[k] for k in fmt.METADATA_KEYS if k in x}
    rest = {k: v for k, v in x.items() if k not in fmt.METADATA_KEYS}
    if unwrap_single and len(rest) == 1:
        return next(iter(rest.values())), metadata
    return rest, metadata


def select_image(x: Any, layout: InputLayout) -> tf.Tensor:
    return x if layout.image_key is None else x[layout.image_key]


def per_sample_loss_fn(loss: Any) -> Callable | None:
    """A function (y_true, y_pred) -> per-sample loss for a compiled loss, or None."""
    import keras

    if isinstance(loss, dict):
        loss = next(iter(loss.values())) if len(loss) == 1 else None
    if isinstance(loss, (list, tuple)):
        loss = loss[0] if len(loss) == 1 else None
    if loss is None:
        return None
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        return loss.call  # unreduced, unlike __call__
    if not callable(loss):
        return None

    def per_sample(y_true, y_pred):
        # As compile() does for plain functions: match the ranks first.
        return loss(*_same_rank(y_true, y_pred))

    return per_sample


def _same_rank(y_true: tf.Tensor, y_pred: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Keras's rule: when ranks differ by one and the larger ends in 1, match them."""
    true_rank, pred_rank = y_true.shape.rank, y_pred.shape.rank
    if true_rank is None or pred_rank is None:
        return y_true, y_pred
    if pred_rank == true_rank + 1 and y_pred.shape[-1] == 1:
        if true_rank == 1:
            return y_true[..., tf.newaxis], y_pred
        return y_true, tf.squeeze(y_pred, -1)
    if true_rank == pred_rank + 1 and y_true.shape[-1] == 1:
        if pred_rank == 1:
            return y_true, y_pred[..., tf.newaxis]
        return tf.squeeze(y_true, -1), y_pred
    return y_true, y_pred


def _first_leaf(value: Any) -> Any:
    if value is None:
        return None
    leaves = tf.nest.flatten(value)
    return leaves[0] if leaves else None


def _flatten_padded(values: tf.Tensor, count: int) -> tuple[tf.Tensor, list[int]]:
    """[count, ...] -> ([count, VALUES_PER_SAMPLE] float32, per-sample shape)."""
    values = tf.cast(values, tf.float32)
    sample_shape = values.shape[1:].as_list()
    flat = tf.reshape(values, [count, -1])
    size = int(np.prod(sample_shape)) if None not in sample_shape else None
    if size is not None and size >= VALUES_PER_SAMPLE:
        return flat[:, :VALUES_PER_SAMPLE], sample_shape
    if size is not None:
        return tf.pad(flat, [[0, 0], [0, VALUES_PER_SAMPLE - size]]), sample_shape
    flat = flat[:, :VALUES_PER_SAMPLE]
    padding = VALUES_PER_SAMPLE - tf.shape(flat)[1]
    return tf.pad(flat, [[0, 0], [0, padding]]), sample_shape


class ModeBuffers:
    """The capture variables of one mode (train or validation) and their graph code.

    Create in cross-replica context (outside `strategy.run`), under the model's
    strategy scope. `capture` runs inside the step; the `arm`/`collect` methods run on
    the training thread between executions.
    """

    def __init__(
        self,
        layout: InputLayout,
        slots: int,
        samples: int,
        selection: str,
        loss_fn: Callable | None,
        start_counter: int,
        every_n: int = 0,
        below: int = 0,
    ):
        self.layout = layout
        self.slots = slots
        # The regular schedule is decided in the graph, so regular steps need no
        # write from the host: every `every_n`-th count, and counts below `below`.
        # `want` adds steps the host names (arm) for irregular schedules.
        self.every_n = every_n
        self.below = below
        self.samples = samples
        self.selection = selection
        self.loss_fn = loss_fn
        # Filled in at trace time: static facts about labels and outputs.
        self.label_shape: list[int] | None = None
        self.output_shape: list[int] | None = None
        self.has_loss = False
        self._reader = None  # built on first collect, after the step was traced

        def variable(initial, dtype, name):
            return tf.Variable(
                initial,
                dtype=dtype,
                trainable=False,
                name=f"tb_batch_images_{name}",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )

        n = samples
        self.counter = variable(start_counter, tf.int64, "counter")
        self.want = variable(
            tf.fill([slots], tf.constant(-1, tf.int64)), tf.int64, "want"
        )
        self.armed: list[int] | None = None  # what `want` holds, mirrored on the host
        self.filled_step = variable(
            tf.fill([slots], tf.constant(-1, tf.int64)), tf.int64, "filled_step"
        )
        self.count = variable(tf.zeros([slots], tf.int32), tf.int32, "count")
        self.batch_size = variable(tf.zeros([slots], tf.int32), tf.int32, "batch_size")
        self.positions = variable(tf.zeros([slots, n], tf.int32), tf.int32, "positions")
        self.images = variable(
            tf.zeros([slots, n, *layout.stored_shape], layout.stored_dtype),
            layout.stored_dtype,
            "images",
        )
        self.image_stats = variable(tf.zeros([slots, n, 4]), tf.float32, "image_stats")
        self.labels = variable(
            tf.zeros([slots, n, VALUES_PER_SAMPLE]), tf.float32, "labels"
        )
        self.outputs = variable(
            tf.zeros([slots, n, VALUES_PER_SAMPLE]), tf.float32, "outputs"
        )
        self.output_stats = variable(
            tf.zeros([slots, n, 3]), tf.float32, "output_stats"
        )
        self.losses = variable(tf.zeros([slots, n]), tf.float32, "losses")
        self.sample_ids = variable(
            tf.zeros([slots, n], tf.int64), tf.int64, "sample_ids"
        )
        self.filenames = (
            variable(tf.fill([slots, n], ""), tf.string, "filenames")
            if layout.has_filename
            else None
        )

    # -- in the graph ---------------------------------------------------------
    def capture(self, image: tf.Tensor, metadata: dict, y: Any, y_pred: Any) -> None:
        """Counts the step and, if it is wanted, copies the chosen samples."""
        current = self.counter.assign_add(1) - 1
        hit = tf.reduce_any(tf.equal(self.want, current))
        if self.every_n:
            hit = tf.logical_or(hit, tf.equal(current % self.every_n, 0))
        if self.below:
            hit = tf.logical_or(hit, tf.less(current, self.below))
        # Any `slots` consecutive counts have distinct residues: one slot each.
        slot = tf.cast(current % self.slots, tf.int32)

        def copy() -> tf.Tensor:
            self._copy(slot, current, image, metadata, y, y_pred)
            return tf.constant(True)

        tf.cond(hit, copy, lambda: tf.constant(False))

    def _copy(self, slot, current, image, metadata, y, y_pred) -> None:
        n = self.samples
        batch = tf.shape(image)[0]
        label = _first_leaf(y)
        output = _first_leaf(y_pred)

        full_loss = None
        if self.selection == "highest_loss":
            full_loss = self._loss(label, output)
            if full_loss is not None:
                ranked = tf.where(tf.math.is_nan(full_loss), np.inf, full_loss)
                order = tf.argsort(ranked, direction="DESCENDING", stable=True)
            else:
                order = tf.range(batch)
        elif self.selection == "random":
            order = tf.argsort(tf.random.uniform([batch]))
        else:
            order = tf.range(batch)
        index = tf.gather(order, tf.minimum(tf.range(n), batch - 1))
        count = tf.minimum(n, batch)

        updates = {
            "filled_step": current,
            "count": count,
            "batch_size": batch,
            "positions": tf.cast(index, tf.int32),
        }
        pixels, stats = self._pixels(tf.gather(image, index))
        updates["images"] = pixels
        updates["image_stats"] = stats
        if label is not None:
            labels, self.label_shape = _flatten_padded(tf.gather(label, index), n)
            updates["labels"] = labels
        if output is not None:
            chosen_output = tf.cast(tf.gather(output, index), tf.float32)
            outputs, self.output_shape = _flatten_padded(chosen_output, n)
            flat = tf.reshape(chosen_output, [n, -1])
            updates["outputs"] = outputs
            updates["output_stats"] = tf.stack(
                [
                    tf.reduce_min(flat, axis=1),
                    tf.reduce_max(flat, axis=1),
                    tf.reduce_mean(flat, axis=1),
                ],
                axis=1,
            )
        if full_loss is not None:
            updates["losses"] = tf.gather(full_loss, index)
        elif label is not None and output is not None:
            chosen_loss = self._loss(tf.gather(label, index), tf.gather(output, index))
            if chosen_loss is not None:
                updates["losses"] = chosen_loss
        if fmt.SAMPLE_ID_KEY in metadata:
            ids = tf.reshape(metadata[fmt.SAMPLE_ID_KEY], [batch])
            updates["sample_ids"] = tf.cast(tf.gather(ids, index), tf.int64)
        if self.filenames is not None and fmt.FILENAME_KEY in metadata:
            names = tf.reshape(metadata[fmt.FILENAME_KEY], [batch])
            updates["filenames"] = tf.gather(names, index)

        for name, value in updates.items():
            variable_ = getattr(self, name)
            value = tf.cast(value, variable_.dtype)
            if self.slots == 1:
                variable_.assign(tf.reshape(value, variable_.shape))
            else:
                variable_.assign(
                    tf.tensor_scatter_nd_update(
                        variable_.read_value(), [[slot]], value[tf.newaxis]
                    )
                )

    def _loss(self, label, output) -> tf.Tensor | None:
        if self.loss_fn is None or label is None or output is None:
            return None
        try:
            values = tf.cast(self.loss_fn(label, output), tf.float32)
        except Exception:  # a loss we cannot call per sample: no loss shown
            return None
        if values.shape.rank == 0:
            return None
        if values.shape.rank > 1:
            values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
        self.has_loss = True
        return values

    def _pixels(self, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Layout to [n, h, w, c], per-sample stats, downscale if too large."""
        if self.layout.layout == "HW":
            image = image[..., tf.newaxis]
        elif self.layout.layout == "CHW":
            image = tf.transpose(image, [0, 2, 3, 1])
        as_float = tf.cast(image, tf.float32)
        finite = tf.math.is_finite(as_float)
        axes = [1, 2, 3]
        stats = tf.stack(
            [
                tf.reduce_min(tf.where(finite, as_float, np.inf), axis=axes),
                tf.reduce_max(tf.where(finite, as_float, -np.inf), axis=axes),
                tf.cast(tf.reduce_any(tf.math.is_nan(as_float), axis=axes), tf.float32),
                tf.cast(tf.reduce_any(tf.math.is_inf(as_float), axis=axes), tf.float32),
            ],
            axis=1,
        )
        stored_h, stored_w, _ = self.layout.stored_shape
        if image.shape[1:3].as_list() != [stored_h, stored_w]:
            as_float = tf.image.resize(
                tf.where(finite, as_float, 0.0),
                [stored_h, stored_w],
                method="bilinear",
                antialias=True,
            )
            return as_float, stats
        return image, stats

    # -- on the training thread ----------------------------------------------
    def arm(self, extra: list[int]) -> None:
        """Sets the steps off the regular schedule to capture in the next execution."""
        padded = (extra + [-1] * self.slots)[: self.slots]
        if padded != (self.armed or [-1] * self.slots):
            self.want.assign(np.asarray(padded, np.int64))
        self.armed = padded if extra else None

    def read_counter(self) -> int:
        return int(self.counter.numpy())

    def set_counter(self, value: int) -> None:
        """Restarts the step count (validation runs); forgets earlier captures."""
        self.counter.assign(value)
        self.filled_step.assign(np.full([self.slots], -1, np.int64))

    def collect(self, expected: list[int]) -> list[dict[str, Any]]:
        """Copies the captured steps to host memory, one dict per step.

        `expected` are the counts the last execution should have captured. Counts
        are unique within a run (validation restarts its count with `set_counter`,
        which clears `filled_step`), so a slot holding an expected count was filled
        in this execution; an expected step that did not run (a short last
        execution) is simply absent.
        """
        arrays = {name: value.numpy() for name, value in self._read_all().items()}
        filled = arrays.pop("filled_step")
        slots = [
            step % self.slots
            for step in expected
            if int(filled[step % self.slots]) == step
        ]
        captured = []
        for slot in slots:
            count = int(arrays["count"][slot])
            item = {
                "counter": int(filled[slot]),
                "batch_size": int(arrays["batch_size"][slot]),
            }
            for name in _PER_SAMPLE:
                value = arrays.get(name)
                item[name] = None if value is None else value[slot, :count]
            captured.append(item)
        return captured

    def _readable(self) -> dict[str, tf.Variable]:
        names = ["filled_step", "count", "batch_size", "positions", "images"]
        names.append("image_stats")
        if self.label_shape is not None:
            names.append("labels")
        if self.output_shape is not None:
            names += ["outputs", "output_stats"]
        if self.has_loss:
            names.append("losses")
        if self.layout.has_sample_id:
            names.append("sample_ids")
        if self.filenames is not None:
            names.append("filenames")
        return {name: getattr(self, name) for name in names}

    def _read_all(self) -> dict[str, tf.Tensor]:
        """All capture variables in one call (one host round trip, one snapshot)."""
        if self._reader is None:
            variables = self._readable()
            self._reader = tf.function(
                lambda: {name: v.read_value() for name, v in variables.items()}
            )
        return self._reader()


_PER_SAMPLE = (
    "positions",
    "images",
    "image_stats",
    "labels",
    "outputs",
    "output_stats",
    "losses",
    "sample_ids",
    "filenames",
)
