"""The plugin's routes, in TensorBoard's real WSGI app over both real data providers.

Logs come from the real `BatchImageLogger` (`keras_logdir`), or, for retention and
crash cases, from the writer's own code path (`write_steps`, `StepWriter`). Every test runs with
`load_fast=false` (the in-process loader) and `load_fast=true` (the Rust data server).
"""

from __future__ import annotations

import base64
import importlib.metadata
import io
import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tensorboard import program
from tensorboard.backend import application
from tensorboard.plugins import base_plugin
from tensorboard.plugins.core import core_plugin
from werkzeug import test as werkzeug_test

from tb_batch_images import contract as fmt
from tb_batch_images.plugin import BatchImagesLoader, BatchImagesPlugin
from tb_batch_images.plugin import static as plugin_module
from tests.fixtures.logdirs import (
    KERAS_BATCH,
    KERAS_CLASSES,
    KERAS_SAMPLES,
    KERAS_TRAIN_STEPS,
    keras_filename,
)
from tests.fixtures.paths import PLUGIN_ROUTE
from tests.fixtures.servers import PluginServer

LOAD_FAST = pytest.mark.parametrize(
    "load_fast", [False, True], ids=["load_fast=false", "load_fast=true"]
)
TRAIN, VALIDATION = "run_a/train", "run_a/validation"
STEPS_PER_EPOCH = KERAS_SAMPLES // KERAS_BATCH


@pytest.fixture(
    scope="module", params=[False, True], ids=["load_fast=false", "load_fast=true"]
)
def server(request: pytest.FixtureRequest, keras_logdir: Path) -> Any:
    """The plugin over the real logger's logs, in one load_fast mode."""
    plugin_server = PluginServer(keras_logdir, load_fast=request.param)
    plugin_server.wait_for_steps({TRAIN: KERAS_TRAIN_STEPS})
    plugin_server.wait_for(lambda: _run(plugin_server, VALIDATION))
    yield plugin_server
    plugin_server.close()


def _run(server: PluginServer, name: str) -> dict[str, Any] | None:
    return next((r for r in server.json("/runs")["runs"] if r["run"] == name), None)


def _all_samples(server: PluginServer) -> list[tuple[str, int, dict[str, Any]]]:
    """(run, step, sample) for every sample of every step, through /steps and /samples."""
    found = []
    for run in server.json("/runs")["runs"]:
        for step in server.json("/steps", run=run["run"])["steps"]:
            batch = server.json("/samples", run=run["run"], step=step["step"])
            found += [(run["run"], step["step"], sample) for sample in batch["samples"]]
    return found


# -- loading ---------------------------------------------------------------------
def test_entry_point_loads_the_plugin_with_its_tab_and_es_module(server: PluginServer):
    (entry_point,) = [
        ep
        for ep in importlib.metadata.entry_points(group="tensorboard_plugins")
        if ep.name == fmt.PLUGIN_NAME
    ]
    loader = entry_point.load()()
    assert isinstance(loader, BatchImagesLoader)
    context = base_plugin.TBContext(data_provider=server.provider, flags=server.flags)
    plugin = loader.load(context)
    assert isinstance(plugin, BatchImagesPlugin)
    assert plugin.plugin_name == "batch_images"
    metadata = plugin.frontend_metadata()
    assert (metadata.es_module_path, metadata.tab_name) == ("/index.js", "Batch Images")


def test_plugins_listing_enables_the_tab(server: PluginServer):
    listing = server.client.get("/data/plugins_listing").get_json()
    assert listing["batch_images"]["enabled"] is True
    assert listing["batch_images"]["tab_name"] == "Batch Images"


def _flags(*args: str) -> Any:
    board = program.TensorBoard(
        plugins=[core_plugin.CorePluginLoader(), BatchImagesLoader()]
    )
    board.configure(argv=["tensorboard", "--logdir", "/nonexistent", *args])
    return board.flags


