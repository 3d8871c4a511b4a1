"""Shared fixtures: logs written by the real logger, and the plugin over real providers.

Sections:
- log directories: `keras_logdir` (a tiny Keras model trained with the real
  `BatchImageLogger`), `write_steps` (hand-written steps through the writer's own
  `write_summary` + `format.encode_record`, for retention and crash cases);
- `PluginServer`: the plugin inside TensorBoard's real WSGI app, over a real data
  provider (`load_fast=False`: the in-process loader; `True`: the Rust data server),
  queried with werkzeug's test client;
- `TensorBoardProcess` (fixture `tensorboard`): the real `tensorboard` command on
  127.0.0.1, queried over HTTP;
- `chromium_browser`: headless Chromium through Playwright.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tensorboard import program
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_ingester
from tensorboard.data import server_ingester
from tensorboard.plugins.core import core_plugin
from tensorboard.util import grpc_util
from werkzeug import test as werkzeug_test

from tb_batch_images import contract as fmt
from tb_batch_images.plugin import BatchImagesLoader

PLUGIN_ROUTE = f"/data/plugin/{fmt.PLUGIN_NAME}"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess]:
    """`run_python(args, cwd)`: runs `python ARGS` in a fresh process, the repository
    on PYTHONPATH, and returns the finished process (output captured as text)."""

    def run(args: list[str], cwd: Path | str, timeout: float = 600):
        return subprocess.run(
            [sys.executable, *args],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


# The tiny model of `keras_logdir`: 48 samples of 16x16x3, 3 classes, batches of 8.
KERAS_SAMPLES = 48
KERAS_BATCH = 8
KERAS_EPOCHS = 3
KERAS_TRAIN_STEPS = KERAS_EPOCHS * KERAS_SAMPLES // KERAS_BATCH  # 18: more than 10
KERAS_CLASSES = ["circle", "square", "triangle"]


def keras_filename(sample_id: int) -> str:
    return f"img_{sample_id:03d}.png"


# -- log directories ---------------------------------------------------------------
@pytest.fixture(scope="session")
def keras_logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`run_a/{train,validation}` logged by `BatchImageLogger` while a model trains.

    Every training step is logged (18 steps: more than TensorBoard's default of 10),
    4 samples each, with filenames; validation logs its first batch after each epoch.
    """
    import keras
    import tensorflow as tf

    from tb_batch_images import BatchImageLogger

    logdir = tmp_path_factory.mktemp("keras_logs")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.random((KERAS_SAMPLES, 16, 16, 3)).astype("float32")
    labels = np.arange(KERAS_SAMPLES) % len(KERAS_CLASSES)
    filenames = [keras_filename(i) for i in range(KERAS_SAMPLES)]

    def dataset(count: int) -> tf.data.Dataset:
        inputs = {"image": images[:count], "filename": filenames[:count]}
        return tf.data.Dataset.from_tensor_slices((inputs, labels[:count])).batch(
            KERAS_BATCH
        )

    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(len(KERAS_CLASSES), activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    logger = BatchImageLogger(
        str(logdir / "run_a"),
        every_n_steps=1,
        samples_per_batch=4,
        class_names=KERAS_CLASSES,
    )
    model.fit(
        dataset(KERAS_SAMPLES),
        validation_data=dataset(16),
        epochs=KERAS_EPOCHS,
        callbacks=[logger],
        verbose=0,
    )
    return logdir


@pytest.fixture
def write_steps() -> Callable[..., None]:
    """`write_steps(run_dir, steps=N, ...)`: N logged steps through the real writer path.

    Keyword arguments are those of `benchmarks/make_logdir.write_run` (8x8 images and
    4 samples per step unless given).
    """

    from benchmarks import make_logdir

    def write(run_dir: str | Path, **kwargs: Any) -> None:
        kwargs.setdefault("images_per_step", 4)
        kwargs.setdefault("image_size", 8)
        kwargs.setdefault("dataset_size", 40)
        make_logdir.write_run(run_dir, **kwargs)

    return write


# -- the plugin over a real data provider ------------------------------------------
class PluginServer:
    """TensorBoard's WSGI app (core plugin and this one) over a real data provider.

    Args:
        logdir: the log directory.
        load_fast: False for the in-process loader (reloaded by `reload()`), True for
            the Rust data server (it reloads every second by itself).
        samples_per_plugin: the `--samples_per_plugin` flag, "" for the default.
    """

    def __init__(
        self, logdir: str | Path, load_fast: bool, samples_per_plugin: str = ""
    ):
        self.logdir = str(logdir)
        self.load_fast = load_fast
        argv = ["tensorboard", "--logdir", self.logdir]
        if samples_per_plugin:
            argv += ["--samples_per_plugin", samples_per_plugin]
        loaders = [core_plugin.CorePluginLoader(), BatchImagesLoader()]
        board = program.TensorBoard(plugins=loaders)
        board.configure(
            argv=argv
        )  # defines the flags, runs BatchImagesLoader.fix_flags
        self.flags = board.flags
        self._stop: Callable[[], None] = lambda: None
        if load_fast:
            ingester = server_ingester.SubprocessServerDataIngester(
                server_binary=server_ingester.get_server_binary(),
                logdir=self.logdir,
                reload_interval=1,
                channel_creds_type=grpc_util.ChannelCredsType.LOCAL,
                samples_per_plugin=self.flags.samples_per_plugin,
            )
            ingester.start()
            self.provider = ingester.data_provider
            # The data server exits when its stdin closes (`--die-after-stdin`).
            stdin = getattr(ingester, "_stdin_handle", None)
            self._stop = stdin.close if stdin is not None else self._stop
        else:
            # TensorBoard's own loader setup (retention from the flags); reloaded here.
            ingester = data_ingester.LocalDataIngester(self.flags)
            self._multiplexer = ingester.deprecated_multiplexer
            self.provider = ingester.data_provider
            self.reload()
        app = application.TensorBoardWSGIApp(
            self.flags, loaders, data_provider=self.provider
        )
        self.client = werkzeug_test.Client(app)

    def reload(self) -> None:
        """What TensorBoard's reload does (the Rust server reloads by itself)."""
        if not self.load_fast:
            self._multiplexer.AddRunsFromDirectory(self.logdir)
            self._multiplexer.Reload()

    def get(self, route: str, **params: Any) -> Any:
        """GET a plugin route, e.g. `get("/steps", run="a/train")`."""
        return self.client.get(PLUGIN_ROUTE + route, query_string=params)

    def json(self, route: str, **params: Any) -> Any:
        response = self.get(route, **params)
        assert response.status_code == 200, (route, params, response.get_data(True))
        assert response.mimetype == "application/json"
        return response.get_json()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
        """Reloads until predicate() is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            self.reload()
            value = predicate()
            if value or time.monotonic() > deadline:
                assert value, f"timed out after {timeout}s waiting for {predicate}"
                return value
            time.sleep(0.2)

    def wait_for_steps(self, expected: dict[str, int], timeout: float = 20.0) -> None:
        """Waits until each run of `expected` lists that many kept steps."""

        def loaded() -> bool:
            runs = {r["run"]: r["steps_kept"] for r in self.json("/runs")["runs"]}
            return all(runs.get(run) == count for run, count in expected.items())

        self.wait_for(loaded, timeout)

    def close(self) -> None:
        self._stop()


@pytest.fixture
def plugin_server() -> Iterator[Callable[..., PluginServer]]:
    """`plugin_server(logdir, load_fast, samples_per_plugin="")`, closed at teardown."""
    servers: list[PluginServer] = []

    def start(
        logdir: str | Path, load_fast: bool, samples_per_plugin: str = ""
    ) -> PluginServer:
        server = PluginServer(logdir, load_fast, samples_per_plugin)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


# -- a real `tensorboard` process --------------------------------------------------
class TensorBoardProcess:
    """`python -m tensorboard.main --logdir LOGDIR *flags` on 127.0.0.1, a free port.

    `start()` launches it (output in `tensorboard-PORT.log` beside the log directory),
    `wait_until()` polls for readiness within a bound, `stop()` terminates it (kills it
    if it does not exit). The `tensorboard` fixture stops every one it started.
    """

    STARTUP_TIMEOUT = 90.0

    def __init__(self, logdir: Path, *flags: str):
        self.logdir = Path(logdir)
        self.flags = flags
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> TensorBoardProcess:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = self.logdir.parent / f"tensorboard-{self.port}.log"
        command = [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(self.logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--reload_interval",
            "1",
            *self.flags,
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)

    def url(self, fragment: str = "") -> str:
        return f"{self.base}/{fragment}"

    def get(self, route: str, **params: Any) -> tuple[int, str, bytes, Any]:
        """(status, content type, body, headers) of a GET, 4xx and 5xx included."""
        url = self.base + route
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return (
                    response.status,
                    response.headers.get_content_type(),
                    response.read(),
                    response.headers,
                )
        except urllib.error.HTTPError as error:
            return (
                error.code,
                error.headers.get_content_type(),
                error.read(),
                error.headers,
            )

    def json(self, route: str, **params: Any) -> Any:
        """The JSON answer of a plugin route, e.g. `json("/steps", run="a/train")`."""
        status, content_type, body, _ = self.get(PLUGIN_ROUTE + route, **params)
        assert (status, content_type) == (200, "application/json"), (
            route,
            params,
            body,
        )
        return json.loads(body)

    def runs(self) -> dict[str, dict[str, Any]]:
        """{run: Run} as the plugin lists them."""
        return {run["run"]: run for run in self.json("/runs")["runs"]}

    def steps_kept(self) -> dict[str, int]:
        """{run: steps kept} as the plugin lists them."""
        return {run: info["steps_kept"] for run, info in self.runs().items()}

    def wait_until(
        self, predicate: Callable[[], Any], timeout: float = STARTUP_TIMEOUT
    ) -> Any:
        """predicate()'s first truthy value; fails if tensorboard exits or time runs out.

        OSError and AssertionError (not answering yet) count as not ready.
        """
        assert self.process is not None, "start() it first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"tensorboard exited:\n{self.log.read_text(errors='replace')}"
                )
            try:
                value = predicate()
            except (OSError, AssertionError):
                value = None
            if value:
                return value
            time.sleep(0.25)
        pytest.fail(
            f"timed out; tensorboard log:\n{self.log.read_text(errors='replace')}"
        )


@pytest.fixture
def tensorboard() -> Iterator[Callable[..., TensorBoardProcess]]:
    """`tensorboard(logdir, *flags)`: a started `TensorBoardProcess`, always stopped."""
    with contextlib.ExitStack() as started:

        def start(logdir: Path, *flags: str) -> TensorBoardProcess:
            board = TensorBoardProcess(logdir, *flags)
            started.callback(board.stop)  # runs even if another stop fails
            return board.start()

        yield start


# -- browser: headless Chromium through Playwright (tests/test_gallery_browser.py) --
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _skip_or_fail(reason: str) -> None:
    """Browser tests skip where no Chromium is found, and fail in CI (CI=true)."""
    import os

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_browser() -> Iterator[Any]:
    """A headless Chromium (Debian's `chromium`, or $CHROMIUM) driven by Playwright."""
    import os
    import shutil

    executable = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not executable:
        _skip_or_fail(
            "no Chromium: install Debian's `chromium` or set CHROMIUM=/path/to/chromium "
            "(`bash tests/find_chromium.sh` finds or installs one)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


# The gallery in the browser (tests/test_gallery_browser.py, tests/test_gallery_malformed.py).
SCREENSHOTS = ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1400, "height": 900}
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser_context(chromium_browser: Any) -> Iterator[Any]:
    context = chromium_browser.new_context(viewport=VIEWPORT, timezone_id="UTC")
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()


class Gallery:
    """One TensorBoard page, and the Batch Images iframe in it.

    `errors` collects uncaught exceptions of the page, `console_errors` what it logged
    as errors, `dialogs` the dialogs it opened (dismissed).
    """

    def __init__(self, page: Any):
        self.page = page
        self.frame: Any = None
        self.errors: list[str] = []
        self.console_errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._on_console)
        page.on("dialog", self._on_dialog)

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, url: str, *, click_tab: bool = False) -> Gallery:
        self.page.goto(url)
        if click_tab:
            self.page.click(f"[data-plugin-id={fmt.PLUGIN_NAME}]")
        handle = self.page.wait_for_selector(
            f"iframe[src*='plugin_entry.html?name={fmt.PLUGIN_NAME}']"
        )
        self.frame = handle.content_frame()
        self.wait_ready()
        return self

    def wait_ready(self, step: int | None = None) -> None:
        selector = "main[data-status=ready]"
        if step is not None:
            selector += f"[data-step='{step}']"
        self.frame.wait_for_selector(selector, state="attached")

    def control(self, name: str) -> Any:
        return self.frame.locator(f"[data-control={name}]")

    def tiles(self, group: str | None = None) -> list[dict[str, Any]]:
        scope = f".column[data-group='{group}'] " if group else ""
        return self.frame.eval_on_selector_all(
            scope + ".tile",
            """tiles => tiles.map(tile => ({
                position: Number(tile.dataset.position),
                index: Number(tile.dataset.index),
                filename: tile.querySelector('.filename').title,
                filename_text: tile.querySelector('.filename').textContent,
                label: tile.querySelector('.label').textContent,
                prediction: tile.querySelector('.prediction').textContent,
                confidence: tile.querySelector('.confidence')?.textContent ?? null,
                loss: tile.querySelector('.loss').textContent,
                verdict: tile.querySelector('.verdict')?.dataset.verdict ?? null,
                verdict_text: tile.querySelector('.verdict')?.textContent ?? null,
                flags: [...tile.querySelectorAll('.flag')].map(flag => flag.textContent),
            }))""",
        )

    def facts(self, group: str | None = None) -> dict[str, str]:
        scope = f".column[data-group='{group}'] " if group else ""
        return self.frame.eval_on_selector_all(
            scope + ".batch-header .fact",
            """facts => Object.fromEntries(facts.map(fact =>
                [fact.dataset.field, fact.querySelector('.fact-value').textContent]))""",
        )

    def column_steps(self) -> dict[str, int]:
        return self.frame.eval_on_selector_all(
            ".column",
            "columns => Object.fromEntries(columns.map(c => [c.dataset.group, Number(c.dataset.step)]))",
        )

    def injected_markup(self) -> int:
        """Elements that markup in the data would have made: the image of
        `<img src=x onerror=...>` or any onerror attribute, in the iframe and the page.

        Wait a moment first: an injected handler fires after the image fails to load.
        """
        return sum(
            frame.evaluate(
                """() => [...document.querySelectorAll('img')].filter(i =>
                       i.getAttribute('src') === 'x' || i.hasAttribute('onerror')).length
                     + document.querySelectorAll('[onerror]').length"""
            )
            for frame in (self.frame, self.page.main_frame)
        )

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.wait_for_timeout(250)  # let the last images decode
        self.page.screenshot(path=str(SCREENSHOTS / name))


def view_fragment(**state: str) -> str:
    """A TensorBoard URL fragment opening the Batch Images tab with gallery state."""
    parts = [fmt.PLUGIN_NAME]
    parts += [
        f"p.{fmt.PLUGIN_NAME}.{key}={urllib.parse.quote(str(value), safe='')}"
        for key, value in state.items()
    ]
    return "#" + "&".join(parts)
