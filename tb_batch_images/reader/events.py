"""The plugin's values in a log directory, through TensorBoard's own event loading.

Works on any `tf.io.gfile` path that TensorBoard can read; every step of every run is
read (no sampling).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from tensorboard.backend.event_processing import plugin_event_multiplexer

from tb_batch_images import contract


@dataclasses.dataclass(frozen=True)
class LoggedStep:
    """One kept logged step of a run: its event, and (format version 3) its entry."""

    event: Any  # TensorBoard's TensorEvent (step, wall_time, tensor_proto)
    entry: contract.IndexEntry | None = None  # version 3: where its pack is

    @property
    def step(self) -> int:
        return int(self.event.step)

    @property
    def wall_time(self) -> float:
        return float(self.event.wall_time)


def _loaded(logdir: str) -> Any:
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance={contract.PLUGIN_NAME: 0}
    )
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    return multiplexer


def batch_steps(
    logdir: str, run: str | None
) -> Iterator[tuple[str, str, list[LoggedStep]]]:
    """(run, run folder, its logged batches) for every run, sorted by name.

    A run's batches are its version 3 index entries and its version 1-2 values of
    `batch_images`, each step once (a restarted run's newest writer's:
    `contract.replay_index`, as the plugin lists them), in step order.
    """
    multiplexer = _loaded(logdir)
    runs = multiplexer.PluginRunToTagToContent(contract.PLUGIN_NAME)
    paths = multiplexer.RunPaths()
    for run_name in sorted(runs):
        if run is not None and run_name != run:
            continue
        blob_groups: list[list[LoggedStep]] = []
        entries: list[LoggedStep] = []
        for tag, content in sorted(runs[run_name].items()):
            kind = contract.parse_plugin_content(content)["kind"]
            if kind == contract.SERIES_BATCHES:
                events = multiplexer.Tensors(run_name, tag)
                blob_groups.append([LoggedStep(event) for event in events])
            elif kind == contract.SERIES_BATCH_INDEX:
                for event in multiplexer.Tensors(run_name, tag):
                    value = _entry_value(event)
                    entry = contract.check_index_entry(value, int(event.step))
                    entries.append(LoggedStep(event, entry))
        if not blob_groups and not entries:
            continue
        kept = contract.replay_index(
            entries,
            step=lambda item: item.step,
            wall_time=lambda item: item.wall_time,
            writer=lambda item: item.entry.writer if item.entry else None,
            others=blob_groups,
        )
        yield run_name, paths.get(run_name, ""), kept


def _entry_value(event: Any) -> Any:
    """The string of an index entry's event (a rank-0 string tensor), else None."""
    proto = event.tensor_proto
    if len(proto.string_val) != 1:
        return None
    return proto.string_val[0]


def plugin_values(
    logdir: str, run: str | None, series_kind: str
) -> Iterator[tuple[str, Any]]:
    """(run, tensor event) of every value of one series kind, run by run (sorted by
    name), each run's in step order. `run` restricts to one run."""
    multiplexer = _loaded(logdir)
    runs = multiplexer.PluginRunToTagToContent(contract.PLUGIN_NAME)
    for run_name in sorted(runs):
        if run is not None and run_name != run:
            continue
        for tag, content in runs[run_name].items():
            if contract.parse_plugin_content(content)["kind"] != series_kind:
                continue
            events = sorted(multiplexer.Tensors(run_name, tag), key=lambda e: e.step)
            for event in events:
                yield run_name, event