def test_fix_flags_keeps_every_step_unless_the_user_says_otherwise():
    assert _flags().samples_per_plugin == {"batch_images": 0}
    assert _flags("--samples_per_plugin", "images=3").samples_per_plugin == {
        "batch_images": 0,
        "images": 3,
    }
    assert _flags("--samples_per_plugin", "batch_images=5").samples_per_plugin == {
        "batch_images": 5
    }


# -- runs, steps, samples, images ------------------------------------------------------
def test_runs_give_mode_step_counts_and_range(server: PluginServer):
    train, validation = _run(server, TRAIN), _run(server, VALIDATION)
    assert train["mode"] == "train" and validation["mode"] == "validation"
    assert train["tag"] == fmt.BATCHES_TAG
    assert train["steps_kept"] == train["steps_logged"] == KERAS_TRAIN_STEPS
    assert (train["first_step"], train["last_step"]) == (0, KERAS_TRAIN_STEPS - 1)
    assert validation["steps_kept"] == validation["steps_logged"] >= 1
    assert set(train["dropped"]) >= {"queue_full", "error", "not_image"}
    assert isinstance(train["warnings"], list)


def test_steps_list_every_logged_step_with_epoch_batch_and_counts(server: PluginServer):
    answer = server.json("/steps", run=TRAIN)
    assert (answer["run"], answer["total"], answer["offset"]) == (
        TRAIN,
        KERAS_TRAIN_STEPS,
        0,
    )
    steps = answer["steps"]
    assert [s["step"] for s in steps] == list(range(KERAS_TRAIN_STEPS))
    for summary in steps:
        assert summary["epoch"] == summary["step"] // STEPS_PER_EPOCH
        assert summary["batch"] == summary["step"] % STEPS_PER_EPOCH
        assert (summary["samples_logged"], summary["batch_size"]) == (4, KERAS_BATCH)
        assert isinstance(summary["wall_time"], float) and summary["error"] is None
    wall_times = [s["wall_time"] for s in steps]
    assert wall_times == sorted(wall_times)


def test_steps_paginate(server: PluginServer):
    page = server.json("/steps", run=TRAIN, offset=5, limit=4)
    assert [s["step"] for s in page["steps"]] == [5, 6, 7, 8]
    assert (page["total"], page["offset"], page["limit"]) == (KERAS_TRAIN_STEPS, 5, 4)
    assert server.json("/steps", run=TRAIN, offset=10**6)["steps"] == []


def test_steps_page_from_the_newest_and_as_step_numbers_only(server: PluginServer):
    last = KERAS_TRAIN_STEPS - 1
    newest = server.json("/steps", run=TRAIN, order="newest", limit=4)
    assert [s["step"] for s in newest["steps"]] == [last - 3, last - 2, last - 1, last]
    assert (newest["total"], newest["first"], newest["order"]) == (
        KERAS_TRAIN_STEPS,
        KERAS_TRAIN_STEPS - 4,
        "newest",
    )
    before = server.json("/steps", run=TRAIN, order="newest", offset=4, limit=4)
    assert [s["step"] for s in before["steps"]] == list(range(last - 7, last - 3))
    numbers = server.json(
        "/steps", run=TRAIN, order="newest", offset=16, limit=4, fields="step"
    )
    assert numbers["steps"] == [0, 1] and numbers["first"] == 0
    every = server.json("/steps", run=TRAIN, fields="step", limit=10000)
    assert every["steps"] == list(range(KERAS_TRAIN_STEPS))
    past = server.json("/steps", run=TRAIN, order="newest", offset=10**6)
    assert past["steps"] == [] and past["first"] == 0
    # Old clients (no order, no fields) get the answer they always got.
    old = server.json("/steps", run=TRAIN)
    assert (old["offset"], old["limit"], old["first"], old["order"]) == (
        0,
        1000,
        0,
        "oldest",
    )
    assert [s["step"] for s in old["steps"]] == list(range(KERAS_TRAIN_STEPS))


