"""Models with several outputs (heads): which head's prediction and loss are logged."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras

from tb_batch_images import contract
from tb_batch_images.capture import keras_internals, losses


# -- models with several outputs ---------------------------------------------------
@dataclasses.dataclass
class Heads:
    """The outputs (heads) of a model with several, in the model's own order.

    `chosen` gives the logged prediction and loss; `losses` are the compiled loss of
    each head (for reading its outputs as classes), `loss_fns` their per-sample form.
    """

    names: list[str]
    chosen: int
    losses: list[Any]
    loss_fns: list[Callable | None]

    @property
    def chosen_name(self) -> str:
        return self.names[self.chosen]

    def pick(self, structure: Any, index: int) -> Any:
        """Head `index`'s entry of `y` or `y_pred` (a dict, list or tuple), or None."""
        if isinstance(structure, dict):
            return structure.get(self.names[index])
        if isinstance(structure, (list, tuple)):
            return structure[index] if index < len(structure) else None
        return None


def output_names(model: keras.Model) -> list[str] | None:
    """The model's outputs in its own order (None: one output, or not known).

    A dict of outputs keeps the order it was written in (its keys are the names the
    compiled loss and `y` use); a list keeps its order (names: `model.output_names`).
    Keras flattens a dict in sorted key order, which is not the model's order.
    """
    structure = keras_internals.outputs_struct(model)
    if isinstance(structure, dict):
        names = [str(key) for key in structure]
    elif isinstance(structure, (list, tuple)):
        names = [str(name) for name in getattr(model, "output_names", None) or []]
        if len(names) != len(structure):
            names = [f"output_{i}" for i in range(len(structure))]
    else:
        return None
    return names if len(names) > 1 else None


def find_heads(model: keras.Model, output: str | None) -> Heads | None:
    """The heads of a model with several outputs, the logged one chosen; else None.

    `output=None`: the one head whose compiled loss is a classification loss, else
    the first head in the model's order. A name: that head (raises ValueError listing
    the heads when no head has that name).
    """
    heads = output_names(model)
    if heads is None:
        if output is not None:
            single = [str(n) for n in getattr(model, "output_names", None) or []]
            if single and output not in single:
                raise ValueError(
                    f"output={output!r} names no output of the model; it has one "
                    f"output, {single[0]!r} (leave output= unset)"
                )
        return None
    loss = getattr(model, "loss", None)
    if isinstance(loss, dict):
        head_losses = [loss.get(name) for name in heads]
    elif isinstance(loss, (list, tuple)) and len(loss) == len(heads):
        head_losses = list(loss)
    else:  # one loss for every output, as compile() applies it
        head_losses = [loss] * len(heads)
    if output is not None:
        if output not in heads:
            raise ValueError(
                f"output={output!r} names no output of the model; its outputs are "
                f"{heads}"
            )
        chosen = heads.index(output)
    else:
        classifying = [
            i
            for i, head_loss in enumerate(head_losses)
            if head_loss is not None
            and losses.task_from_loss(head_loss)[0] != contract.TASK_RAW
        ]
        chosen = classifying[0] if len(classifying) == 1 else 0
    return Heads(
        names=heads,
        chosen=chosen,
        losses=head_losses,
        loss_fns=[losses.per_sample_loss_fn(head_loss) for head_loss in head_losses],
    )
