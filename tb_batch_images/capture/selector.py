"""Which samples of a batch are logged, and what of them is copied, inside the step.

Everything here is written with `keras.ops`, so the same code runs inside a TensorFlow
graph, a JAX trace or a PyTorch step. The per-backend adapters
(`tb_batch_images.capture.backends`) decide only how the step is wrapped and how the
chosen arrays leave it.

`SampleSelector.select` runs inside the training step, on the step's own tensors: the
batch `x` the model received, the labels `y` and the `y_pred` of the training forward
pass (so there is no second forward pass). It returns fixed-shape arrays for the
`samples` chosen samples: their positions in the batch, their pixels (channels last,
downscaled to `max_image_size`), per-sample pixel statistics, labels and outputs
(flattened, `VALUES_PER_SAMPLE` values), output statistics, the per-sample loss of the
compiled loss and the sample ids. For a model with several outputs (`Heads`), the
prediction and loss come from one head and every head's per-sample loss is kept
(`head_losses`). Images whose height and width are unknown when the step is traced
(a `tf.data` pipeline that decodes files without resizing, a model with
`Input((None, None, 3))`) are fitted into `max_image_size` and padded, with their
true and stored sizes beside them (`image_sizes`). A detection batch (boxes in `y`,
`tb_batch_images.capture.boxes`) gives the chosen samples' label boxes, and predicted
boxes where they can be decoded, instead of flattened labels and outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tb_batch_images.capture import dense_maps, step_pixels
from tb_batch_images.capture.batch import BOX_PREDICTION_ARRAYS
from tb_batch_images.capture.boxes import BoxCapture, describe_structure, find_boxes
from tb_batch_images.capture.heads import Heads
from tb_batch_images.capture.losses import per_sample_losses
from tb_batch_images.capture.metadata_keys import first_leaf
from tb_batch_images.capture.specs import InputLayout
from tb_batch_images.contract import names

# Values of labels and outputs kept per sample (flattened); min/max/mean cover the rest.
VALUES_PER_SAMPLE = 1024


def _flatten_padded(values: Any, count: int) -> tuple[Any, list[int | None]]:
    """[count, ...] -> ([count, VALUES_PER_SAMPLE] float32, per-sample shape)."""
    ops = keras.ops
    values = ops.cast(values, "float32")
    sample_shape = [None if d is None else int(d) for d in values.shape[1:]]
    flat = ops.reshape(values, (count, -1))
    # Padding with a full row of zeros, then cutting, works for any (even unknown) size.
    padded = ops.concatenate(
        [flat, ops.zeros((count, VALUES_PER_SAMPLE), "float32")], axis=1
    )
    return padded[:, :VALUES_PER_SAMPLE], sample_shape


class SampleSelector:
    """Chooses and copies the logged samples of a batch, inside the step.

    `select` is traced once per compiled step (or runs eagerly); the static facts it
    learns (`label_shape`, `output_shape`, `has_loss`) are what the host needs to read
    the flattened arrays back.
    """

    def __init__(
        self,
        layout: InputLayout,
        samples: int,
        selection: str,
        loss_fn: Callable | None,
        heads: Heads | None = None,
        task: str | None = None,
        boxes: BoxCapture | None = None,
    ):
        self.layout = layout
        # The task read from the loss (`losses.task_from_loss`): how dense maps
        # are read (classes, one sigmoid channel, or values). None: no maps kept.
        self.task = task
        self.samples = samples
        self.selection = selection
        self.heads = heads
        self.loss_fn = loss_fn if heads is None else heads.loss_fns[heads.chosen]
        self.label_shape: list[int | None] | None = None
        self.output_shape: list[int | None] | None = None
        self.has_loss = False
        self.has_head_losses = False
        # Dense maps (set when traced): how they read (None: the output is no map),
        # and why a map-shaped output got none.
        self.maps: dense_maps.MapFacts | None = None
        self.no_mask_reason: str | None = None
        # Antialiased downscaling; XLA has no kernel for it (TensorFlow's
        # ScaleAndTranslate), so the TensorFlow adapter turns it off under XLA.
        self.antialias = True
        # Detection (`bounding_box_format=`): the boxes of the chosen samples.
        self.boxes = boxes
        # Set when traced: y held boxes the logger was not told how to read.
        self.unread_boxes: str | None = None

    def slot_arrays(
        self, *, sample_ids: bool, filenames: bool, image_sizes: bool, flight: bool
    ) -> list[str]:
        """The names of the per-step buffers a backend's slots hold for this
        selector, as the traced step left it: the slot bookkeeping, then the arrays
        of `take` that it filled (the flags: what else the backend's slots hold)."""
        names = ["filled_step", "count", "batch_size", "positions", "images"]
        names.append("image_stats")
        if self.label_shape is not None:
            names.append("labels")
        if self.output_shape is not None:
            names += ["outputs", "output_stats"]
        if self.has_loss:
            names.append("losses")
        optional = {
            "sample_ids": sample_ids,
            "filenames": filenames,
            "head_losses": self.has_head_losses,
            "image_sizes": image_sizes,
            "flight": flight,
        }
        names += [name for name, present in optional.items() if present]
        if self.maps is not None:
            names.append("output_maps")
            if self.maps.has_label_map:
                names.append("label_maps")
        boxes = self.boxes
        if boxes is not None and boxes.has_labels:
            names += ["boxes", "box_classes", "box_counts"]
            if boxes.has_predictions:
                names += [f"predicted_{name}" for name in BOX_PREDICTION_ARRAYS]
        return names

    def select(
        self, image: Any, metadata: dict, y: Any, y_pred: Any, recorded: Any = None
    ) -> dict:
        """The chosen samples of one batch, as fixed-shape arrays (see module doc).

        `recorded`: the flight recorder's tensors of this training step
        (`capture.flight`), or None. On a triggered step the culprits come first
        (non-finite samples, then the highest losses), whatever `selection` says; the
        step's scalars join the arrays (`flight`).
        """
        ops = keras.ops
        n = self.samples
        batch = ops.shape(image)[0]
        label, output = self._label_output(y, y_pred)
        full_loss = None
        if recorded is not None and recorded.get("sample_losses") is not None:
            full_loss = recorded["sample_losses"]
            self.has_loss = True
        if self.selection == "highest_loss":
            if full_loss is None:
                full_loss = self._loss(label, output)
            if full_loss is not None:
                ranked = ops.where(ops.isnan(full_loss), np.inf, full_loss)
                order = ops.argsort(-ranked)
            else:
                order = ops.arange(batch)
        elif self.selection == "random":
            order = ops.argsort(_pseudo_random(image, batch))
        else:
            order = ops.arange(batch)
        if recorded is not None:
            culprits_first = ops.argsort(-recorded["priority"])
            order = ops.where(
                recorded["trigger"] > 0,
                ops.cast(culprits_first, "int32"),
                ops.cast(order, "int32"),
            )
        index = ops.take(order, ops.minimum(ops.arange(n), batch - 1), axis=0)
        result = self.take(image, metadata, y, y_pred, index, full_loss)
        if recorded is not None:
            result["flight"] = recorded["scalars"]
        return result

    def take(
        self,
        image: Any,
        metadata: dict,
        y: Any,
        y_pred: Any,
        index: Any,
        full_loss: Any = None,
    ) -> dict:
        """The samples at `index` (`[samples]` positions in the batch), as `select`.

        Also used by the watchlist (`tb_batch_images.capture.watchlist`), which chooses its
        positions by sample id. `full_loss`: the whole batch's per-sample loss, if
        `select` computed it already.
        """
        ops = keras.ops
        n = self.samples
        batch = ops.shape(image)[0]
        heads = self.heads
        label, output = self._label_output(y, y_pred)
        count = ops.minimum(n, batch)
        result = {
            "count": ops.cast(count, "int32"),
            "batch_size": ops.cast(batch, "int32"),
            "positions": ops.cast(index, "int32"),
        }
        result["images"], result["image_stats"], sizes = step_pixels.pictures(
            self.layout, ops.take(image, index, axis=0), n, self.antialias
        )
        if sizes is not None:
            result["image_sizes"] = sizes
        detection = self._boxes(result, image, y, y_pred, index)
        if detection:  # the boxes are the label; the outputs are no sample's values
            label_shown = output_shown = None
        else:
            label_shown, output_shown = label, output
        if label_shown is not None:
            result["labels"], self.label_shape = _flatten_padded(
                ops.take(label, index, axis=0), n
            )
        if output_shown is not None:
            chosen_output = ops.cast(ops.take(output, index, axis=0), "float32")
            result["outputs"], self.output_shape = _flatten_padded(chosen_output, n)
            flat = ops.reshape(chosen_output, (n, -1))
            result["output_stats"] = ops.stack(
                [ops.min(flat, axis=1), ops.max(flat, axis=1), ops.mean(flat, axis=1)],
                axis=1,
            )
            chosen_label = None if label is None else ops.take(label, index, axis=0)
            maps = dense_maps.dense_maps(
                self.layout, self.task, chosen_label, chosen_output
            )
            if isinstance(maps, str):
                self.no_mask_reason = maps
            elif maps is not None:
                label_map, result["output_maps"], self.maps = maps
                if label_map is not None:
                    result["label_maps"] = label_map
        if full_loss is not None:
            result["losses"] = ops.take(full_loss, index, axis=0)
        elif label is not None and output is not None:
            chosen_loss = self._loss(
                ops.take(label, index, axis=0), ops.take(output, index, axis=0)
            )
            if chosen_loss is not None:
                result["losses"] = chosen_loss
        if heads is not None:
            head_losses = self._head_losses(heads, index, y, y_pred, result)
            if head_losses is not None:
                result["head_losses"] = head_losses
        if names.SAMPLE_ID_KEY in metadata:
            ids = ops.reshape(metadata[names.SAMPLE_ID_KEY], (-1,))
            result["sample_ids"] = ops.cast(ops.take(ids, index, axis=0), "int32")
        return result

    def _boxes(self, result: dict, image: Any, y: Any, y_pred: Any, index: Any) -> bool:
        """Adds the chosen samples' boxes to `result`; whether `y` held boxes."""
        if self.boxes is None:
            if find_boxes(y) is not None:
                self.unread_boxes = describe_structure(y)
            return False
        chosen_images = keras.ops.take(image, index, axis=0)
        result.update(self.boxes.take(y, y_pred, chosen_images, index))
        return self.boxes.has_labels

    def _label_output(self, y: Any, y_pred: Any) -> tuple[Any, Any]:
        """The label and output of the logged head (the only one, or `heads.chosen`)."""
        if self.heads is None:
            return first_leaf(y), first_leaf(y_pred)
        chosen = self.heads.chosen
        return self.heads.pick(y, chosen), self.heads.pick(y_pred, chosen)

    def _loss(self, label: Any, output: Any) -> Any:
        values = per_sample_losses(self.loss_fn, label, output)
        if values is not None:
            self.has_loss = True
        return values

    def _head_losses(self, heads: Heads, index: Any, y: Any, y_pred: Any, result):
        """[n, heads]: every head's per-sample loss of the chosen samples (NaN: none)."""
        ops = keras.ops
        columns, any_loss = [], False
        for i, loss_fn in enumerate(heads.loss_fns):
            values = result.get("losses") if i == heads.chosen else None
            label, output = heads.pick(y, i), heads.pick(y_pred, i)
            if values is None and label is not None and output is not None:
                values = per_sample_losses(
                    loss_fn,
                    ops.take(label, index, axis=0),
                    ops.take(output, index, axis=0),
                )
            if values is None:
                values = ops.full((self.samples,), np.nan, "float32")
            else:
                any_loss = True
            columns.append(ops.reshape(values, (self.samples,)))
        if not any_loss:
            return None
        self.has_head_losses = True
        return ops.stack(columns, axis=1)


def _pseudo_random(image: Any, batch: Any) -> Any:
    """One pseudo-random key per sample, derived from the batch itself.

    No random state: the same code runs in a TensorFlow graph, a JAX trace (where a
    stateful random op would leak a tracer) and a PyTorch step, and every batch gets
    a different order.
    """
    ops = keras.ops
    salt = ops.mean(ops.nan_to_num(ops.cast(image, "float32"), posinf=0.0, neginf=0.0))
    positions = ops.cast(ops.arange(batch), "float32") + 1.0
    noise = ops.sin(positions * 12.9898 + salt * 78.233) * 43758.5453
    return noise - ops.floor(noise)
