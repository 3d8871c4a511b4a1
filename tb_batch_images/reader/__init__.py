"""The Python readers of a log directory: `read_batches`, `read_sample_stats` and
`read_composition`.

Reader side: only the contract (`tb_batch_images.contract`) and TensorBoard; never
Keras, the capture or the writer (`.importlinter` holds it to that).
"""

from tb_batch_images.reader.batches import LoggedBatch, LoggedSample, read_batches
from tb_batch_images.reader.composition import Composition, read_composition
from tb_batch_images.reader.sample_stats import (
    SampleStatsRows,
    Suspects,
    read_sample_stats,
)

__all__ = [
    "Composition",
    "LoggedBatch",
    "LoggedSample",
    "SampleStatsRows",
    "Suspects",
    "read_batches",
    "read_composition",
    "read_sample_stats",
]