def test_samples_carry_every_field_of_the_record_and_an_image_key(server: PluginServer):
    batch = server.json("/samples", run=TRAIN, step=7)
    assert (batch["run"], batch["step"], batch["epoch"], batch["batch"]) == (
        TRAIN,
        7,
        1,
        1,
    )
    assert batch["class_names"] == KERAS_CLASSES and batch["mode"] == "train"
    assert batch["format_version"] == fmt.FORMAT_VERSION
    assert len(batch["samples"]) == batch["samples_logged"] == 4
    for sample in batch["samples"]:
        sample_id = int(sample["filename"][4:7])
        assert sample["filename"] == keras_filename(sample_id)
        assert sample["label"] == sample_id % len(KERAS_CLASSES)
        assert sample["label_name"] == KERAS_CLASSES[sample["label"]]
        assert sample["prediction_name"] in KERAS_CLASSES
        assert isinstance(sample["loss"], float)
        assert isinstance(sample["image"], str)


def test_each_image_key_serves_that_samples_png(server: PluginServer):
    for sample in server.json("/samples", run=TRAIN, step=3)["samples"]:
        response = server.get("/image", key=sample["image"])
        assert response.status_code == 200
        assert response.mimetype == "image/png"
        image = Image.open(io.BytesIO(response.get_data()))
        assert [image.height, image.width, len(image.getbands())] == sample[
            "image_shape"
        ]


def test_images_are_cached_as_immutable(server: PluginServer):
    key = server.json(
        "/samples", run=VALIDATION, step=_run(server, VALIDATION)["last_step"]
    )["samples"][0]["image"]
    response = server.get("/image", key=key)
    cache_control = response.headers["Cache-Control"]
    assert "immutable" in cache_control and "max-age=31536000" in cache_control
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert server.get("/runs").headers["Cache-Control"].startswith("no-cache")


def test_history_finds_every_appearance_of_a_filename(server: PluginServer):
    everything = _all_samples(server)
    filename = keras_filename(3)
    expected = [
        (run, step, s) for run, step, s in everything if s["filename"] == filename
    ]
    assert len({run for run, _, _ in expected}) == 2  # seen in training and validation
    answer = server.json("/history", filename=filename)
    found = answer["appearances"]
    assert answer["total"] == len(found) == len(expected)
    for appearance, (run, step, sample) in zip(found, expected, strict=True):
        assert (appearance["run"], appearance["step"]) == (run, step)
        for field in (
            "position",
            "label",
            "label_name",
            "prediction",
            "loss",
            "correct",
            "flags",
            "image_shape",
            "batch",
        ):
            assert appearance[field] == sample[field]
        assert appearance["image"] == sample["image"]
        batch = server.json("/samples", run=run, step=step)
        assert batch["samples"][appearance["index"]]["image"] == sample["image"]
        assert appearance["mode"] == run.rsplit("/", 1)[1]


def test_history_can_be_limited_to_some_runs(server: PluginServer):
    found = server.json("/history", filename=keras_filename(3), runs=TRAIN)[
        "appearances"
    ]
    assert found and {a["run"] for a in found} == {TRAIN}
    assert server.json("/history", filename="img_999.png")["appearances"] == []


# -- retention -------------------------------------------------------------------
@LOAD_FAST
def test_every_step_is_kept_by_default_and_an_explicit_limit_is_reported(
    load_fast: bool, tmp_path: Path, write_steps: Any, plugin_server: Any
):
    write_steps(tmp_path / "long" / "train", steps=25)
    default = plugin_server(tmp_path, load_fast)
    default.wait_for_steps({"long/train": 25})
    assert default.json("/steps", run="long/train")["total"] == 25
    assert _run(default, "long/train")["steps_logged"] == 25

    limited = plugin_server(tmp_path, load_fast, samples_per_plugin="batch_images=5")
    limited.wait_for_steps({"long/train": 5})
    run = _run(limited, "long/train")
    assert (run["steps_kept"], run["steps_logged"], run["last_step"]) == (5, 25, 24)
    assert len(limited.json("/steps", run="long/train")["steps"]) == 5


