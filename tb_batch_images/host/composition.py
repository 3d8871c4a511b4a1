"""Every training step's composition, gathered on the host and written in blocks.

The adapters hand over the steps they read from the device (`CaptureHost.composed`:
steps, the flight recorder's step scalars, sample ids); `CompositionLog` keeps them
until a block is full (`BLOCK_STEPS`), or until the logger writes early (a trigger,
the end of fit, an epoch end a while after the last write), and then hands one
composition value (`contract.encode_composition`) per block to the background writer.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tb_batch_images import contract

BLOCK_STEPS = 1000  # steps of one composition value
EPOCH_END_WRITE_SECONDS = 30.0  # an epoch end writes a partial block this long after


class CompositionLog:
    """Rows not yet written: steps, batch losses, trigger codes, sample ids."""

    def __init__(
        self, block_steps: int = BLOCK_STEPS, filenames: list[str] | None = None
    ):
        self.block_steps = block_steps
        self.filenames = filenames
        self._send_filenames = filenames is not None
        self._steps: list[int] = []
        self._losses: list[float] = []
        self._triggers: list[int] = []
        self._ids: list[np.ndarray | None] = []
        self._last_write = time.monotonic()
        self.written_steps = 0

    def begin_fit(self) -> None:
        """The next block carries the filenames again (one per fit)."""
        self._send_filenames = self.filenames is not None

    def add(self, rows: dict[str, Any]) -> None:
        steps = np.asarray(rows["steps"], np.int64)
        scalars = np.asarray(rows["scalars"], np.float32).reshape(len(steps), -1)
        ids = rows.get("ids")
        self._steps.extend(int(s) for s in steps)
        self._losses.extend(float(v) for v in scalars[:, 1])
        codes = np.nan_to_num(scalars[:, 0], nan=0.0).astype(np.int64)
        self._triggers.extend(int(c) for c in np.clip(codes, 0, 255))
        if ids is None:
            self._ids.extend([None] * len(steps))
        else:
            self._ids.extend(np.asarray(i, np.int32).reshape(-1) for i in ids)

    def __len__(self) -> int:
        return len(self._steps)

    def blocks(self, force: bool = False) -> list[tuple[int, list[bytes]]]:
        """(first step, elements) of each value to write now: full blocks, and with
        `force` the rest too."""
        out = []
        while len(self._steps) >= self.block_steps or (force and self._steps):
            n = min(self.block_steps, len(self._steps))
            out.append(self._encode(n))
        if out:
            self._last_write = time.monotonic()
        return out

    def due(self) -> bool:
        """Whether an epoch end should write the partial block."""
        return bool(self._steps) and (
            time.monotonic() - self._last_write >= EPOCH_END_WRITE_SECONDS
        )

    def _encode(self, n: int) -> tuple[int, list[bytes]]:
        steps = np.asarray(self._steps[:n], np.int64)
        losses = np.asarray(self._losses[:n], np.float32)
        triggers = np.asarray(self._triggers[:n], np.uint8)
        ids_rows = self._ids[:n]
        del self._steps[:n], self._losses[:n], self._triggers[:n], self._ids[:n]
        ids = None
        if any(row is not None for row in ids_rows):
            width = max(len(row) for row in ids_rows if row is not None)
            ids = np.full((n, max(width, 1)), -1, np.int32)
            for i, row in enumerate(ids_rows):
                if row is not None:
                    ids[i, : len(row)] = row
        self.written_steps += n
        filenames = self.filenames if self._send_filenames else None
        self._send_filenames = False
        return int(steps[0]), contract.encode_composition(
            steps, losses, triggers, ids, filenames
        )
