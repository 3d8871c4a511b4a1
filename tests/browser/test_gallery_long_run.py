"""A 10,000-step run of 16 pictures a step, in headless Chromium against a real `tensorboard`.

Format version 3: TensorBoard lists the steps from their index entries; the pictures
come from the pack files. The run is written through the logger's own writer path
(`benchmarks/make_logdir.write_run`: a pack file, then its entry, per step), 8 px
pictures so that 160,000 of them take seconds to write. Both loaders: the gallery paints
the latest step, a step chosen with the slider shows all 16 of its pictures (each
picture's bytes checked against that step's pack), and a step whose pack file is gone
shows "picture lost" on its 16 tiles while the page goes on.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tb_batch_images import contract as fmt
from tests.fixtures.browser import Gallery, view_fragment
from tests.fixtures.servers import TensorBoardProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STEPS = 10_000
IMAGES = 16
GROUP = "long"
RUN = f"{GROUP}/train"
CHOSEN = 4321  # a step the slider picks
LOST = 777  # a step whose pack file is deleted


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from benchmarks import make_logdir

    logdir = tmp_path_factory.mktemp("long_run")
    writer = make_logdir.write_run(
        logdir / RUN,
        steps=STEPS,
        images_per_step=IMAGES,
        image_size=8,
        dataset_size=400,
    )
    (logdir / RUN / fmt.pack_relpath(writer, LOST)).unlink()
    return logdir, writer


@pytest.fixture(
    scope="module", params=["false", "true"], ids=["load_fast=false", "load_fast=true"]
)
def board(
    request: pytest.FixtureRequest, logdir: tuple[Path, str]
) -> Iterator[TensorBoardProcess]:
    server = TensorBoardProcess(logdir[0], "--load_fast", request.param)
    try:
        server.start().wait_until(lambda: server.steps_kept() == {RUN: STEPS})
        yield server
    finally:
        server.stop()


def _pictures(gallery: Gallery) -> list[dict[str, Any]]:
    """Each tile's picture: its image key and whether it decoded, or "lost"."""
    return gallery.frame.eval_on_selector_all(
        ".tile .thumb",
        """thumbs => thumbs.map(thumb => {
            const img = thumb.querySelector('img');
            if (!img) return {lost: !!thumb.querySelector('.picture-lost')};
            const key = new URL(img.src).searchParams.get('key');
            return {key, loaded: img.complete && img.naturalWidth > 0};
        })""",
    )


def _step_of(key: str) -> int:
    payload = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
    return json.loads(payload)[2]


def test_a_long_run_paints_its_latest_step_and_the_slider_shows_a_chosen_steps_pictures(
    browser_context: Any, board: TensorBoardProcess, logdir: tuple[Path, str]
):
    run_dir = logdir[0] / RUN
    page = browser_context.new_page()
    gallery = Gallery(page)
    try:
        gallery.open(board.url(view_fragment(runs=GROUP)))
        assert gallery.column_steps() == {GROUP: STEPS - 1}
        assert len(gallery.tiles()) == IMAGES
        gallery.frame.wait_for_function(
            f"() => document.querySelector('[data-control=scrubber]').max === '{STEPS - 1}'"
        )
        gallery.control("scrubber").fill(str(CHOSEN))
        gallery.wait_ready(CHOSEN)
        assert gallery.column_steps() == {GROUP: CHOSEN}
        gallery.frame.wait_for_function(
            """() => [...document.querySelectorAll('.tile .thumb img')]
                     .every(img => img.complete && img.naturalWidth > 0)"""
        )
        pictures = _pictures(gallery)
        assert len(pictures) == IMAGES
        assert all(p.get("loaded") for p in pictures), pictures
        assert {_step_of(p["key"]) for p in pictures} == {CHOSEN}
        # Each tile shows its own picture: the bytes /image serves for its key are the
        # pack's, in the order of the step's samples.
        elements = fmt.decode_pack(
            (run_dir / fmt.pack_relpath(logdir[1], CHOSEN)).read_bytes()
        )
        for index, picture in enumerate(pictures):
            status, _, body, _ = board.get(
                f"/data/plugin/{fmt.PLUGIN_NAME}/image", key=picture["key"]
            )
            assert (status, body) == (200, elements[1 + index])

        # A step whose pack file is gone: its 16 tiles say so, the page goes on.
        gallery.control("scrubber").fill(str(LOST))
        gallery.wait_ready(LOST)
        assert _pictures(gallery) == [{"lost": True}] * IMAGES
        notice = gallery.frame.inner_text(f".record-warnings[data-step='{LOST}']")
        assert "pack file" in notice and "missing" in notice
        gallery.control("scrubber").fill(str(LOST + 1))
        gallery.wait_ready(LOST + 1)
        assert len(gallery.tiles()) == IMAGES and not any(
            p.get("lost") for p in _pictures(gallery)
        )
    finally:
        page.close()
    assert gallery.errors == [], gallery.errors
