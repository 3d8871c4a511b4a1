"""The gallery over hand-made malformed steps: headless Chromium, a real `tensorboard`.

The log directory is `tests/fixtures/malformed.py`'s corpus, written with the real summary
writer. Every step of `malformed/train` must show either its pictures (with the
validator's warnings, when it repaired the record) or a clear error state naming the
step and what was wrong; the page must stay usable (other steps, other runs, sort and
filter), print nothing as markup, and raise no error, ever.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tb_batch_images import contract as fmt
from tb_batch_images.contract import schema as validate
from tests.fixtures import malformed
from tests.fixtures.browser import Gallery, view_fragment
from tests.fixtures.servers import TensorBoardProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MALFORMED_GROUP = malformed.MALFORMED_RUN.rsplit("/", 1)[0]
GOOD_GROUP = malformed.GOOD_RUN.rsplit("/", 1)[0]


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TensorBoardProcess]:
    logdir = tmp_path_factory.mktemp("malformed_gallery")
    malformed.write_corpus(logdir)
    server = TensorBoardProcess(logdir, "--samples_per_plugin", f"{fmt.PLUGIN_NAME}=0")
    expected = {
        malformed.MALFORMED_RUN: len(malformed.CASES),
        malformed.GOOD_RUN: malformed.GOOD_STEPS,
    }
    try:
        server.start().wait_until(lambda: server.steps_kept() == expected)
        yield server
    finally:
        server.stop()


@pytest.fixture
def view(browser_context: Any, board: TensorBoardProcess) -> Iterator[Gallery]:
    """The gallery on the malformed run's first step; no errors of any kind, at the end."""
    gallery = Gallery(browser_context.new_page())
    yield gallery.open(board.url(view_fragment(runs=MALFORMED_GROUP, step=0)))
    gallery.page.close()
    assert gallery.errors == [], f"script errors in the page: {gallery.errors}"
    assert gallery.console_errors == [], f"console errors: {gallery.console_errors}"
    assert gallery.dialogs == [], f"the page opened dialogs: {gallery.dialogs}"


def go_to_step(view: Gallery, step: int) -> None:
    view.control("step").fill(str(step))
    view.control("step").press("Enter")
    view.wait_ready(step)


def _expected_samples(case: malformed.Case) -> int:
    return len(validate.check_batch_record(case.element_0).record["samples"])


def _images_loaded(view: Gallery) -> list[bool]:
    """Whether each tile's picture has loaded (waits for every tile that has one)."""
    view.frame.wait_for_function(
        "() => [...document.querySelectorAll('.tile img[src]')].every(i => i.complete)"
    )
    return view.frame.eval_on_selector_all(
        ".tile img", "images => images.map(i => i.complete && i.naturalWidth > 0)"
    )


def test_each_malformed_step_shows_its_pictures_or_a_clear_error(view: Gallery):
    for step, case in enumerate(malformed.CASES):
        go_to_step(view, step)
        column = view.frame.locator(".column")
        broken = view.frame.locator(f".broken-step[data-step='{step}']")
        warnings = view.frame.locator(f".record-warnings[data-step='{step}'] li")
        if case.broken:
            assert broken.count() == 1, case.name
            text = broken.inner_text()
            assert f"Step {step} cannot be shown" in text, (case.name, text)
            assert malformed.MALFORMED_RUN in text and case.broken in text, text
            assert view.frame.locator(".tile").count() == 0
            continue
        assert broken.count() == 0, (case.name, column.inner_text())
        samples = _expected_samples(case)
        assert view.frame.locator(".tile").count() == samples, case.name
        loaded = _images_loaded(view)
        assert loaded == [True] * min(case.images, samples), case.name
        # A sample the step has no picture for says so on its tile (no <img>).
        lost = view.frame.locator(".tile .picture-lost")
        assert lost.count() == max(samples - case.images, 0), case.name
        shown = warnings.all_inner_texts()
        for path in case.warned:
            assert any(line.startswith(path) for line in shown), (case.name, shown)
        if not case.warned:
            assert shown == [], (case.name, shown)


