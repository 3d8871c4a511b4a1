"""`read_composition`: every training step's batch loss, trigger and sample ids.

Read from the `batch_images_composition` values (docs/format.md, "Composition")
through TensorBoard's own event-file loading, decoded by the contract.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tensorboard.util import tensor_util

from tb_batch_images import contract
from tb_batch_images.reader.events import plugin_values


@dataclasses.dataclass
class Composition:
    """One run's steps, in step order: `steps`, `losses` (NaN: not finite or
    unknown), `triggers` (None, `"non_finite"` or `"spike"` per step),
    `sample_ids(step)`: the ids of that step's batch, and `filenames(step)` where
    the logger had `filenames=`."""

    run: str
    steps: np.ndarray
    losses: np.ndarray
    trigger_codes: np.ndarray
    _ids: dict[int, list[int]]
    names: list[str] | None = None

    @property
    def triggers(self) -> list[str | None]:
        codes = contract.TRIGGER_CODES
        return [codes[c] if 0 < c < len(codes) else None for c in self.trigger_codes]

    def anomalies(self) -> list[tuple[int, str]]:
        """(step, trigger) of every triggered step."""
        return [
            (int(step), name)
            for step, name in zip(self.steps, self.triggers, strict=True)
            if name
        ]

    def loss(self, step: int) -> float | None:
        index = np.searchsorted(self.steps, step)
        if index < len(self.steps) and self.steps[index] == step:
            return float(self.losses[index])
        return None

    def sample_ids(self, step: int) -> list[int]:
        return list(self._ids.get(int(step), []))

    def filenames(self, step: int) -> list[str | None]:
        names = self.names or []
        return [
            names[i] if 0 <= i < len(names) else None for i in self.sample_ids(step)
        ]


def read_composition(logdir: str, run: str = "train") -> Composition:
    """The composition of one run (default `"train"`, relative to `logdir`)."""
    steps, losses, codes, ids, names = [], [], [], {}, None
    for _, event in plugin_values(logdir, run, contract.SERIES_COMPOSITION):
        elements = [
            bytes(e) for e in tensor_util.make_ndarray(event.tensor_proto).reshape(-1)
        ]
        block = contract.decode_composition(elements)
        steps.append(block.steps)
        losses.append(block.losses)
        codes.append(block.triggers)
        names = block.filenames if block.filenames is not None else names
        for index, step in enumerate(block.steps):
            ids[int(step)] = block.sample_ids(index)
    if not steps:
        return Composition(run, np.zeros(0, np.int64), np.zeros(0), np.zeros(0), {})
    all_steps = np.concatenate(steps)
    order = np.argsort(all_steps, kind="stable")
    return Composition(
        run=run,
        steps=all_steps[order],
        losses=np.concatenate(losses)[order],
        trigger_codes=np.concatenate(codes)[order].astype(np.int64),
        _ids=ids,
        names=names,
    )