@LOAD_FAST
def test_history_by_sample_id_across_runs(
    load_fast: bool, tmp_path: Path, write_steps: Any, plugin_server: Any
):
    write_steps(tmp_path / "one" / "train", steps=12, seed=1)
    write_steps(tmp_path / "two" / "train", steps=12, seed=2)
    server = plugin_server(tmp_path, load_fast)
    server.wait_for_steps({"one/train": 12, "two/train": 12})
    everything = _all_samples(server)
    sample_id = everything[0][2]["sample_id"]
    expected = [
        (run, step) for run, step, s in everything if s["sample_id"] == sample_id
    ]
    found = server.json("/history", sample_id=sample_id)["appearances"]
    assert [(a["run"], a["step"]) for a in found] == expected
    assert all(a["filename"] == f"img_{sample_id:05d}.png" for a in found)


def _write_records(run_dir: Path, records: list[tuple[int, bytes]]) -> None:
    """Values of (step, element 0) with one 8x8 PNG each, through the real writer."""
    from benchmarks import make_logdir
    from tests.fixtures.logdirs import StepWriter

    (png,) = make_logdir.png_pool(1, 8)
    writer = StepWriter(run_dir)
    for step, element_0 in records:
        writer.step(step, [element_0, png])
    writer.close()


@LOAD_FAST
def test_filenames_in_the_data_are_shown_never_opened(
    load_fast: bool, tmp_path: Path, plugin_server: Any
):
    from benchmarks import make_logdir

    hostile = ["../../../../etc/passwd", "/etc/shadow", "C:\\boot.ini", "a\x00b.png"]
    records = []
    for step, filename in enumerate(hostile):
        record = make_logdir.batch_record(
            mode="train",
            step=step,
            epoch=0,
            batch=step,
            sequence=step,
            sample_ids=[step],
            image_size=8,
        )
        record["samples"][0]["filename"] = filename
        records.append((step, fmt.encode_record(record)))
    _write_records(tmp_path / "hostile" / "train", records)
    server = plugin_server(tmp_path, load_fast)
    server.wait_for_steps({"hostile/train": len(hostile)})
    for step, filename in enumerate(hostile):
        (sample,) = server.json("/samples", run="hostile/train", step=step)["samples"]
        assert sample["filename"] == filename
        image = server.get("/image", key=sample["image"])
        assert image.get_data().startswith(b"\x89PNG")  # the logged image, not a file
        (found,) = server.json("/history", filename=filename)["appearances"]
        assert (found["step"], found["filename"]) == (step, filename)


@LOAD_FAST
def test_unreadable_records_are_reported_not_fatal(
    load_fast: bool, tmp_path: Path, plugin_server: Any
):
    """Format version 3: a record that cannot be used is a broken step at /samples
    (steps list from their index entries); an entry of a newer format says to upgrade
    in /steps, /samples and the run's warnings."""
    from benchmarks import make_logdir
    from tests.fixtures.logdirs import StepWriter

    good = make_logdir.batch_record(
        mode="train", step=0, epoch=0, batch=0, sequence=0, sample_ids=[0], image_size=8
    )
    (png,) = make_logdir.png_pool(1, 8)
    writer = StepWriter(tmp_path / "mixed" / "train")
    writer.step(0, [fmt.encode_record(good), png])
    writer.step(1, [b"\xff\xfe not json", png])
    newer = {
        "format_version": fmt.FORMAT_VERSION + 1,
        "writer": writer.writer_id,
        "step": 2,
        "pack_bytes": 100,
        "pack_crc32": 0,
    }
    writer.raw_entry(2, json.dumps(newer).encode())
    writer.close()
    server = plugin_server(tmp_path, load_fast)
    server.wait_for_steps({"mixed/train": 3})
    steps = server.json("/steps", run="mixed/train")["steps"]
    assert [s["error"] is None for s in steps] == [True, True, False]
    assert "upgrade" in steps[2]["error"]
    assert server.json("/samples", run="mixed/train", step=0)["samples"]
    broken = server.json("/samples", run="mixed/train", step=1)
    assert broken["error"] and broken["samples"] == []
    assert "upgrade" in server.json("/samples", run="mixed/train", step=2)["error"]
    (warning,) = _run(server, "mixed/train")["warnings"]
    assert "newer" in warning