def test_markup_in_a_record_is_shown_as_text(view: Gallery):
    step = next(
        i for i, c in enumerate(malformed.CASES) if c.name == "markup_in_strings"
    )
    go_to_step(view, step)
    assert view.frame.locator("img[src='x']").count() == 0
    warnings = view.frame.locator(".record-warnings li").all_inner_texts()
    assert any(line.startswith(malformed.MARKUP) for line in warnings), warnings
    tile = view.frame.locator(".tile").first
    assert tile.locator(".filename").get_attribute("title") == malformed.MARKUP
    assert tile.locator(".label").inner_text() == malformed.MARKUP
    assert tile.locator(".flag").inner_text() == malformed.MARKUP
    tile.click()  # the detail view too
    view.frame.wait_for_selector(".detail")
    assert view.frame.inner_text("[data-field=filename]") == malformed.MARKUP
    view.frame.press(".detail", "Escape")
    assert view.frame.locator("img[src='x']").count() == 0


def test_after_a_broken_step_other_steps_runs_sort_and_filter_still_work(
    view: Gallery,
):
    cases = malformed.CASES
    broken = next(i for i, c in enumerate(cases) if c.broken and cases[i + 1].usable)
    go_to_step(view, broken)
    assert view.frame.locator(".broken-step").count() == 1
    view.control("next").click()  # the next step
    view.wait_ready(broken + 1)
    assert view.frame.locator(".tile").count() == _expected_samples(cases[broken + 1])

    go_to_step(view, 0)  # a good step: sort by loss, then filter to the wrong ones
    record = validate.check_batch_record(cases[0].element_0).record
    view.control("sort").select_option("loss_desc")
    view.frame.wait_for_function(
        "() => decodeURIComponent(parent.location.hash).includes('sort=loss_desc')"
    )
    view.wait_ready(0)
    by_loss = sorted(record["samples"], key=lambda s: -s["loss"])
    positions = view.frame.eval_on_selector_all(
        ".tile", "tiles => tiles.map(t => Number(t.dataset.position))"
    )
    assert positions == [s["position"] for s in by_loss]
    view.control("wrong").check()
    wrong = sum(s["correct"] is False for s in record["samples"])
    view.frame.wait_for_function(
        "n => document.querySelectorAll('.tile').length === n", arg=wrong
    )
    view.control("wrong").uncheck()

    # The class-names step (an object, once a hang): its classes are plain numbers.
    names = next(i for i, c in enumerate(cases) if c.name == "class_names_object")
    go_to_step(view, names)
    assert view.frame.locator(".tile").count() == _expected_samples(cases[names])

    view.frame.click(f"label.run-chip[data-group='{GOOD_GROUP}']")  # compare runs
    view.frame.wait_for_selector(f".column[data-group='{GOOD_GROUP}'] .tile")
    view.frame.click(f"label.run-chip[data-group='{MALFORMED_GROUP}']")  # only good
    view.frame.wait_for_function(
        "() => document.querySelectorAll('.column').length === 1"
    )
    view.wait_ready()
    assert view.frame.locator(".tile").count() == malformed.SAMPLES
    assert all(_images_loaded(view))


def test_a_page_opened_on_a_once_hanging_step_shows_its_tiles_and_the_runs(
    browser_context: Any, board: TensorBoardProcess
):
    step = next(i for i, c in enumerate(malformed.CASES) if c.name == "flags_string")
    gallery = Gallery(browser_context.new_page())
    gallery.open(board.url(view_fragment(runs=MALFORMED_GROUP, step=step)))
    try:
        gallery.wait_ready(step)
        assert gallery.frame.locator(".tile").count() == malformed.SAMPLES
        assert gallery.frame.locator(".run-chip").count() == 2
    finally:
        gallery.page.close()
    assert gallery.errors == [] and gallery.console_errors == [], gallery.errors
