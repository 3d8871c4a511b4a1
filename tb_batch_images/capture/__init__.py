"""What runs inside the compiled training step, and what decides it when it is built.

- model and input inspection: `specs` (where the picture is in `x`, how it is
  stored), `metadata_keys` (`sample_id`, `filename`), `image_source` (pictures from
  preprocessing layers), `heads` (several outputs), `losses` (the compiled loss, read
  once);
- in the step (`keras.ops`, every backend): `selector` (which samples, what of them),
  `step_pixels`, `dense_maps`, and the data map's device metrics `sample_stats` and
  `watchlist`;
- `backends`: one adapter per Keras backend (how the step is wrapped, how the arrays
  leave it);
- `schedule` (which steps), `options`, and `batch` (`CapturedBatch`, what leaves the
  step, as numpy);
- `keras_internals`: the one door to Keras's private internals.
"""
