"""The logger: the Keras callback and what it keeps while it works.

- `callback`: `BatchImageLogger`, which follows Keras's lifecycle;
- `options`: its arguments, checked once, and each piece's view of them;
- `session`: the logger at work on one model (`CaptureSession`): adapter, data map,
  writer, schedule and warnings;
- `data_map`: when the per-sample statistics are on, their messages and writes.
"""
