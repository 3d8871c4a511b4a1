"""Format version 3 over real TensorBoard: index entries listed, pictures read from packs.

Every test runs the plugin in TensorBoard's WSGI app over both real data providers
(`load_fast=false`: the Python loader; `true`: the Rust data server), on logs written
through the writer's own code path (`benchmarks/make_logdir.write_run`, `StepWriter`):
a pack file per step under `<run>/plugins/batch_images/<writer>/`, then its entry.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tb_batch_images import contract as fmt
from tb_batch_images import read_batches
from tb_batch_images.plugin import image_keys
from tests.fixtures.logdirs import StepWriter

LOAD_FAST = pytest.mark.parametrize(
    "load_fast", [False, True], ids=["load_fast=false", "load_fast=true"]
)
IMAGES = 4


def _write(run_dir: Path, steps: int, **kwargs: Any) -> str:
    """`steps` steps of IMAGES 8x8 pictures through the logger's writer; its id."""
    from benchmarks import make_logdir

    kwargs.setdefault("images_per_step", IMAGES)
    kwargs.setdefault("image_size", 8)
    kwargs.setdefault("dataset_size", 40)
    return make_logdir.write_run(run_dir, steps=steps, **kwargs)


def _pack(run_dir: Path, writer: str, step: int) -> list[bytes]:
    """A step's elements as its pack file holds them (read here, not by the plugin)."""
    return fmt.decode_pack((run_dir / fmt.pack_relpath(writer, step)).read_bytes())


def _images(server: Any, run: str, step: int) -> list[bytes | int]:
    """The bytes /image serves for each sample of a step (its status if not 200)."""
    batch = server.json("/samples", run=run, step=step)
    served = []
    for sample in batch["samples"]:
        response = server.get("/image", key=sample["image"])
        served.append(response.data if response.status_code == 200 else 404)
    return served


