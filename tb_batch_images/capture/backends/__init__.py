"""One small adapter per Keras backend: how the step is wrapped, how the samples leave it.

The shared part (which input is the image, which samples, per-sample loss, pixel
statistics) is the rest of `tb_batch_images.capture`; the lifecycle is the logger's. An adapter
only knows its backend's trainer:

- `tensorflow`: copies the chosen samples into fixed-shape variables inside the compiled
  step, under `tf.cond` on the schedule, one slot per step of an execution; the host
  reads them after the execution (XLA, `steps_per_execution`, `tf.distribute`).
- `jax` and `torch`: the step returns the chosen samples beside its logs, under a
  private key that the adapter pops before Keras sees the logs; the host converts them
  to numpy only on the steps it logs.
"""

from __future__ import annotations

from typing import Any

import keras

from tb_batch_images.capture.backends.base import (
    Adapter,
    CaptureHost,
    Unsupported,
    uses_xla,
)
from tb_batch_images.capture.backends.symbolic_build import (
    strip_metadata_before_symbolic_build,
)

__all__ = [
    "Adapter",
    "CaptureHost",
    "Unsupported",
    "adapter_for",
    "strip_metadata_before_symbolic_build",
    "uses_xla",
    "write_rows",
]


def adapter_for(model: keras.Model, host: CaptureHost) -> Adapter:
    """The adapter for the running Keras backend; raises Unsupported with the reason."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from tb_batch_images.capture.backends.tensorflow import TensorFlowAdapter

        return TensorFlowAdapter(model, host)
    if backend == "jax":
        from tb_batch_images.capture.backends.jax import JaxAdapter

        return JaxAdapter(model, host)
    if backend == "torch":
        from tb_batch_images.capture.backends.torch import TorchAdapter

        return TorchAdapter(model, host)
    raise Unsupported(
        f"the Keras backend {backend!r} (BatchImageLogger supports tensorflow, jax "
        f"and torch)"
    )


def write_rows(variable: keras.Variable, rows: Any, values: Any) -> None:
    """`variable[rows] = values` inside the step, touching only those rows.

    `rows`: int32 `[k]`; a row named twice must get the same values (which write wins
    is not defined). TensorFlow: `scatter_nd_update` on the variable (graph, XLA,
    `steps_per_execution`; a copy under a tf.distribute strategy). JAX: `.at[].set`
    on the value, done in place by XLA since Keras donates the state to its jitted
    step. PyTorch: `index_copy_` on the tensor.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from tb_batch_images.capture.backends.tensorflow import scatter_rows

        scatter_rows(variable.value, keras.ops.expand_dims(rows, 1), values)
    elif backend == "torch":
        from tb_batch_images.capture.backends import torch as torch_backend

        torch_backend.write_rows(variable, rows, values)
    else:
        variable.assign(
            keras.ops.scatter_update(
                variable.value, keras.ops.expand_dims(rows, 1), values
            )
        )
