"""A run with many steps: the gallery paints its newest page before the rest is listed.

Headless Chromium, a real `tensorboard`, a run of `STEPS` steps written through the
writer's own path (`write_steps`). The page's own requests to `/steps` are held by
Playwright (`page.route`): the newest page goes through, every other page waits until
the test lets it go. The tiles must be on the screen while an older page has been asked
for and not answered: proof by request order, not by a timing. Then, with every page
in, the step slider spans every step.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from tb_batch_images import contract as fmt
from tests.fixtures.browser import Gallery, view_fragment
from tests.fixtures.servers import TensorBoardProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STEPS = 700  # more than the frontend's first page (api.js FIRST_STEPS_PAGE = 200)
FIRST_PAGE = 200
IMAGES = 4
GROUP = "many"


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TensorBoardProcess]:
    from benchmarks import make_logdir

    logdir = tmp_path_factory.mktemp("many_steps")
    make_logdir.write_run(
        logdir / GROUP / "train",
        steps=STEPS,
        images_per_step=IMAGES,
        image_size=8,
        dataset_size=40,
    )
    server = TensorBoardProcess(logdir, "--samples_per_plugin", f"{fmt.PLUGIN_NAME}=0")
    try:
        server.start().wait_until(
            lambda: server.steps_kept() == {f"{GROUP}/train": STEPS}
        )
        yield server
    finally:
        server.stop()


def _query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlparse(url).query))


def test_the_newest_page_paints_before_the_older_steps_are_listed(
    browser_context: Any, board: TensorBoardProcess
):
    page = browser_context.new_page()
    asked: list[dict[str, str]] = []
    held: list[Any] = []

    def steps_request(route: Any, request: Any) -> None:
        query = _query(request.url)
        asked.append(query)
        if query.get("order") == "newest" and query.get("offset", "0") == "0":
            route.continue_()
        else:
            held.append(route)  # answered only when the test says so

    page.route(f"**/data/plugin/{fmt.PLUGIN_NAME}/steps?*", steps_request)
    gallery = Gallery(page)
    try:
        gallery.open(board.url(view_fragment(runs=GROUP)))  # waits for the tiles
        tiles = gallery.tiles()
        assert len(tiles) == IMAGES
        assert gallery.column_steps() == {GROUP: STEPS - 1}
        # The older steps had been asked for, and had not arrived, when the tiles
        # were painted: every page but the newest is still held here.
        assert asked[0]["order"] == "newest" and int(asked[0]["limit"]) == FIRST_PAGE
        assert len(held) >= 1, asked
        older = _query(held[0].request.url)
        assert older.get("order", "oldest") == "oldest" and older["offset"] == "0"
        assert int(older["limit"]) == STEPS - FIRST_PAGE
        label = gallery.frame.inner_text(".step-label")
        assert f"{FIRST_PAGE} steps" in label, label
        assert "Listing steps" in gallery.frame.inner_text("body")

        for route in held:
            route.continue_()
        gallery.frame.wait_for_function(
            f"() => document.querySelector('[data-control=scrubber]').max === '{STEPS - 1}'"
        )
        assert f"{STEPS} of {STEPS} steps" in gallery.frame.inner_text(".step-label")
        assert "Listing steps" not in gallery.frame.inner_text("body")
        # The slider reaches the oldest step, which was not in the first page.
        gallery.control("scrubber").fill("0")
        gallery.wait_ready(0)
        assert gallery.column_steps() == {GROUP: 0}
        assert len(gallery.tiles()) == IMAGES
    finally:
        page.close()
    assert gallery.errors == [], gallery.errors
    assert gallery.console_errors == [], gallery.console_errors