@LOAD_FAST
def test_steps_list_from_entries_and_pictures_come_from_the_pack_files(
    load_fast: bool, tmp_path: Path, plugin_server: Any
):
    run_dir = tmp_path / "exp" / "train"
    writer = _write(run_dir, 25, steps_per_epoch=10)
    # The event file holds entries only: no picture's bytes are in it.
    (events,) = run_dir.glob("events.out.tfevents.*")
    event_bytes = events.read_bytes()
    assert len(event_bytes) < 25 * 400
    for step in range(25):
        for picture in _pack(run_dir, writer, step)[1:]:
            assert picture not in event_bytes
    packs = sorted((run_dir / "plugins" / "batch_images" / writer).rglob("*.pack"))
    assert [p.relative_to(run_dir).as_posix() for p in packs[:1]] == [
        f"plugins/batch_images/{writer}/000000/000000000000.pack"
    ]
    assert len(packs) == 25

    server = plugin_server(tmp_path, load_fast)
    server.wait_for_steps({"exp/train": 25})
    (run,) = server.json("/runs")["runs"]
    assert (run["tag"], run["first_step"], run["last_step"]) == ("batch_images", 0, 24)
    assert run["steps_logged"] == 25 and run["warnings"] == []
    steps = server.json("/steps", run="exp/train")["steps"]
    assert [(s["step"], s["epoch"], s["batch"]) for s in steps] == [
        (step, step // 10, step % 10) for step in range(25)
    ]
    assert {(s["samples_logged"], s["error"]) for s in steps} == {(IMAGES, None)}
    for step in (0, 13, 24):
        batch = server.json("/samples", run="exp/train", step=step)
        elements = _pack(run_dir, writer, step)
        assert batch["error"] is None and batch["lost"] is None
        record = json.loads(elements[0])
        assert [s["sample_id"] for s in batch["samples"]] == [
            s["sample_id"] for s in record["samples"]
        ]
        assert batch["format_version"] == fmt.FORMAT_VERSION == 3
        assert _images(server, "exp/train", step) == elements[1:]
    # read_batches reads the same packs.
    batches = list(read_batches(str(tmp_path)))
    assert [b.step for b in batches] == list(range(25))
    assert all(b.error is None and len(b.samples) == IMAGES for b in batches)


@LOAD_FAST
def test_old_and_new_layouts_read_side_by_side(
    load_fast: bool, tmp_path: Path, plugin_server: Any
):
    """Version 2 runs, version 3 runs, and a run that holds both (upgraded mid-run)."""
    _write(tmp_path / "old" / "train", 6, format_version=2)
    new = _write(tmp_path / "new" / "train", 6)
    both = tmp_path / "both" / "train"
    _write(both, 4, format_version=2, write_status=False)
    upgraded = _write(both, 4, first_step=4, seed=1)
    server = plugin_server(tmp_path, load_fast)
    expected = {"old/train": 6, "new/train": 6, "both/train": 8}
    server.wait_for_steps(expected)
    for run, count in expected.items():
        steps = server.json("/steps", run=run)["steps"]
        assert [s["step"] for s in steps] == list(range(count)), run
        for step in (0, count - 1):
            batch = server.json("/samples", run=run, step=step)
            assert batch["error"] is None and len(batch["samples"]) == IMAGES
            assert all(isinstance(b, bytes) for b in _images(server, run, step))
    assert server.json("/samples", run="old/train", step=0)["format_version"] == 2
    assert _images(server, "new/train", 5) == _pack(tmp_path / "new/train", new, 5)[1:]
    assert _images(server, "both/train", 7) == _pack(both, upgraded, 7)[1:]
    old_step = server.json("/samples", run="both/train", step=3)
    assert old_step["format_version"] == 2
    # read_batches: the same steps, both layouts.
    batches = list(read_batches(str(tmp_path)))
    assert {run: [b.step for b in batches if b.run == run] for run in expected} == {
        run: list(range(count)) for run, count in expected.items()
    }
    assert all(b.error is None and b.samples[0].image is not None for b in batches)


def _damage(run_dir: Path, writer: str, outside: Path) -> None:
    """Step 1: pack missing; 2: truncated; 3: a symlink to a good copy outside the
    run; 4: extended by a byte. Steps 0 and 5 stay as written."""
    (run_dir / fmt.pack_relpath(writer, 1)).unlink()
    truncated = run_dir / fmt.pack_relpath(writer, 2)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    linked = run_dir / fmt.pack_relpath(writer, 3)
    outside.write_bytes(linked.read_bytes())  # the very same bytes, a good pack
    linked.unlink()
    linked.symlink_to(outside)
    extended = run_dir / fmt.pack_relpath(writer, 4)
    extended.write_bytes(extended.read_bytes() + b"\0")


@LOAD_FAST
def test_a_missing_truncated_or_escaping_pack_costs_its_tiles_only(
    load_fast: bool, tmp_path: Path, plugin_server: Any
):
    logdir = tmp_path / "logs"
    run_dir = logdir / "exp" / "train"
    writer = _write(run_dir, 6)
    server = plugin_server(logdir, load_fast)
    server.wait_for_steps({"exp/train": 6})
    keys = {
        step: [
            s["image"]
            for s in server.json("/samples", run="exp/train", step=step)["samples"]
        ]
        for step in range(6)
    }
    outside = tmp_path / "outside.pack"
    _damage(run_dir, writer, outside)
    # The symlink's target is a whole, good pack of that very entry: only the
    # containment check stands between it and the page (the negative control).
    entry = fmt.check_index_entry(
        fmt.encode_index_entry(
            writer=writer, step=3, pack=outside.read_bytes(), record={}
        ),
        3,
    )
    assert len(fmt.check_pack(outside.read_bytes(), entry)) == IMAGES + 1

    server = plugin_server(logdir, load_fast)  # nothing cached
    server.wait_for_steps({"exp/train": 6})
    steps = server.json("/steps", run="exp/train")["steps"]
    assert [(s["step"], s["error"]) for s in steps] == [(s, None) for s in range(6)]
    reasons = {1: "missing", 2: "truncated", 3: "refused", 4: "bytes"}
    for step in range(6):
        batch = server.json("/samples", run="exp/train", step=step)
        if step in reasons:
            assert reasons[step] in batch["lost"], (step, batch["lost"])
            assert batch["error"] is None and batch["epoch"] == 0
            assert [s["lost"] for s in batch["samples"]] == [True] * IMAGES
            assert {s["image"] for s in batch["samples"]} == {None}
            assert batch["warnings"] == [f"picture lost: {batch['lost']}"]
            for key in keys[step]:  # keys the page got before the damage
                response = server.get("/image", key=key)
                assert response.status_code == 404
                assert "picture lost" in response.get_json()["error"]
        else:
            assert batch["lost"] is None
            assert all(isinstance(b, bytes) for b in _images(server, "exp/train", step))
    assert server.json("/runs")["runs"][0]["steps_kept"] == 6
    # read_batches: those steps come back with their error, the others whole.
    batches = {b.step: b for b in read_batches(str(logdir))}
    for step in range(6):
        if step in reasons:
            assert reasons[step] in batches[step].error and not batches[step].samples
        else:
            assert batches[step].error is None and len(batches[step].samples) == IMAGES


@LOAD_FAST
def test_a_hostile_pack_or_entry_never_fails_the_page(
    load_fast: bool, tmp_path: Path, plugin_server: Any
):
    """Packs that are not packs (their entries' length and CRC matching them), a
    folder in a pack's place, entries whose writer id would make a path: each costs
    its own step, and every other step and route still answers."""
    from benchmarks import make_logdir

    run_dir = tmp_path / "exp" / "train"
    writer = StepWriter(run_dir)
    record = make_logdir.batch_record(
        mode="train", step=0, epoch=0, batch=0, sequence=0, sample_ids=[0], image_size=8
    )
    (png,) = make_logdir.png_pool(1, 8)
    good = [fmt.encode_record(record), png]
    header_claims_more = bytearray(fmt.encode_pack(good))
    header_claims_more[8:12] = (2**31).to_bytes(4, "little")
    offsets_backwards = bytearray(fmt.encode_pack(good))
    offsets_backwards[24:32] = (10**6).to_bytes(8, "little")
    hostile = {
        1: b"\x89PNG not a pack at all" * 10,
        3: bytes(header_claims_more),
        5: bytes(offsets_backwards),
    }
    for step in range(6):
        if step in hostile:  # bytes of our choosing, with an entry that matches them
            path = writer.pack_path(step)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(hostile[step])
            entry = fmt.encode_index_entry(
                writer=writer.writer_id, step=step, pack=hostile[step], record=record
            )
            writer.raw_entry(step, entry)
        elif step == 4:
            for name in ("../../../../../etc/passwd", "0123456789ABCDEF", ""):
                entry = {"format_version": 3, "writer": name, "step": 4}
                entry.update(pack_bytes=64, pack_crc32=0)
                writer.raw_entry(4, json.dumps(entry).encode())
        else:
            writer.step(step, good)
    writer.close()
    writer.pack_path(2).unlink()  # step 2: a folder where the pack should be
    writer.pack_path(2).mkdir()

    server = plugin_server(tmp_path, load_fast)
    server.wait_for_steps({"exp/train": 6})
    steps = server.json("/steps", run="exp/train")["steps"]
    assert [s["step"] for s in steps] == list(range(6))
    assert "writer id" in steps[4]["error"]  # never a path
    assert server.json("/samples", run="exp/train", step=0)["lost"] is None
    reasons = {1: "not a pack", 2: "not a regular file", 3: "over the limit"}
    reasons[5] = "out of order"
    for step, reason in reasons.items():
        batch = server.json("/samples", run="exp/train", step=step)
        assert reason in batch["lost"], (step, batch["lost"])
        assert batch["samples"][0]["image"] is None
    assert "writer id" in server.json("/samples", run="exp/train", step=4)["error"]
    assert server.json("/history", sample_id=0)["total"] == 1  # step 0 alone
    assert server.json("/runs")["runs"][0]["last_step"] == 5


@LOAD_FAST
def test_requests_naming_dotdot_or_another_run_are_refused(
    load_fast: bool, tmp_path: Path, plugin_server: Any
):
    _write(tmp_path / "a" / "train", 3)
    writer_b = _write(tmp_path / "b" / "train", 5, seed=1)
    server = plugin_server(tmp_path, load_fast)
    server.wait_for_steps({"a/train": 3, "b/train": 5})
    for run in ("../b/train", "a/train/../../b/train", "a/../b/train", "/etc", ".."):
        response = server.get("/samples", run=run, step=0)
        assert response.status_code == 404, run
        assert "unknown run" in response.get_json()["error"]
    b4 = server.json("/samples", run="b/train", step=4)["samples"][0]["image"]
    _, tag, step, wall_time, index = image_keys.parse_image_key(b4)
    for run in ("a/train", "a/train/../../b/train", "../b/train"):
        forged = image_keys.image_key(
            run, tag, type("Ref", (), {"step": step, "wall_time": wall_time}), index
        )
        response = server.get("/image", key=forged)
        assert response.status_code == 404, run
    # Run b's own key serves run b's bytes.
    assert (
        server.get("/image", key=b4).data
        == _pack(tmp_path / "b" / "train", writer_b, 4)[1]
    )


@LOAD_FAST
def test_a_run_restarted_over_its_own_steps_shows_each_step_once_with_its_own_pictures(
    load_fast: bool, tmp_path: Path, plugin_server: Any
):
    """Writer A logs steps 0-9; the run restarts from a checkpoint at step 5 (writer
    B, new id, other pictures) and logs 5-7. Both loaders show 0-4 of A and 5-7 of B
    (TensorBoard's rule: a restart drops the steps from its first step on)."""
    run_dir = tmp_path / "exp" / "train"
    a = _write(run_dir, 10, seed=0, write_status=False)
    b = _write(run_dir, 3, first_step=5, seed=1)
    assert a != b
    for step in (5, 6, 7):  # the two writers' pictures differ at the shared steps
        assert _pack(run_dir, a, step)[1:] != _pack(run_dir, b, step)[1:]
    server = plugin_server(tmp_path, load_fast)
    server.wait_for_steps({"exp/train": 8})
    steps = server.json("/steps", run="exp/train")["steps"]
    assert [s["step"] for s in steps] == list(range(8))
    for step in range(8):
        owner = a if step < 5 else b
        assert _images(server, "exp/train", step) == _pack(run_dir, owner, step)[1:]
    assert server.json("/runs")["runs"][0]["last_step"] == 7
    batches = list(read_batches(str(tmp_path)))
    assert [b.step for b in batches] == list(range(8))
    assert [b.record["sequence"] for b in batches] == [0, 1, 2, 3, 4, 0, 1, 2]


def test_a_logdir_spec_lists_steps_and_says_why_pictures_are_missing(
    tmp_path: Path, tensorboard: Any
):
    """--logdir_spec gives plugins no log directory: the steps list from their entries,
    and the run and each step say how to see the pictures (--logdir)."""
    _write(tmp_path / "exp" / "train", 3)
    spec = f"named:{tmp_path}"
    board = tensorboard(tmp_path, "--logdir_spec", spec, "--load_fast", "false")
    run = board.wait_until(lambda: board.runs().get("named/exp/train"))
    assert any("--logdir" in warning for warning in run["warnings"])
    steps = board.json("/steps", run="named/exp/train")["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    batch = board.json("/samples", run="named/exp/train", step=0)
    assert "--logdir" in batch["lost"] and len(batch["samples"]) == IMAGES


def test_the_pack_folder_is_what_to_copy(tmp_path: Path):
    """docs/format.md: copying only the event files loses the pictures (each step
    says so); copying the whole run folder keeps them."""
    source = tmp_path / "src"
    _write(source / "exp" / "train", 3)
    events_only = tmp_path / "events_only" / "exp" / "train"
    events_only.mkdir(parents=True)
    for path in (source / "exp" / "train").glob("events.out.tfevents.*"):
        shutil.copy(path, events_only)
    whole = tmp_path / "whole"
    shutil.copytree(source, whole, symlinks=True)
    assert all(b.error is None for b in read_batches(str(whole)))
    lost = list(read_batches(str(tmp_path / "events_only")))
    assert [b.step for b in lost] == [0, 1, 2]
    assert all("picture lost" in b.error and "missing" in b.error for b in lost)
    assert os.listdir(events_only) == [
        p.name for p in (source / "exp" / "train").glob("events.out.tfevents.*")
    ]
