"""The flight recorder: which training steps are anomalies, decided inside the step.

`FlightRecorder` is a `keras.metrics.Metric` appended to the model's metrics during
`fit` (like `sample_stats.SampleStats`), so its few scalars are part of Keras's metrics
state on every backend (TensorFlow graph/XLA/`steps_per_execution`, the JAX stateless
step, PyTorch). The adapter's wrapped `compute_metrics` calls `update_state` in every
training step with the step's batch loss, the whole batch's per-sample losses and a
non-finite flag per input sample, and gets back tensors of the same step:

- `trigger`: 0 (none), 1 (non-finite) or 2 (loss spike), see `TRIGGER_CODES`;
- `priority`: per sample, how much it is a culprit (non-finite input or loss first,
  then the highest loss), which the capture uses to choose the samples on a triggered
  step;
- `scalars`: `[trigger, batch loss, running mean, running deviation, non-finite
  samples]` (float32), which leave the step with the capture (docs/format.md).

The rules (`TriggerSettings`, the logger's arguments):

- non-finite: the batch loss, any sample's loss, or any input value of any sample
  (the whole batch, every float input) is NaN or Inf. The first such step always
  triggers; after a trigger the next one waits `cooldown` steps, and each later wait
  doubles (100, 200, 400, ... steps by default), so a run whose weights went NaN logs a
  handful of steps, not thousands.
- spike: after `warmup` steps with a finite loss, the batch loss exceeds the running
  mean by more than `threshold` running deviations (the deviation taken as at least
  a tenth of the mean, so a flat loss does not make every wobble a spike). Mean and
  deviation are exponential moving averages with weight 1/`WINDOW` (the first steps
  averaged equally); a spike enters them clipped to the threshold, so one spike does
  not hide the next while a lasting change of level is learnt. After a spike trigger
  the next waits `cooldown` steps.

Cost per step: one sum per input sample (a NaN or Inf makes the sum non-finite), the
per-sample loss of the batch (already computed for `selection="highest_loss"`), and
a few scalar operations. Nothing leaves the device except through the capture.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tb_batch_images.capture.metadata_keys import leaves_of
from tb_batch_images.contract import names

# Codes of the `trigger` scalar; the record names them (`names.TRIGGERS`).
TRIGGER_NONE, TRIGGER_NON_FINITE, TRIGGER_SPIKE = 0, 1, 2
TRIGGER_CODES = {
    TRIGGER_NON_FINITE: names.TRIGGER_NON_FINITE,
    TRIGGER_SPIKE: names.TRIGGER_SPIKE,
}
# The step scalars that leave the step, in this order (float32).
SCALARS = ("trigger", "batch_loss", "loss_mean", "loss_deviation", "non_finite")
# The logs key of the flight recorder's per-step tensors (popped before Keras sees
# the logs, like the capture's own key).
LOGS_KEY = "_tb_batch_images_flight"
WINDOW = 100  # the running statistics' weight is 1/WINDOW
RELATIVE_FLOOR = 0.1  # the deviation is taken as at least this share of the mean
_CULPRIT = 1e30  # the priority of a non-finite sample
_NEVER = -(2**30)  # "no trigger yet", as a step


@dataclasses.dataclass(frozen=True)
class TriggerSettings:
    """The logger's trigger arguments, as checked (`logger.options`)."""

    non_finite: bool = True
    spike: bool = True
    threshold: float = 6.0  # deviations above the running mean
    warmup: int = 100  # steps with a finite loss before a spike can trigger
    cooldown: int = 100  # steps between two triggers of one kind

    @property
    def any(self) -> bool:
        return self.non_finite or self.spike


