"""The real `tensorboard` command, on 127.0.0.1, in both load_fast modes.

TensorBoard finds the plugin through its entry point, enables the tab, and every route
answers with the real logger's data over HTTP; new runs appear after a reload, and bad
requests leave the server healthy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tb_batch_images import plugin as plugin_module
from tests.fixtures.logdirs import KERAS_TRAIN_STEPS
from tests.fixtures.paths import PLUGIN_ROUTE

LOAD_FAST = pytest.mark.parametrize("load_fast", ["false", "true"])


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
    board = tensorboard(logdir, "--load_fast", load_fast)

    def tab_enabled() -> bool:
        status, _, body, _ = board.get("/data/plugins_listing")
        return status == 200 and json.loads(body)["batch_images"]["enabled"]

    board.wait_until(tab_enabled)
    # Every logged step is kept: more than TensorBoard's default of 10.
    runs = board.wait_until(
        lambda: (
            (r := board.runs()).get("run_a/train", {}).get("steps_kept")
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
            (r := board.runs()).get("run_b/train", {}).get("steps_kept") == 12 and r
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
    board = tensorboard(
        logdir, "--load_fast", load_fast, "--samples_per_plugin", "batch_images=5"
    )
    run = board.wait_until(lambda: board.runs().get("long/train"))
    assert (run["steps_kept"], run["steps_logged"], run["last_step"]) == (5, 25, 24)
    assert len(board.json("/steps", run="long/train")["steps"]) == 5
