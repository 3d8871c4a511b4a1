"""Which steps are captured: the regular schedule, the user's extra steps, validation.

The logger keeps one `Schedule` and moves it along Keras's lifecycle (the step an
epoch starts at, the batch an execution starts at); the adapters ask it which steps
of the next execution to capture (`wanted`) or whether one step is logged
(`wants_step`), and the TensorFlow adapter decides the regular part in the graph
(`in_graph`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class Schedule:
    """Steps to log: every `every_n_steps` global steps (0: none), the steps of
    `log_steps` (ints, or a function step -> bool), and the first
    `validation_batches` batches of each validation run."""

    def __init__(
        self,
        every_n_steps: int,
        log_steps: Iterable[int] | Callable[[int], bool] | None,
        validation_batches: int,
    ):
        self.every_n_steps = every_n_steps
        self.log_steps = log_steps
        self.validation_batches = validation_batches
        self.epoch_base = 0  # the global step the running epoch started at
        self.train_begin_batch = 0  # the batch the next training execution starts at
        self.test_begin_batch = 0  # the batch the next validation execution starts at

    def in_graph(self, mode: str) -> tuple[int, int]:
        """(every_n, below): the regular schedule, for adapters that decide in-graph."""
        if mode == "train":
            return self.every_n_steps, 0
        return 0, self.validation_batches

    def is_extra_step(self, step: int) -> bool:
        """A step of the user's log_steps (the regular schedule aside)."""
        if self.log_steps is None:
            return False
        if callable(self.log_steps):
            return bool(self.log_steps(step))
        return step in self.log_steps

    def wants_step(self, mode: str, count: int) -> bool:
        """Whether to log this count (train: global step; validation: batch)."""
        if mode == "validation":
            return count < self.validation_batches
        regular = bool(self.every_n_steps) and count % self.every_n_steps == 0
        return regular or self.is_extra_step(count)

    def execution_steps(self, mode: str, slots: int) -> list[int]:
        """Every step (train) or batch (validation) the next execution may run."""
        first = (
            self.test_begin_batch
            if mode == "validation"
            else self.epoch_base + self.train_begin_batch
        )
        return list(range(first, first + slots))

    def wanted(self, mode: str, slots: int) -> tuple[list[int], list[int]]:
        """(every step the next execution captures, those off the regular schedule)."""
        if mode == "validation":
            first = self.test_begin_batch
            return [
                b for b in range(first, first + slots) if b < self.validation_batches
            ], []
        first = self.epoch_base + self.train_begin_batch
        steps = range(first, first + slots)
        extra = [s for s in steps if self.is_extra_step(s)]
        regular = [
            s for s in steps if self.every_n_steps and s % self.every_n_steps == 0
        ]
        return sorted(set(regular) | set(extra)), extra
