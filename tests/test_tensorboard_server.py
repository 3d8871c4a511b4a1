"""The real `tensorboard` command, on 127.0.0.1, in both load_fast modes.

TensorBoard finds the plugin through its entry point, enables the tab, and every route
answers with the real logger's data over HTTP; new runs appear after a reload, and bad
requests leave the server healthy.
"""

from __future__ import annotations

import shutil
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

import pytest

from tb_batch_images import plugin as plugin_module

from .conftest import KERAS_TRAIN_STEPS, PLUGIN_ROUTE

LOAD_FAST = pytest.mark.parametrize("load_fast", ["false", "true"])
STARTUP_TIMEOUT = 90.0


class TensorBoardProcess:
    """A `python -m tensorboard.main` subprocess and plain-HTTP helpers."""

    def __init__(self, logdir: Path, load_fast: str, *extra: str):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = logdir.parent / f"tensorboard-{self.port}.log"
        args = [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--load_fast",
            load_fast,
            "--reload_interval",
            "1",
            *extra,
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

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
        import json

        status, content_type, body, _ = self.get(PLUGIN_ROUTE + route, **params)
        assert (status, content_type) == (200, "application/json"), (
            route,
            params,
            body,
        )
        return json.loads(body)

    def wait_until(
        self, predicate: Callable[[], Any], timeout: float = STARTUP_TIMEOUT
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"tensorboard exited: {self.log.read_text(errors='replace')}"
                )
            try:
                value = predicate()
            except (OSError, AssertionError):
                value = None
            if value:
                return value
            time.sleep(0.25)
        pytest.fail(
            f"timed out; tensorboard log: {self.log.read_text(errors='replace')}"
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def tensorboard() -> Iterator[Callable[..., TensorBoardProcess]]:
    """`tensorboard(logdir, load_fast, *flags)`: started, and always stopped."""
    started: list[TensorBoardProcess] = []

    def start(logdir: Path, load_fast: str, *extra: str) -> TensorBoardProcess:
        board = TensorBoardProcess(logdir, load_fast, *extra)
        started.append(board)
        return board

    yield start
    for board in started:
        board.stop()


def _runs(board: TensorBoardProcess) -> dict[str, dict[str, Any]]:
    return {run["run"]: run for run in board.json("/runs")["runs"]}


@pytest.mark.slow
@LOAD_FAST
def test_tensorboard_serves_every_route_from_the_real_logger(
    load_fast: str,
    keras_logdir: Path,
    tmp_path: Path,
    write_steps: Any,
    tensorboard: Any,
):
    logdir = tmp_path / "logs"
    shutil.copytree(keras_logdir, logdir)
    board = tensorboard(logdir, load_fast)

    def tab_enabled() -> bool:
        status, _, body, _ = board.get("/data/plugins_listing")
        import json

        return status == 200 and json.loads(body)["batch_images"]["enabled"]

    board.wait_until(tab_enabled)
    # Every logged step is kept: more than TensorBoard's default of 10.
    runs = board.wait_until(
        lambda: (
            (r := _runs(board)).get("run_a/train", {}).get("steps_kept")
            == KERAS_TRAIN_STEPS
            and r
        )
    )
    assert runs["run_a/train"]["steps_logged"] == KERAS_TRAIN_STEPS
    assert runs["run_a/validation"]["mode"] == "validation"

    steps = board.json("/steps", run="run_a/train")
    assert steps["total"] == len(steps["steps"]) == KERAS_TRAIN_STEPS
    batch = board.json("/samples", run="run_a/train", step=KERAS_TRAIN_STEPS - 1)
    assert batch["samples"] and batch["samples"][0]["filename"].startswith("img_")

    status, content_type, body, headers = board.get(
        PLUGIN_ROUTE + "/image", key=batch["samples"][0]["image"]
    )
    assert (status, content_type) == (200, "image/png")
    assert body.startswith(b"\x89PNG") and "immutable" in headers["Cache-Control"]

    history = board.json("/history", filename=batch["samples"][0]["filename"])
    assert (
        "run_a/train",
        KERAS_TRAIN_STEPS - 1,
    ) in {(a["run"], a["step"]) for a in history["appearances"]}

    frontend = plugin_module.frontend_dir()
    status, content_type, body, _ = board.get(PLUGIN_ROUTE + "/index.js")
    assert (status, content_type) == (200, "text/javascript")
    assert body == (frontend / "index.js").read_bytes()
    for path in frontend.iterdir():
        types = {".js": "text/javascript", ".css": "text/css"}
        if path.suffix in types:
            status, content_type, body, _ = board.get(
                f"{PLUGIN_ROUTE}/static/{path.name}"
            )
            assert (status, content_type) == (200, types[path.suffix]), path.name
            assert body == path.read_bytes()

    # Bad requests: clean 4xx, server healthy.
    for route, params in [
        ("/steps", {}),
        ("/steps", {"run": "../../etc/passwd"}),
        ("/samples", {"run": "run_a/train", "step": "9" * 40}),
        ("/samples", {"run": "run_a/train\x00", "step": "1"}),
        ("/image", {"key": "/etc/passwd"}),
        ("/static/../../../setup.py", {}),
    ]:
        status, _, _, _ = board.get(PLUGIN_ROUTE + route, **params)
        assert 400 <= status < 500, (route, params)
    assert board.get(PLUGIN_ROUTE + "/runs")[0] == 200

    # New runs and steps written while TensorBoard runs appear after a reload.
    write_steps(logdir / "run_b" / "train", steps=12)
    runs = board.wait_until(
        lambda: (
            (r := _runs(board)).get("run_b/train", {}).get("steps_kept") == 12 and r
        ),
        timeout=30,
    )
    assert board.json("/steps", run="run_b/train")["total"] == 12


@pytest.mark.slow
@LOAD_FAST
def test_tensorboard_reports_steps_dropped_by_an_explicit_samples_per_plugin(
    load_fast: str, tmp_path: Path, write_steps: Any, tensorboard: Any
):
    logdir = tmp_path / "logs"
    write_steps(logdir / "long" / "train", steps=25)
    board = tensorboard(logdir, load_fast, "--samples_per_plugin", "batch_images=5")
    run = board.wait_until(lambda: _runs(board).get("long/train"))
    assert (run["steps_kept"], run["steps_logged"], run["last_step"]) == (5, 25, 24)
    assert len(board.json("/steps", run="long/train")["steps"]) == 5
