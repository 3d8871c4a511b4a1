"""tb-batch-images: see, batch by batch, exactly what a Keras model trained on.

Writer side: `BatchImageLogger`, a Keras callback, and `image_dataset_from_directory`
(Keras's loader with a sample id beside each image). Reader side: `read_batches`,
`read_sample_stats`, and the TensorBoard plugin `batch_images` (loaded by TensorBoard
itself). The parts, and the one direction of data between them, are in
docs/architecture.md: `contract` (the on-disk format), `capture` (inside the compiled
step), `host` (encoding and writing), `logger` (the callback), `reader` and `plugin`.
"""

__version__ = "0.1.0"

__all__ = [
    "BatchImageLogger",
    "image_dataset_from_directory",
    "map_images",
    "read_batches",
    "read_composition",
    "read_sample_stats",
    "without_ids",
    "__version__",
]
_DATASETS = ("image_dataset_from_directory", "map_images", "without_ids")


def __getattr__(name):
    # Imported lazily so that TensorBoard loading the plugin does not import Keras.
    if name == "BatchImageLogger":
        from tb_batch_images.logger.callback import BatchImageLogger

        return BatchImageLogger
    if name == "read_batches":
        from tb_batch_images.reader.batches import read_batches

        return read_batches
    if name == "read_composition":
        from tb_batch_images.reader.composition import read_composition

        return read_composition
    if name == "read_sample_stats":
        from tb_batch_images.reader.sample_stats import read_sample_stats

        return read_sample_stats
    if name in _DATASETS:
        from tb_batch_images import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module 'tb_batch_images' has no attribute {name!r}")
