"""The `batch_images` TensorBoard plugin (reader side).

- `app`: the plugin and its table of routes (`BatchImagesLoader` is the entry point);
- `requests`: request parameters, checked; `answers`: the JSON answers;
- `store`: the logged batches, read and cached through the data provider;
- `sample_stats`: the data map's routes; `image_keys`: opaque image keys;
- `static`: the gallery's files.

Only the contract (`tb_batch_images.contract`) and TensorBoard: never Keras, the
capture or the writer (`.importlinter` holds it to that).
"""

from tb_batch_images.plugin.app import BatchImagesLoader, BatchImagesPlugin
from tb_batch_images.plugin.static import frontend_dir

__all__ = ["BatchImagesLoader", "BatchImagesPlugin", "frontend_dir"]
