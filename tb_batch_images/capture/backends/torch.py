"""PyTorch: one call of `model.train_function` is one step (Keras refuses
`steps_per_execution > 1` on torch), so the adapter wraps that call.

An eager step computes the selection only on the steps the host logs; a
`torch.compile`d step (`jit_compile=True`) computes it on every step, since a Python
branch inside a compiled step would recompile it.
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

    def before_execution(self, mode: str, iterator: Any) -> Any:
        self.before_step(mode)
        return None

    def after_execution(self, mode, token, result):
        self.after_step(mode, result)
        return super().after_execution(mode, token, result)

    def is_writer(self) -> bool:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank() == 0
        return True


def write_rows(variable: Any, rows: Any, values: Any) -> None:
    """`variable[rows] = values`, in place (`Variable.assign` copies every row)."""
    with torch.no_grad():
        target = variable.value
        target.index_copy_(0, rows.to(torch.int64), values.to(target.dtype))
