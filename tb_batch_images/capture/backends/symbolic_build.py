"""The trainer's symbolic build sees `x` without the metadata keys (JAX, PyTorch).

On JAX and PyTorch, `fit` builds the model and its compiled metrics by calling it
symbolically on the first batch *before* any callback runs (`set_model` included), so a
`Sequential` model would reject `x["sample_id"]` there. `strip_metadata_before_symbolic_build`
wraps the trainer's `_symbolic_build` (through `keras_internals`, once per process) to
drop the metadata keys from that first batch, exactly as the logger's step wrapper
does for every step.
"""

from __future__ import annotations

import keras

from tb_batch_images.capture import keras_internals, metadata_keys

_MARKER = "tb_batch_images_wrapper"


def strip_metadata_before_symbolic_build() -> str | None:
    """Wraps Keras's symbolic build to drop the metadata keys from the first batch.

    Returns None when the build is wrapped (now or before), else why it could not be
    (this Keras's trainer looks different). Models that declare an input named
    `sample_id` or `filename` are left alone.
    """
    return keras_internals.wrap_symbolic_build(_stripping_build, _MARKER)


def _stripping_build(original):
    def _symbolic_build(self, *args, iterator=None, data_batch=None, **kwargs):
        if (
            not args
            and data_batch is None
            and iterator is not None
            and keras_internals.needs_build(self)
        ):
            try:
                for _, _, data_or_iterator in iterator:  # as Keras takes its first
                    if isinstance(data_or_iterator, (list, tuple)):
                        data_batch = data_or_iterator[0]
                    else:
                        data_batch = next(data_or_iterator)
                    break
            except (TypeError, ValueError) as error:
                explain_strings(error)
                raise
        if data_batch is not None:
            data_batch = metadata_keys.without_metadata(self, data_batch)
        try:
            return original(
                self, *args, iterator=iterator, data_batch=data_batch, **kwargs
            )
        except (TypeError, ValueError) as error:
            explain_strings(error)
            raise

    return _symbolic_build


STRINGS_OFF_TENSORFLOW = (
    "tb_batch_images: on the {backend} backend, Keras cannot put strings in a batch "
    "(its data adapters accept numbers only), so filenames cannot travel in it, "
    "neither as x['filename'] nor as a third element. Put an integer x['sample_id'] (the index into your list of paths) in the batch instead, "
    "and pass the list as BatchImageLogger(..., filenames=paths)."
)


def explain_strings(error: BaseException) -> None:
    """Adds what to do to Keras's own error when strings are in a JAX/torch batch."""
    backend = keras.backend.backend()
    text = str(error).lower()
    clues = ("dtype", "string", "abstract array")
    if backend != "tensorflow" and any(clue in text for clue in clues):
        error.add_note(STRINGS_OFF_TENSORFLOW.format(backend=backend))
