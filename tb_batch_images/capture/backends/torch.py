"""PyTorch: the step runs in Python (eager) or compiled by `torch.compile`.

An eager step is counted and captured by its own wrapper, step by step (Keras 3.16
runs `steps_per_execution` steps in one call of `model.train_function`, a loop over
a list of batches). A `torch.compile`d step (`jit_compile=True`) computes the
selection on every step, since a Python branch inside a compiled step would recompile
it, and the host takes the last step's arrays per call.
"""

from __future__ import annotations

from typing import Any

import torch

from tb_batch_images.capture.backends.logs import LogsAdapter


class TorchAdapter(LogsAdapter):
    backend = "torch"
    state_arguments = 0  # train_step(data)

    def is_compiling(self, x: Any) -> bool:
        return bool(torch.compiler.is_compiling())

    def steps_in_call(self, args: tuple) -> int | None:
        """The batches of one call: Keras passes a list of them (one in 3.15)."""
        data = args[-1] if args else None
        return len(data) if isinstance(data, (list, tuple)) else 1

    def is_writer(self) -> bool:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank() == 0
        return True