class FlightRecorder(keras.metrics.Metric):
    """The running loss statistics and the last triggers (a few scalars)."""

    def __init__(self, settings: TriggerSettings, name: str = "tb_batch_images_flight"):
        super().__init__(name=name)
        self.settings = settings

        def variable(name, dtype="float32", value=0):
            return self.add_variable(
                shape=(),
                initializer=keras.initializers.Constant(value),
                dtype=dtype,
                name=name,
            )

        self.seen = variable("seen", "int32")  # steps with a finite loss
        self.steps = variable("steps", "int32")  # every step
        self.mean = variable("mean")
        self.variance = variable("variance")
        self.last_spike = variable("last_spike", "int32", _NEVER)
        self.last_non_finite = variable("last_non_finite", "int32", _NEVER)
        self.non_finite_gap = variable("non_finite_gap", "int32", settings.cooldown)

    # -- in the step -------------------------------------------------------------
    def update_state(
        self, batch_loss: Any, sample_losses: Any, bad_inputs: Any
    ) -> dict[str, Any]:
        """One training step (keras.ops only). `batch_loss`: the step's scalar loss,
        or None; `sample_losses`: [batch] or None; `bad_inputs`: [batch] bool."""
        ops = keras.ops
        settings = self.settings
        bad = bad_inputs
        if sample_losses is not None:
            sample_losses = ops.cast(sample_losses, "float32")
            bad = ops.logical_or(bad, ops.logical_not(ops.isfinite(sample_losses)))
            if batch_loss is None:
                batch_loss = ops.mean(sample_losses)
        if batch_loss is None:
            loss = ops.zeros((), "float32")
            loss_known = ops.zeros((), "bool")
        else:
            loss = ops.cast(ops.reshape(batch_loss, ()), "float32")
            loss_known = ops.ones((), "bool")
        finite = ops.logical_and(loss_known, ops.isfinite(loss))
        loss_bad = ops.logical_and(loss_known, ops.logical_not(ops.isfinite(loss)))
        non_finite = ops.logical_or(loss_bad, ops.any(bad))

        step = self.steps.value
        seen = self.seen.value
        mean, variance = self.mean.value, self.variance.value
        deviation = ops.sqrt(ops.maximum(variance, 0.0))
        spread = ops.maximum(deviation, RELATIVE_FLOOR * ops.abs(mean))
        line = mean + settings.threshold * spread
        warm = seen >= settings.warmup

        nf_gap = self.non_finite_gap.value
        nf_trigger = ops.logical_and(
            non_finite, step - self.last_non_finite.value >= nf_gap
        )
        spike = ops.logical_and(
            ops.logical_and(finite, warm),
            ops.logical_and(
                loss > line, step - self.last_spike.value >= settings.cooldown
            ),
        )
        if not settings.non_finite:
            nf_trigger = ops.zeros((), "bool")
        if not settings.spike:
            spike = ops.zeros((), "bool")
        spike = ops.logical_and(spike, ops.logical_not(nf_trigger))
        trigger = ops.where(
            nf_trigger,
            TRIGGER_NON_FINITE,
            ops.where(spike, TRIGGER_SPIKE, TRIGGER_NONE),
        )
        trigger = ops.cast(trigger, "int32")

        # The running statistics: finite losses only, a spike clipped to the line.
        value = ops.where(warm, ops.minimum(loss, line), loss)
        value = ops.where(finite, value, mean)
        weight = ops.maximum(
            1.0 / ops.cast(seen + 1, "float32"), ops.cast(1.0 / WINDOW, "float32")
        )
        delta = value - mean
        new_mean = mean + weight * delta
        new_variance = (1.0 - weight) * (variance + weight * delta * delta)
        finite_int = ops.cast(finite, "int32")

        if sample_losses is None:
            priority = ops.cast(bad, "float32")
        else:
            priority = ops.where(
                bad, _CULPRIT, ops.where(ops.isnan(sample_losses), 0.0, sample_losses)
            )
        scalars = ops.stack(
            [
                ops.cast(trigger, "float32"),
                ops.where(loss_known, loss, np.nan),
                mean,
                deviation,
                ops.sum(ops.cast(bad, "float32")),
            ]
        )
        updates = [
            (self.steps, step + 1),
            (self.seen, seen + finite_int),
            (self.mean, ops.where(finite, new_mean, mean)),
            (self.variance, ops.where(finite, new_variance, variance)),
            (self.last_spike, ops.where(spike, step, self.last_spike.value)),
            (
                self.last_non_finite,
                ops.where(nf_trigger, step, self.last_non_finite.value),
            ),
            # The first trigger keeps the wait at `cooldown`; each later one doubles it.
            (
                self.non_finite_gap,
                ops.where(
                    ops.logical_and(nf_trigger, self.last_non_finite.value != _NEVER),
                    nf_gap * 2,
                    nf_gap,
                ),
            ),
        ]
        # Assigned only now: on PyTorch a variable's value is updated in place.
        for variable, new in updates:
            variable.assign(ops.cast(new, variable.dtype))
        return {"trigger": trigger, "priority": priority, "scalars": scalars}

    # -- Keras's metric protocol ----------------------------------------------------
    def reset_state(self) -> None:
        """Nothing: Keras resets metrics each epoch; these span the whole run."""

    def result(self) -> dict:
        return {}


def bad_inputs(x: Any) -> Any:
    """[batch] bool: which samples hold a NaN or Inf in any float input of `x`.

    One sum per sample and input: a NaN or an Inf makes the sum non-finite (an
    overflow of finite values could too; float32 inputs would need values near
    1e38 for that). Integer inputs cannot hold either.
    """
    ops = keras.ops
    flags = None
    for leaf in leaves_of(x):
        dtype = str(getattr(leaf, "dtype", ""))
        if "float" not in dtype and "bfloat" not in dtype:
            continue
        if len(leaf.shape) < 1:
            continue
        batch = ops.shape(leaf)[0]
        values = ops.reshape(ops.cast(leaf, "float32"), (batch, -1))
        bad = ops.logical_not(ops.isfinite(ops.sum(values, axis=1)))
        flags = bad if flags is None else ops.logical_or(flags, bad)
    return flags


def loss_of_step(losses: Any) -> Any:
    """The scalar loss of one `compute_loss` call (None if it gave none)."""
    if losses is None:
        return None
    try:
        return keras.ops.reshape(keras.ops.cast(losses, "float32"), ())
    except Exception:  # not a scalar: no batch loss
        return None


def ring_rows(
    arrays: dict[str, np.ndarray],
    start_step: int,
    read_rows: int,
    has_ids: bool,
) -> dict[str, Any] | None:
    """The composition rows written since `read_rows`, from numpy copies of a
    composition ring (`scalars` [steps, 5], `spans` [steps, 2]: where each step's ids
    start in the flat `ids` ring and how many, `counters`: steps written, ids
    written, triggers); None if there are none. Rows older than the ring are lost."""
    steps, size = len(arrays["scalars"]), len(arrays["ids"])
    written, position = int(arrays["counters"][0]), int(arrays["counters"][1])
    first = max(read_rows, written - steps)
    if first >= written:
        return None
    rows = np.arange(first, written)
    slots = rows % steps
    ids = None
    if has_ids:
        ids = []
        for start, count in arrays["spans"][slots]:
            if position - start > size:  # overwritten since
                ids.append(np.zeros(0, np.int32))
                continue
            at = (start + np.arange(count)) % size
            ids.append(arrays["ids"][at].astype(np.int32))
    return {
        "steps": start_step + rows,
        "scalars": arrays["scalars"][slots],
        "ids": ids,
    }