@LOAD_FAST
def test_unreadable_records_of_old_logs_are_reported_not_fatal(
    load_fast: bool, tmp_path: Path, plugin_server: Any
):
    """Format version 2 (blob sequences): each record is read for /steps."""
    from benchmarks import make_logdir
    from tests.fixtures.logdirs import StepWriter

    good = make_logdir.batch_record(
        mode="train", step=0, epoch=0, batch=0, sequence=0, sample_ids=[0], image_size=8
    )
    newer = json.dumps({**good, "step": 1, "format_version": fmt.FORMAT_VERSION + 1})
    (png,) = make_logdir.png_pool(1, 8)
    writer = StepWriter(tmp_path / "mixed" / "train", format_version=2)
    records = [
        (0, json.dumps({**good, "format_version": 2}).encode()),
        (1, b"\xff\xfe not json"),
        (2, newer.encode()),
    ]
    for step, element_0 in records:
        writer.step(step, [element_0, png])
    writer.close()
    server = plugin_server(tmp_path, load_fast)
    server.wait_for_steps({"mixed/train": 3})
    steps = server.json("/steps", run="mixed/train")["steps"]
    assert [s["error"] is None for s in steps] == [True, False, False]
    assert "upgrade" in steps[2]["error"]
    assert server.json("/samples", run="mixed/train", step=0)["samples"]
    broken = server.json("/samples", run="mixed/train", step=1)
    assert broken["error"] and broken["samples"] == []
    (warning,) = _run(server, "mixed/train")["warnings"]
    assert "newer" in warning


@LOAD_FAST
def test_mask_indices_are_served_as_image_keys_and_a_missing_one_is_null(
    load_fast: bool, tmp_path: Path, plugin_server: Any
):
    """docs/api.md: `label_mask_image` / `prediction_mask_image` from the record's
    blob indices (masks after the pictures); null when absent or past the blobs."""
    from benchmarks import make_logdir
    from tb_batch_images.host import pixels
    from tests.fixtures.logdirs import StepWriter

    record = make_logdir.batch_record(
        mode="train",
        step=0,
        epoch=0,
        batch=0,
        sequence=0,
        sample_ids=[0, 1, 2],
        image_size=8,
    )
    record.update(masks="classes", mask_shape=[8, 8])
    masks = [np.full((8, 8), value, np.uint8) for value in (10, 11, 12, 13)]
    # Pictures are images 0..2, masks 3..6; sample 1's prediction is past the blobs,
    # sample 2 has no masks, a bool is not an index.
    first, second, third = record["samples"]
    first.update(label_mask=3, prediction_mask=4)
    second.update(label_mask=5, prediction_mask=99)
    third["label_mask"] = True
    pictures = make_logdir.png_pool(3, 8)
    elements = [fmt.encode_record(record), *pictures]
    elements += [pixels.encode_png(mask) for mask in masks]
    writer = StepWriter(tmp_path / "seg" / "train")
    writer.step(0, elements)
    writer.close()

    server = plugin_server(tmp_path, load_fast)
    server.wait_for_steps({"seg/train": 1})
    batch = server.json("/samples", run="seg/train", step=0)
    assert (batch["masks"], batch["mask_shape"]) == ("classes", [8, 8])
    first, second, third = batch["samples"]
    assert (first["label_mask"], first["prediction_mask"]) == (3, 4)

    def grey(key: str) -> int:
        response = server.get("/image", key=key)
        assert response.status_code == 200 and response.mimetype == "image/png"
        image = np.asarray(Image.open(io.BytesIO(response.get_data())))
        assert image.shape == (8, 8)
        return int(image[0, 0])

    assert grey(first["label_mask_image"]) == 10
    assert grey(first["prediction_mask_image"]) == 11
    assert grey(second["label_mask_image"]) == 12
    assert second["prediction_mask_image"] is None  # index 99: no such blob
    assert third["label_mask_image"] is None and third["prediction_mask_image"] is None
    assert "label_mask" not in third  # the bool was dropped by the validator


