"""tb-batch-images: see, batch by batch, exactly what a Keras model trained on.

Writer side: `BatchImageLogger`, a Keras callback. Reader side: `read_batches`, and
the TensorBoard plugin `batch_images` (loaded by TensorBoard itself).
"""

__version__ = "0.1.0"

__all__ = ["BatchImageLogger", "read_batches", "__version__"]


def __getattr__(name):
    # Imported lazily so that TensorBoard loading the plugin does not import Keras.
    if name == "BatchImageLogger":
        from tb_batch_images.callback import BatchImageLogger

        return BatchImageLogger
    if name == "read_batches":
        from tb_batch_images.reader import read_batches

        return read_batches
    raise AttributeError(f"module 'tb_batch_images' has no attribute {name!r}")
