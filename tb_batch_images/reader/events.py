"""The plugin's values in a log directory, through TensorBoard's own event loading.

Works on any `tf.io.gfile` path that TensorBoard can read; every step of every run is
read (no sampling).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tensorboard.backend.event_processing import plugin_event_multiplexer

from tb_batch_images import contract


def plugin_values(
    logdir: str, run: str | None, series_kind: str
) -> Iterator[tuple[str, Any]]:
    """(run, tensor event) of every value of one series kind, run by run (sorted by
    name), each run's in step order. `run` restricts to one run."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance={contract.PLUGIN_NAME: 0}
    )
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
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