def test_concurrent_requests_all_succeed(server: PluginServer):
    from concurrent import futures

    def fetch(step: int) -> int:
        batch = server.json("/samples", run=TRAIN, step=step % KERAS_TRAIN_STEPS)
        server.json("/steps", run=TRAIN, limit=5, offset=step % 10)
        return server.get("/image", key=batch["samples"][0]["image"]).status_code

    with futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(fetch, range(64))) == {200}


# -- a growing log directory, a crash ---------------------------------------------------
@LOAD_FAST
def test_new_runs_and_steps_appear_after_a_reload(
    load_fast: bool, tmp_path: Path, write_steps: Any, plugin_server: Any
):
    write_steps(tmp_path / "first" / "train", steps=3)
    server = plugin_server(tmp_path, load_fast)
    server.wait_for_steps({"first/train": 3})
    assert len(server.json("/steps", run="first/train")["steps"]) == 3
    write_steps(tmp_path / "first" / "train", steps=4, first_step=3, seed=7)
    write_steps(tmp_path / "second" / "train", steps=2)
    server.wait_for_steps({"first/train": 7, "second/train": 2})
    assert len(server.json("/steps", run="first/train")["steps"]) == 7
    assert server.json("/samples", run="second/train", step=1)["step"] == 1


def _record_offsets(data: bytes) -> list[int]:
    """Start offsets of the TFRecords of an event file (length, crc, data, crc)."""
    offsets, position = [], 0
    while position < len(data):
        offsets.append(position)
        (length,) = struct.unpack("<Q", data[position : position + 8])
        position += 8 + 4 + length + 4
    return offsets


def _event_file(run_dir: Path) -> Path:
    (path,) = run_dir.glob("events.out.tfevents.*")
    return path


