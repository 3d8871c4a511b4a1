"""Test configuration: the shared fixtures, by what they serve.

- `tests/fixtures/logdirs.py`: log directories written by the real logger
  (`keras_logdir`, `write_steps`) and `run_python`;
- `tests/fixtures/servers.py`: the plugin in TensorBoard's WSGI app over a real data
  provider (`plugin_server`) and the real `tensorboard` command (`tensorboard`);
- `tests/fixtures/browser.py`: headless Chromium (`chromium_browser`,
  `browser_context`) and the gallery page (`Gallery`);
- `tests/fixtures/gcs.py`: a `gs://` bucket of a local GCS emulator that TensorFlow's
  own client reaches (`gcs_bucket`).

The folders mirror the package: `contract/`, `capture/`, `host/`, `reader/` (the
readers and the plugin), `browser/` (the gallery in Chromium), and end-to-end tests
at the top. Suites that must hold on every Keras backend are marked `every_backend`:
`make test` runs them once more per backend (`pytest -m every_backend`).
"""

pytest_plugins = [
    "tests.fixtures.logdirs",
    "tests.fixtures.servers",
    "tests.fixtures.browser",
    "tests.fixtures.gcs",
]