@LOAD_FAST
def test_an_event_file_cut_mid_record_serves_its_complete_steps(
    load_fast: bool, tmp_path: Path, write_steps: Any, plugin_server: Any
):
    run_dir = tmp_path / "crashed" / "train"
    write_steps(run_dir, steps=6, write_status=False)
    path = _event_file(run_dir)
    data = path.read_bytes()
    last = _record_offsets(data)[-1]
    path.write_bytes(data[: last + (len(data) - last) // 2])  # killed mid-write

    server = plugin_server(tmp_path, load_fast)
    server.wait_for_steps({"crashed/train": 5})
    steps = server.json("/steps", run="crashed/train")["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2, 3, 4]
    for sample in server.json("/samples", run="crashed/train", step=4)["samples"]:
        assert server.get("/image", key=sample["image"]).status_code == 200
    assert server.get("/samples", run="crashed/train", step=5).status_code == 404


@LOAD_FAST
def test_an_event_file_being_written_serves_complete_steps_then_the_rest(
    load_fast: bool, tmp_path: Path, write_steps: Any, plugin_server: Any
):
    write_steps(tmp_path / "scratch", steps=5, write_status=False)
    complete = _event_file(tmp_path / "scratch").read_bytes()
    shutil.rmtree(tmp_path / "scratch")
    last = _record_offsets(complete)[-1]
    middle = last + (len(complete) - last) // 2
    run_dir = tmp_path / "live" / "train"
    run_dir.mkdir(parents=True)
    path = run_dir / "events.out.tfevents.1.live"
    path.write_bytes(complete[:middle])  # the writer is in the middle of step 4

    server = plugin_server(tmp_path, load_fast)
    server.wait_for_steps({"live/train": 4})
    assert server.json("/samples", run="live/train", step=3)["step"] == 3
    with path.open("ab") as stream:
        stream.write(complete[middle:])  # the writer finishes the record
    server.wait_for_steps({"live/train": 5})
    assert server.json("/samples", run="live/train", step=4)["step"] == 4


# -- bad requests ------------------------------------------------------------------
def _key(*fields: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")


BAD_REQUESTS = [
    # (route, params, status, what the message names)
    ("/steps", {}, 400, "run"),
    ("/steps", {"run": "nope"}, 404, "nope"),
    ("/steps", {"run": "../../../etc"}, 404, "etc"),
    ("/steps", {"run": "/etc/passwd"}, 404, "passwd"),
    ("/steps", {"run": TRAIN + "\x00"}, 404, "run"),
    ("/steps", {"run": TRAIN, "tag": "nope"}, 404, "nope"),
    ("/steps", {"run": TRAIN, "tag": fmt.STATUS_TAG}, 404, fmt.STATUS_TAG),
    ("/steps", {"run": TRAIN, "offset": "-1"}, 400, "offset"),
    ("/steps", {"run": TRAIN, "offset": "x"}, 400, "offset"),
    ("/steps", {"run": TRAIN, "limit": "0"}, 400, "limit"),
    ("/steps", {"run": TRAIN, "limit": "10001"}, 400, "limit"),
    ("/steps", {"run": TRAIN, "order": "random"}, 400, "order"),
    ("/steps", {"run": TRAIN, "fields": "all"}, 400, "fields"),
    ("/steps", {"run": TRAIN, "limit": "9" * 40}, 400, "limit"),
    ("/samples", {"run": TRAIN}, 400, "step"),
    ("/samples", {"step": "1"}, 400, "run"),
    ("/samples", {"run": TRAIN, "step": ""}, 400, "step"),
    ("/samples", {"run": TRAIN, "step": "abc"}, 400, "step"),
    ("/samples", {"run": TRAIN, "step": "1.5"}, 400, "step"),
    ("/samples", {"run": TRAIN, "step": "1e3"}, 400, "step"),
    ("/samples", {"run": TRAIN, "step": "1\x00"}, 400, "step"),
    ("/samples", {"run": TRAIN, "step": "9" * 30}, 400, "step"),
    ("/samples", {"run": TRAIN, "step": str(2**63)}, 400, "step"),
    ("/samples", {"run": TRAIN, "step": "999999"}, 404, "999999"),
    ("/samples", {"run": TRAIN, "step": "-1"}, 404, "-1"),
    ("/samples", {"run": "nope", "step": "1"}, 404, "nope"),
    ("/samples", {"run": "../run_a/train", "step": "1"}, 404, "run"),
    ("/image", {}, 400, "key"),
    ("/image", {"key": "garbage!"}, 400, "key"),
    ("/image", {"key": "../../etc/passwd"}, 400, "key"),
    ("/image", {"key": "/etc/passwd"}, 400, "key"),
    ("/image", {"key": "\x00"}, 400, "key"),
    ("/image", {"key": "A" * 100000}, 400, "key"),
    ("/image", {"key": _key("a", "b")}, 400, "key"),
    ("/image", {"key": _key(TRAIN, fmt.BATCHES_TAG, "1", 0.0, 0)}, 400, "key"),
    ("/image", {"key": _key("nope", fmt.BATCHES_TAG, 1, 0.0, 0)}, 404, "nope"),
    ("/image", {"key": _key("/etc/passwd", fmt.BATCHES_TAG, 1, 0.0, 0)}, 404, "run"),
    ("/image", {"key": _key(TRAIN, fmt.BATCHES_TAG, 10**6, 0.0, 0)}, 404, "step"),
    ("/image", {"key": _key(TRAIN, fmt.BATCHES_TAG, 1, 0.0, 0)}, 404, "image"),
    ("/history", {}, 400, "filename"),
    ("/history", {"filename": "a.png", "sample_id": "1"}, 400, "sample_id"),
    ("/history", {"sample_id": "x"}, 400, "sample_id"),
    ("/history", {"sample_id": "9" * 30}, 400, "sample_id"),
    ("/history", {"filename": "a.png", "runs": "nope"}, 404, "nope"),
    ("/history", {"filename": "a.png", "limit": "0"}, 400, "limit"),
    ("/index.js/../../setup.py", {}, 404, None),
    ("/static/../../setup.py", {}, 404, None),
    ("/static/%2e%2e/%2e%2e/setup.py", {}, 404, None),
    ("/static//etc/passwd", {}, 404, None),
    ("/static/", {}, 404, None),
    ("/static/nope.js", {}, 404, "nope.js"),
    ("/static/index.js%00", {}, 404, None),
    ("/static/%00", {}, 404, None),
    ("/steps", {"run": TRAIN, "tag": "batch_images\x00"}, 404, "tag"),
]


def test_bad_requests_get_a_clean_json_4xx_naming_the_problem(server: PluginServer):
    for route, params, status, named in BAD_REQUESTS:
        response = server.get(route, **params)
        assert response.status_code == status, (route, params, response.get_data(True))
        if route.startswith(("/steps", "/samples", "/image", "/history")):
            assert response.mimetype == "application/json", (route, params)
            message = response.get_json()["error"]
            assert named is None or named in message, (route, params, message)
        assert server.get("/runs").status_code == 200  # still healthy


def test_an_image_index_past_the_samples_is_unknown(server: PluginServer):
    key = server.json("/samples", run=TRAIN, step=2)["samples"][0]["image"]
    run, tag, step, wall_time, _ = json.loads(base64.urlsafe_b64decode(key + "=="))
    for index in (4, 10**6, -1):
        response = server.get("/image", key=_key(run, tag, step, wall_time, index))
        assert response.status_code == 404, index


class _RecordingProvider:
    """A data provider that records the run names it is asked about."""

    def __init__(self, provider: Any):
        self._provider = provider
        self.runs: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._provider, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            rtf = kwargs.get("run_tag_filter")
            if rtf is not None and rtf.runs is not None:
                self.runs.update(rtf.runs)
            return method(*args, **kwargs)

        return call


def test_only_run_names_the_provider_listed_reach_it(server: PluginServer):
    recording = _RecordingProvider(server.provider)
    app = application.TensorBoardWSGIApp(
        server.flags, [BatchImagesLoader()], data_provider=recording
    )
    client = werkzeug_test.Client(app)
    for route, params, _, _ in BAD_REQUESTS:
        client.get(PLUGIN_ROUTE + route, query_string=params)
    assert (
        client.get(PLUGIN_ROUTE + "/steps", query_string={"run": TRAIN}).status_code
        == 200
    )
    assert recording.runs <= {TRAIN, VALIDATION}


# -- frontend files -----------------------------------------------------------------
def test_frontend_files_are_served_by_name_with_their_type(
    server: PluginServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "index.js").write_text("export function render() {}\n")
    (tmp_path / "api.js").write_text("export const api = 1;\n")
    (tmp_path / "style.css").write_text("body {}\n")
    (tmp_path / "notes.txt").write_text("not served\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.js").write_text("not served\n")
    monkeypatch.setattr(plugin_module, "frontend_dir", lambda: tmp_path)
    app = application.TensorBoardWSGIApp(
        server.flags, [BatchImagesLoader()], data_provider=server.provider
    )
    client = werkzeug_test.Client(app)
    expected = {
        "/index.js": ("text/javascript", "render"),
        "/static/index.js": ("text/javascript", "render"),
        "/static/api.js": ("text/javascript", "api"),
        "/static/style.css": ("text/css", "body"),
    }
    for route, (mimetype, text) in expected.items():
        response = client.get(PLUGIN_ROUTE + route)
        assert response.status_code == 200, route
        assert (response.mimetype, text in response.get_data(True)) == (mimetype, True)
    for route in (
        "/static/notes.txt",
        "/static/sub/deep.js",
        "/static/sub",
        "/sub/deep.js",
    ):
        assert client.get(PLUGIN_ROUTE + route).status_code == 404, route


def test_the_packaged_frontend_is_served(server: PluginServer):
    folder = plugin_module.frontend_dir()
    assert folder.is_dir()
    for path in folder.iterdir():
        if path.suffix in (".js", ".css"):
            response = server.get("/static/" + path.name)
            assert response.status_code == 200, path.name
            assert response.get_data() == path.read_bytes()
            assert (
                response.mimetype
                == {".js": "text/javascript", ".css": "text/css"}[path.suffix]
            )
