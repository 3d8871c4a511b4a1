"""The gallery in a real browser: headless Chromium, a real `tensorboard`, real logs.

A tiny Keras model trains with the real `BatchImageLogger` (module fixture `logs`);
a real `tensorboard` process serves the log directory on 127.0.0.1 (`board`); Playwright
drives Debian's Chromium (`chromium_browser` in conftest) into TensorBoard's "Batch
Images" tab, and the tests read the plugin iframe's DOM. What the page shows is checked
against the records read straight from the log files (`logged_batches`: the event
files and the pack files they name), never
against the plugin's own answers.

Runs of `logs`:
- `baseline`: every training step logged (24 steps), 16 samples each, no shuffle, so
  sample 5, whose filename is markup, is at position 5 of the first batch of each epoch;
- `augmented`: every second step logged (steps differ from `baseline`), shuffled and
  randomly flipped; two validation batches per validation run, merged in one record;
- `wide`: batches of 64 samples, all logged (the paint-time check);
- `growing`: trained again by the last test, to check TensorBoard's reload.

Screenshots of the gallery, detail view, comparison, history strip and dark mode are
written to `docs/screenshots/` for the README.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tb_batch_images import contract as fmt
from tests.fixtures.browser import SCREENSHOTS, Gallery, view_fragment
from tests.fixtures.servers import TensorBoardProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CLASSES = ["circle", "square", "triangle"]
MARKUP_FILENAME = "<img src=x onerror=alert(1)>.png"
MARKUP_SAMPLE = 5
MISLABELLED_EVERY = 10
CONSTANT_SAMPLE = 11  # a blank (constant) image: flagged `constant` by the logger
SAMPLES = 96
BATCH = 16
EPOCHS = 4
BASELINE_STEPS = EPOCHS * SAMPLES // BATCH  # 24
AUGMENTED_EVERY = 2
WIDE_BATCH = 64
RETENTION = 4  # steps kept by the second TensorBoard of the retention test


# -- logs written by the real logger ---------------------------------------------------
def _shapes(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 32x32 circles, squares and triangles (labels 0..2 in turn), tinted by class.

    The same data set for every run (the first `count` of one fixed sequence), so a
    filename names the same picture in every run.
    """
    rng = np.random.default_rng(0)
    size = 32
    rows, cols = np.mgrid[0:size, 0:size]
    labels = np.arange(count) % len(CLASSES)
    images = np.empty((count, size, size, 3), "float32")
    for index, label in enumerate(labels):
        image = np.ones((size, size, 3)) * rng.uniform(0.0, 0.35, 3)
        cx, cy = rng.integers(11, size - 11, 2)
        r = rng.integers(6, 10)
        if label == 0:
            mask = (cols - cx) ** 2 + (rows - cy) ** 2 <= r * r
        elif label == 1:
            mask = (abs(cols - cx) <= r) & (abs(rows - cy) <= r)
        else:
            mask = (abs(rows - cy) <= r) & (abs(cols - cx) <= (rows - cy + r) / 2)
        colour = rng.uniform(0.35, 0.6, 3)
        colour[label] = rng.uniform(0.8, 1.0)
        image[mask] = colour
        images[index] = np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1)
    images[CONSTANT_SAMPLE] = 0.5
    # Every tenth sample is mislabelled (the label of the next class), as real data
    # sets are: sorting by loss finds them.
    noisy = labels.copy()
    noisy[MISLABELLED_EVERY - 1 :: MISLABELLED_EVERY] += 1
    return images, noisy % len(CLASSES)


def _filenames(count: int) -> list[str]:
    """Named for the shape drawn (`_shapes` draws class i % 3 at index i)."""
    shapes = [CLASSES[i % len(CLASSES)] for i in range(count)]
    names = [f"shapes/{shape}_{i:03d}.png" for i, shape in enumerate(shapes)]
    names[MARKUP_SAMPLE] = MARKUP_FILENAME
    return names


def _train(
    run_dir: Path,
    *,
    every_n_steps: int,
    shuffle_seed: int | None = None,
    augment: bool = False,
    count: int = SAMPLES,
    batch: int = BATCH,
    samples_per_batch: int = BATCH,
    epochs: int = EPOCHS,
    validation: bool = True,
    validation_batches: int = 1,
    seed: int = 0,
) -> Callable[[], None]:
    """Trains a small CNN with `BatchImageLogger`; returns `more()`, one more epoch."""
    import keras
    import tensorflow as tf

    from tb_batch_images import BatchImageLogger

    keras.utils.set_random_seed(seed)
    images, labels = _shapes(count)
    names = _filenames(count)
    data = tf.data.Dataset.from_tensor_slices(
        ({"image": images, "filename": names}, labels)
    )
    if shuffle_seed is not None:
        data = data.shuffle(count, seed=shuffle_seed)
    if augment:  # the logger shows the images as the model saw them: flipped

        def flip(x: dict[str, Any], y: Any) -> tuple[dict[str, Any], Any]:
            image = tf.image.random_flip_left_right(x["image"], seed=seed)
            image = tf.image.random_flip_up_down(image, seed=seed + 1)
            return {"image": image, "filename": x["filename"]}, y

        data = data.map(flip)
    data = data.batch(batch)
    validation_data = None
    if validation:
        validation_data = tf.data.Dataset.from_tensor_slices(
            ({"image": images[:32], "filename": names[:32]}, labels[:32])
        ).batch(batch)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(len(CLASSES), activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")

    def fit(epochs: int) -> None:
        logger = BatchImageLogger(
            str(run_dir),
            every_n_steps=every_n_steps,
            samples_per_batch=samples_per_batch,
            class_names=CLASSES,
            validation_batches=validation_batches,
        )
        model.fit(
            data,
            validation_data=validation_data,
            epochs=epochs,
            callbacks=[logger],
            verbose=0,
        )

    fit(epochs)
    return lambda: fit(1)


@dataclasses.dataclass
class Logs:
    root: Path
    grow: Callable[[], None]  # one more epoch of `growing`, logged


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Logs:
    root = tmp_path_factory.mktemp("gallery_logs")
    _train(root / "baseline", every_n_steps=1)
    _train(
        root / "augmented",
        every_n_steps=AUGMENTED_EVERY,
        shuffle_seed=1,
        augment=True,
        validation_batches=2,  # one merged record of two batches per validation
        seed=1,
    )
    _train(
        root / "wide",
        every_n_steps=1,
        shuffle_seed=2,
        count=2 * WIDE_BATCH,
        batch=WIDE_BATCH,
        samples_per_batch=WIDE_BATCH,
        epochs=1,
        validation=False,
        seed=2,
    )
    grow = _train(
        root / "growing", every_n_steps=1, samples_per_batch=8, epochs=1, seed=3
    )
    return Logs(root, grow)


def logged_batches(run_dir: Path) -> dict[int, dict[str, Any]]:
    """{step: record} of a run directory, read from its files: format version 3's
    index entries in the event files and the pack file each names (element 0, the
    record), or a version 2 value."""
    import tensorflow as tf

    records = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == fmt.BATCHES_TAG:
                    records[event.step] = fmt.decode_record(value.tensor.string_val[0])
                elif value.tag.startswith(fmt.INDEX_TAG_PREFIX):
                    entry = json.loads(value.tensor.string_val[0])
                    pack = run_dir / fmt.pack_relpath(entry["writer"], event.step)
                    record = fmt.decode_pack(pack.read_bytes())[0]
                    records[event.step] = fmt.decode_record(record)
    return dict(sorted(records.items()))


def nearest(steps: list[int], target: int) -> int:
    """The logged step nearest to target; ties go to the earlier (as the gallery does)."""
    return min(steps, key=lambda step: (abs(step - target), step))


def _expected_runs(root: Path) -> dict[str, int]:
    return {
        f"{run_dir.parent.name}/{run_dir.name}": len(logged_batches(run_dir))
        for run_dir in sorted(root.glob("*/*"))
        if run_dir.is_dir() and logged_batches(run_dir)
    }


@pytest.fixture(scope="module")
def board(logs: Logs) -> Iterator[TensorBoardProcess]:
    """TensorBoard over `logs`, keeping every step."""
    server = TensorBoardProcess(
        logs.root, "--samples_per_plugin", f"{fmt.PLUGIN_NAME}=0"
    )
    try:
        expected = _expected_runs(logs.root)
        server.start().wait_until(lambda: server.steps_kept() == expected)
        yield server
    finally:
        server.stop()


# -- the browser ----------------------------------------------------------------------------
@pytest.fixture
def gallery(
    browser_context: Any, board: TensorBoardProcess
) -> Iterator[Callable[..., Gallery]]:
    """`gallery(fragment)`: a new page on TensorBoard; no page errors, no dialogs."""
    opened: list[Gallery] = []

    def open_gallery(fragment: str = "", *, click_tab: bool = False) -> Gallery:
        view = Gallery(browser_context.new_page())
        opened.append(view)
        return view.open(board.url(fragment), click_tab=click_tab)

    yield open_gallery
    for view in opened:
        view.page.close()
        assert view.errors == [], f"script errors in the page: {view.errors}"
        assert view.dialogs == [], f"the page opened dialogs: {view.dialogs}"


def assert_captions_match(tiles: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """Every tile's caption shows its logged sample's metadata."""
    samples = record["samples"]
    assert sorted(tile["index"] for tile in tiles) == list(range(len(samples)))
    for tile in tiles:
        sample = samples[tile["index"]]
        assert tile["position"] == sample["position"]
        assert tile["filename"] == sample["filename"]
        assert sample["filename"].endswith(tile["filename_text"].split("…")[-1])
        assert tile["label"] == sample["label_name"]
        assert tile["prediction"] == sample["prediction_name"]
        assert float(tile["confidence"].rstrip("%")) == pytest.approx(
            sample["confidence"] * 100, abs=0.051
        )
        assert float(tile["loss"]) == pytest.approx(sample["loss"], rel=5e-3)
        assert tile["verdict"] == ("right" if sample["correct"] else "wrong")
        assert tile["verdict_text"] == ("✓right" if sample["correct"] else "✗wrong")
        assert tile["flags"] == sample["flags"]


def _positions(tiles: list[dict[str, Any]]) -> list[int]:
    return [tile["position"] for tile in tiles]


# -- tests ----------------------------------------------------------------------------------
def test_captions_of_a_chosen_step_match_the_logged_metadata(
    gallery: Callable[..., Gallery], logs: Logs
) -> None:
    records = logged_batches(logs.root / "baseline" / "train")
    assert len(records) == BASELINE_STEPS
    step = list(records)[9]
    view = gallery(click_tab=True)  # open TensorBoard, switch to the tab
    view.frame.click("label.run-chip[data-group='baseline']")
    view.frame.click("label.run-chip[data-group='augmented']")
    view.control("step").fill(str(step))
    view.control("step").press("Enter")
    view.wait_ready(step)
    assert view.column_steps() == {"baseline": step}

    record = records[step]
    assert_captions_match(view.tiles(), record)
    wall = datetime.datetime.fromtimestamp(record["wall_time"], datetime.UTC)
    assert view.facts() == {
        "step": str(step),
        "epoch": str(record["epoch"]),
        "batch": str(record["batch"]),
        "wall_time": wall.strftime("%Y-%m-%d %H:%M:%S"),
        "samples": f"{record['samples_logged']} of {record['batch_size']} samples",
    }
    # The thumbnails are the logged images, loaded from the plugin, lazily.
    first = view.frame.locator(".tile img").first
    first.scroll_into_view_if_needed()
    view.frame.wait_for_function(
        "() => { const i = document.querySelector('.tile img'); return i.complete && i.naturalWidth > 0; }"
    )
    assert first.get_attribute("loading") == "lazy"
    assert view.frame.eval_on_selector(
        ".tile img", "i => [i.naturalWidth, i.naturalHeight]"
    ) == [
        32,
        32,
    ]


def test_next_previous_and_exact_step_jump_show_the_right_batches(
    gallery: Callable[..., Gallery], logs: Logs
) -> None:
    records = logged_batches(logs.root / "baseline" / "train")
    steps = list(records)
    view = gallery(view_fragment(runs="baseline", step=steps[3]))
    view.wait_ready(steps[3])
    assert_captions_match(view.tiles(), records[steps[3]])

    view.control("next").click()
    view.wait_ready(steps[4])
    assert_captions_match(view.tiles(), records[steps[4]])

    view.control("prev").click()
    view.control("prev").click()
    view.wait_ready(steps[2])
    assert_captions_match(view.tiles(), records[steps[2]])

    view.control("step").fill(str(steps[17]))
    view.control("step").press("Enter")
    view.wait_ready(steps[17])
    assert_captions_match(view.tiles(), records[steps[17]])
    assert view.facts()["step"] == str(steps[17])

    # A step that was not logged: the nearest one, and the page says so.
    view.control("step").fill("100000")
    view.control("step").press("Enter")
    view.wait_ready(steps[-1])
    assert "Step 100000 was not logged" in view.frame.inner_text(".step-note")

    # The scrubber moves over the logged steps.
    view.control("scrubber").fill("5")
    view.wait_ready(steps[5])
    assert_captions_match(view.tiles(), records[steps[5]])

    # Keyboard: arrows step when no tile has the focus; [ and ] too.
    view.frame.locator(".batch-header").click()
    view.page.keyboard.press("ArrowRight")
    view.wait_ready(steps[6])
    view.page.keyboard.press("[")
    view.wait_ready(steps[5])
    view.page.keyboard.press("Home")
    view.wait_ready(steps[0])
    assert_captions_match(view.tiles(), records[steps[0]])

    # Arrows move between tiles, Enter opens, arrows page the detail view, Escape closes.
    view.page.keyboard.press("ArrowDown")
    view.page.keyboard.press("ArrowRight")
    focused = view.frame.evaluate("document.activeElement.dataset.position")
    assert focused == "1"
    view.page.keyboard.press("Enter")
    view.frame.wait_for_selector(".detail[data-position='1']")
    view.page.keyboard.press("ArrowRight")
    view.frame.wait_for_selector(".detail[data-position='2']")
    view.page.keyboard.press("Escape")
    view.frame.wait_for_selector(".detail", state="detached")
    assert view.frame.evaluate("document.activeElement.dataset.position") == "2"

    # Validation batches are a mode away, at the nearest step.
    validation = logged_batches(logs.root / "baseline" / "validation")
    view.frame.click(".segment[data-mode=validation]")
    near = nearest(list(validation), steps[0])
    view.wait_ready(near)
    assert_captions_match(view.tiles(), validation[near])
    assert view.frame.get_attribute(".batch", "data-run") == "baseline/validation"


def test_sort_by_loss_or_confidence_orders_the_tiles(
    gallery: Callable[..., Gallery], logs: Logs
) -> None:
    records = logged_batches(logs.root / "baseline" / "train")
    step = list(records)[7]
    samples = records[step]["samples"]
    view = gallery(view_fragment(runs="baseline", step=step))
    assert _positions(view.tiles()) == [sample["position"] for sample in samples]
    # A classification run has no masks: no mean-IoU or pixel-accuracy sort offered.
    offered = view.frame.eval_on_selector_all(
        "[data-control=sort] option",
        "options => options.filter(o => !o.hidden).map(o => o.value)",
    )
    assert offered == [
        "position",
        "loss_desc",
        "loss_asc",
        "confidence_desc",
        "confidence_asc",
    ]

    for sort, key, reverse in [
        ("loss_desc", "loss", True),
        ("loss_asc", "loss", False),
        ("confidence_desc", "confidence", True),
        ("confidence_asc", "confidence", False),
    ]:
        view.control("sort").select_option(sort)
        view.frame.wait_for_function(
            "sort => decodeURIComponent(parent.location.hash).includes('sort=' + sort)",
            arg=sort,
        )
        view.wait_ready(step)
        expected = sorted(
            samples, key=lambda s: (-s[key] if reverse else s[key], s["position"])
        )
        tiles = view.tiles()
        assert _positions(tiles) == [sample["position"] for sample in expected], sort
        if key == "loss":
            shown = [float(tile["loss"]) for tile in tiles]
            assert shown == sorted(shown, reverse=reverse)

    view.control("sort").select_option("position")
    view.frame.wait_for_function("() => !parent.location.hash.includes('sort=')")
    assert _positions(view.tiles()) == [sample["position"] for sample in samples]


def test_filters_keep_exactly_the_matching_samples(
    gallery: Callable[..., Gallery], logs: Logs
) -> None:
    records = logged_batches(logs.root / "baseline" / "train")
    # A step with right and wrong samples and a flagged one: the filters have work.
    step = next(
        step
        for step, record in records.items()
        if 0 < sum(not s["correct"] for s in record["samples"]) < len(record["samples"])
        and any(s["flags"] for s in record["samples"])
    )
    samples = records[step]["samples"]
    wrong = [s["position"] for s in samples if s["correct"] is False]
    view = gallery(view_fragment(runs="baseline", step=step))
    assert len(view.tiles()) == len(samples)

    view.control("wrong").check()
    view.frame.wait_for_function(
        "n => document.querySelectorAll('.tile').length === n", arg=len(wrong)
    )
    tiles = view.tiles()
    assert _positions(tiles) == wrong
    assert {tile["verdict"] for tile in tiles} == {"wrong"}
    shown = f"showing {len(wrong)} of {len(samples)} after filters"
    assert view.frame.inner_text("[data-field=shown]") == shown
    view.control("wrong").uncheck()
    view.frame.wait_for_function(
        "n => document.querySelectorAll('.tile').length === n", arg=len(samples)
    )

    def only(control: str, value: str, keep: Callable[[dict[str, Any]], bool]) -> None:
        if control == "q":
            view.control("q").fill(value)
        else:
            view.control(control).select_option(value)
        expected = [s["position"] for s in samples if keep(s)]
        view.frame.wait_for_function(
            "n => document.querySelectorAll('.tile').length === n", arg=len(expected)
        )
        assert _positions(view.tiles()) == expected, (control, value)
        view.control("clear").click()
        view.frame.wait_for_function(
            "n => document.querySelectorAll('.tile').length === n", arg=len(samples)
        )

    only("label", "1", lambda s: s["label"] == 1)
    predicted = samples[0]["prediction"]
    only("pred", str(predicted), lambda s: s["prediction"] == predicted)
    only("q", "circle", lambda s: "circle" in s["filename"])
    only("flag", "constant", lambda s: "constant" in s["flags"])
    flagged = view.frame.eval_on_selector_all(
        ".tile .flag", "flags => flags.map(f => [f.textContent, f.title])"
    )
    assert flagged == [["constant", "Every pixel of the input had the same value."]]

    view.control("flag").select_option("nan")
    view.frame.wait_for_selector("text=No sample of this batch matches the filters.")
    view.frame.click("text=Clear filters >> nth=-1")
    view.frame.wait_for_function(
        "n => document.querySelectorAll('.tile').length === n", arg=len(samples)
    )


def test_two_runs_side_by_side_stay_aligned_while_stepping(
    gallery: Callable[..., Gallery], logs: Logs
) -> None:
    baseline = logged_batches(logs.root / "baseline" / "train")
    augmented = logged_batches(logs.root / "augmented" / "train")
    assert list(augmented) == list(range(0, BASELINE_STEPS, AUGMENTED_EVERY))
    steps = sorted(set(baseline) | set(augmented))
    view = gallery(view_fragment(runs="baseline,augmented", step=steps[0]))
    titles = view.frame.eval_on_selector_all(
        ".column-title", "t => t.map(e => e.textContent)"
    )
    assert titles == ["baseline", "augmented"]
    view.frame.click(".column-title >> nth=0")  # keys go to the focused page

    for index in range(7):
        target = steps[index]
        view.wait_ready(target)
        expected = {"baseline": target, "augmented": nearest(list(augmented), target)}
        assert view.column_steps() == expected
        assert_captions_match(view.tiles("baseline"), baseline[expected["baseline"]])
        assert_captions_match(view.tiles("augmented"), augmented[expected["augmented"]])
        assert view.facts("augmented")["step"] == str(expected["augmented"])
        label = view.frame.inner_text(".column[data-group='augmented'] .column-step")
        if expected["augmented"] == target:
            assert label == f"step {target}"
        else:
            assert label == f"step {expected['augmented']} (nearest to {target})"
        if index % 2:
            view.control("next").click()
        else:
            view.page.keyboard.press("]")
    view.page.keyboard.press("ArrowLeft")
    view.wait_ready(steps[6])
    assert view.column_steps() == {
        "baseline": steps[6],
        "augmented": nearest(list(augmented), steps[6]),
    }


def _appearances(root: Path, filename: str) -> list[tuple[str, int, int]]:
    found = []
    for run_dir in sorted(root.glob("*/*")):
        run = f"{run_dir.parent.name}/{run_dir.name}"
        for step, record in logged_batches(run_dir).items():
            for sample in record["samples"]:
                if sample["filename"] == filename:
                    found.append((run, step, sample["position"]))
    return found


def test_history_strip_lists_the_real_appearances_of_a_file(
    gallery: Callable[..., Gallery], logs: Logs
) -> None:
    records = logged_batches(logs.root / "baseline" / "train")
    step = list(records)[0]
    sample = records[step]["samples"][2]
    filename = sample["filename"]
    view = gallery(view_fragment(runs="baseline", step=step))
    view.frame.click(".tile[data-position='2'] .history-button")
    view.frame.wait_for_selector(".strip-item")
    assert view.frame.inner_text(".history-filename") == filename

    shown = view.frame.eval_on_selector_all(
        ".strip-item",
        "items => items.map(i => [i.dataset.run, Number(i.dataset.step), Number(i.dataset.position)])",
    )
    expected = _appearances(logs.root, filename)
    assert len(expected) > EPOCHS  # every epoch of two runs, and validation
    assert sorted(map(tuple, shown)) == sorted(expected)
    assert {run for run, _, _ in expected} >= {
        "baseline/train",
        "baseline/validation",
        "augmented/train",
    }
    # Each item shows that appearance's prediction and loss.
    for item in view.frame.query_selector_all(".strip-item"):
        run, item_step = (
            item.get_attribute("data-run"),
            int(item.get_attribute("data-step")),
        )
        logged = logged_batches(logs.root / run)[item_step]["samples"]
        logged_sample = next(s for s in logged if s["filename"] == filename)
        assert (
            item.query_selector(".prediction").inner_text()
            == logged_sample["prediction_name"]
        )
        loss = float(item.query_selector(".loss").inner_text())
        assert loss == pytest.approx(logged_sample["loss"], rel=5e-3)
    # The current step is marked.
    current = view.frame.eval_on_selector_all(
        ".strip-item.is-current",
        "items => items.map(i => [i.dataset.run, i.dataset.step])",
    )
    assert current == [["baseline/train", str(step)]]
    view.screenshot("history.png")

    # Picking an appearance in another run goes there and opens that sample.
    run, other_step, position = next(
        item for item in expected if item[0] == "augmented/train"
    )
    view.frame.click(
        f".strip-item[data-run='{run}'][data-step='{other_step}'][data-position='{position}']"
    )
    view.wait_ready(other_step)
    view.frame.wait_for_selector(
        f".detail[data-run='{run}'][data-step='{other_step}'][data-position='{position}']"
    )
    assert view.frame.inner_text(".detail-filename") == filename
    assert set(view.column_steps()) == {"baseline", "augmented"}


def test_a_copied_url_restores_the_same_view_in_a_new_page(
    gallery: Callable[..., Gallery], logs: Logs
) -> None:
    records = logged_batches(logs.root / "baseline" / "train")
    step = list(records)[13]
    first = gallery(click_tab=True)
    first.frame.click("label.run-chip[data-group='baseline']")
    first.frame.click("label.run-chip[data-group='augmented']")
    first.control("step").fill(str(step))
    first.control("step").press("Enter")
    first.wait_ready(step)
    first.control("sort").select_option("loss_desc")
    first.control("label").select_option("2")
    first.wait_ready(step)
    first.frame.locator(".tile").nth(1).click()
    first.frame.wait_for_selector(".detail")
    opened = first.frame.get_attribute(".detail", "data-position")
    order = _positions(first.tiles())
    url = first.page.url  # what a user copies from the address bar
    assert f"p.{fmt.PLUGIN_NAME}.step={step}" in url

    second = gallery(url.split("/", 3)[3])
    second.wait_ready(step)
    second.frame.wait_for_selector(f".detail[data-position='{opened}']")
    assert second.column_steps() == {"baseline": step}
    assert _positions(second.tiles()) == order
    assert second.control("sort").input_value() == "loss_desc"
    assert second.control("label").input_value() == "2"
    assert second.frame.inner_text(".detail-filename") == first.frame.inner_text(
        ".detail-filename"
    )
    # Closing the detail view takes it out of the URL; TensorBoard's tab stays.
    second.page.keyboard.press("Escape")
    second.frame.wait_for_selector(".detail", state="detached")
    second.page.wait_for_function("() => !location.hash.includes('.open=')")
    assert second.page.url.split("#")[1].startswith(f"{fmt.PLUGIN_NAME}&")

    # The link pasted into the same tab (only the fragment changes) restores it too.
    second.control("sort").select_option("position")
    second.page.goto(url)
    second.frame.wait_for_selector(f".detail[data-position='{opened}']")
    assert _positions(second.tiles()) == order


def test_a_filename_with_markup_shows_as_text_and_runs_nothing(
    gallery: Callable[..., Gallery], logs: Logs
) -> None:
    records = logged_batches(logs.root / "baseline" / "train")
    step = list(records)[0]
    assert records[step]["samples"][MARKUP_SAMPLE]["filename"] == MARKUP_FILENAME
    view = gallery(view_fragment(runs="baseline", step=step))
    tile = next(t for t in view.tiles() if t["position"] == MARKUP_SAMPLE)
    assert tile["filename"] == MARKUP_FILENAME
    assert tile["filename_text"].startswith("<img src=x")

    view.control("q").fill("onerror")
    view.frame.wait_for_function(
        "() => document.querySelectorAll('.tile').length === 1"
    )
    view.frame.click(".tile")
    view.frame.wait_for_selector(".detail")
    assert view.frame.inner_text(".detail-filename") == MARKUP_FILENAME
    assert view.frame.inner_text(".detail dd[data-field=filename]") == MARKUP_FILENAME
    view.frame.click("text=History of this file")
    view.frame.wait_for_selector(".strip-item")
    assert view.frame.inner_text(".history-filename") == MARKUP_FILENAME
    view.page.wait_for_timeout(300)  # time for an injected handler to fire

    assert view.injected_markup() == 0
    assert view.dialogs == []


def _choose_theme(page: Any, theme: str) -> None:
    """Picks a theme in TensorBoard's own theme menu; waits until TensorBoard saved it.

    TensorBoard keeps the choice in localStorage (shared by the pages of the browser
    context) a moment later, so a page closed too soon would keep the old theme.
    """
    page.click("button[aria-label='Menu for changing light or dark theme']")
    page.click(f"[role=menuitem]:has-text('{theme}')")
    stored = theme.lower().replace(" ", "_")
    page.wait_for_function(
        """stored => JSON.parse(localStorage.getItem('_tb_global_settings') || '{}')
                      .theme === stored""",
        arg=stored,
    )


def test_dark_mode_follows_tensorboard(
    gallery: Callable[..., Gallery], logs: Logs
) -> None:
    records = logged_batches(logs.root / "baseline" / "train")
    view = gallery(view_fragment(runs="baseline", step=list(records)[14]))
    assert not view.page.evaluate("document.body.classList.contains('dark-mode')")
    assert not view.frame.evaluate(
        "document.documentElement.classList.contains('dark')"
    )

    def colours() -> dict[str, str]:
        return view.frame.evaluate(
            """() => ({
                page: getComputedStyle(document.body).backgroundColor,
                text: getComputedStyle(document.body).color,
                tile: getComputedStyle(document.querySelector('.tile')).backgroundColor,
                toolbar: getComputedStyle(document.querySelector('.app-header')).backgroundColor,
            })"""
        )

    def brightness(colour: str) -> float:
        red, green, blue = (float(v) for v in re.findall(r"[\d.]+", colour)[:3])
        return (red * 299 + green * 587 + blue * 114) / 1000

    light = colours()
    try:
        # TensorBoard marks its own <body> "dark-mode"; the gallery follows it live.
        _choose_theme(view.page, "Dark")
        view.page.wait_for_function("document.body.classList.contains('dark-mode')")
        view.frame.wait_for_function(
            "document.documentElement.classList.contains('dark')"
        )
        dark = colours()
        for part in light:
            assert light[part] != dark[part], part
        assert brightness(light["page"]) > 200 > 80 > brightness(dark["page"])
        assert brightness(dark["text"]) > 200
        view.screenshot("gallery-dark.png")

        _choose_theme(view.page, "Light")
        view.frame.wait_for_function(
            "!document.documentElement.classList.contains('dark')"
        )
        assert colours() == light
    finally:
        _choose_theme(view.page, "Browser default")


def test_screenshots_of_gallery_detail_and_comparison(
    gallery: Callable[..., Gallery], logs: Logs
) -> None:
    records = logged_batches(logs.root / "baseline" / "train")
    step = list(records)[14]
    view = gallery(view_fragment(runs="baseline", step=step))
    _choose_theme(view.page, "Light")
    view.frame.wait_for_function("!document.documentElement.classList.contains('dark')")
    view.screenshot("gallery.png")

    wrong = next(s for s in records[step]["samples"] if s["correct"] is False)
    view.frame.click(f".tile[data-position='{wrong['position']}']")
    view.frame.wait_for_selector(".detail")
    view.frame.wait_for_function(
        "() => { const i = document.querySelector('.detail-image'); return i.complete && i.naturalWidth; }"
    )
    # Top-k as bars, every field, the verdict and image at full logged size.
    bars = view.frame.eval_on_selector_all(".topk-row", "rows => rows.length")
    assert bars == len(wrong["top_k"]) > 0
    assert view.frame.text_content(".detail .verdict") == "✗wrong"
    assert view.frame.inner_text(
        ".detail dd[data-field=loss]"
    ) == view.frame.inner_text(
        ".detail .headline-text > div:nth-child(3) .headline-value"
    )
    size = view.frame.eval_on_selector(
        ".detail-image", "i => [i.naturalWidth, i.getBoundingClientRect().width]"
    )
    assert size[0] == 32 and size[1] >= 32 * 8  # small images scaled up, pixelated
    assert "pixelated" in view.frame.get_attribute(".detail-image", "class")
    view.screenshot("detail.png")

    compare = gallery(view_fragment(runs="baseline,augmented", step=list(records)[9]))
    compare.screenshot("compare.png")
    for name in ("gallery.png", "detail.png", "compare.png"):
        assert (SCREENSHOTS / name).stat().st_size > 10_000


def test_a_64_tile_step_paints_every_captioned_tile_with_lazy_images(
    gallery: Callable[..., Gallery], logs: Logs
) -> None:
    """Also prints the paint time (no timed assertion: the number is recorded in
    benchmarks/README.md; run with `-s -k 64_tile` to see it)."""
    records = logged_batches(logs.root / "wide" / "train")
    first, second = list(records)
    view = gallery(view_fragment(runs="wide", step=first))
    assert len(view.tiles()) == WIDE_BATCH
    # From a click on "Next" to 64 captioned tiles with every visible image drawn.
    elapsed = view.frame.evaluate(
        """async (step) => {
            const start = performance.now();
            document.querySelector('[data-control=next]').click();
            const painted = () => {
                const main = document.querySelector('main');
                if (main.dataset.status !== 'ready' || main.dataset.step !== String(step)) return false;
                const tiles = document.querySelectorAll('.tile');
                if (tiles.length !== 64) return false;
                return [...document.querySelectorAll('.tile img')].every(img => {
                    const box = img.getBoundingClientRect();
                    const visible = box.bottom > 0 && box.top < innerHeight;
                    return !visible || (img.complete && img.naturalWidth > 0);
                });
            };
            while (!painted()) await new Promise(r => requestAnimationFrame(r));
            await new Promise(r => requestAnimationFrame(r));
            return performance.now() - start;
        }""",
        second,
    )
    assert_captions_match(view.tiles(), records[second])
    print(f"64 tiles painted in {elapsed:.0f} ms")
    lazy = view.frame.eval_on_selector_all(
        ".tile img", "imgs => imgs.filter(i => i.loading === 'lazy').length"
    )
    assert lazy == WIDE_BATCH


def test_empty_logdir_says_how_to_log_then_dropped_steps_say_how_to_keep_all(
    browser_context: Any,
    logs: Logs,
    tmp_path: Path,
    tensorboard: Callable[..., TensorBoardProcess],
) -> None:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    server = tensorboard(
        logdir, "--samples_per_plugin", f"{fmt.PLUGIN_NAME}={RETENTION}"
    )
    view = Gallery(browser_context.new_page())
    try:
        server.wait_until(lambda: server.steps_kept() == {})
        view.page.goto(server.url(view_fragment()))
        handle = view.page.wait_for_selector("iframe[src*='plugin_entry.html']")
        view.frame = handle.content_frame()
        view.frame.wait_for_selector("main[data-status=empty]")
        text = view.frame.inner_text("main")
        assert "No batch images logged yet" in text
        assert "BatchImageLogger" in text and "tensorboard --logdir" in text

        # The logger's steps arrive; TensorBoard's reload shows them, and what it dropped.
        shutil.copytree(logs.root / "baseline", logdir / "baseline")
        server.wait_until(
            lambda: server.steps_kept().get("baseline/train") == RETENTION
        )
        view.page.click("button.reload-button")
        view.wait_ready()
        notice = view.frame.inner_text(".notice[data-kind=retention]")
        assert f"{RETENTION} of {BASELINE_STEPS} steps kept" in notice
        assert f"--samples_per_plugin {fmt.PLUGIN_NAME}=0" in notice
        assert len(view.frame.query_selector_all(".tile")) == BATCH
        assert view.errors == []
    finally:
        view.page.close()


def test_tensorboard_reload_picks_up_new_steps_without_losing_the_place(
    gallery: Callable[..., Gallery], logs: Logs, board: TensorBoardProcess
) -> None:
    before = logged_batches(logs.root / "growing" / "train")
    step = list(before)[2]
    view = gallery(view_fragment(runs="growing", step=step, sort="loss_desc"))
    count = len(before)
    assert view.frame.inner_text(".step-label").endswith(f"of {count} steps")
    order = _positions(view.tiles())
    url = view.page.url

    logs.grow()
    after = logged_batches(logs.root / "growing" / "train")
    assert len(after) > count
    board.wait_until(lambda: board.steps_kept()["growing/train"] == len(after))
    view.page.click("button.reload-button")
    view.frame.wait_for_function(
        "label => document.querySelector('.step-label').textContent.endsWith(label)",
        arg=f"of {len(after)} steps",
    )
    view.wait_ready(step)
    assert _positions(view.tiles()) == order
    assert view.page.url == url
    # The new steps are there to go to.
    view.control("step").fill(str(list(after)[-1]))
    view.control("step").press("Enter")
    view.wait_ready(list(after)[-1])
    assert_captions_match(view.tiles(), after[list(after)[-1]])


def test_merged_validation_batches_show_and_open_every_sample(
    gallery: Callable[..., Gallery], logs: Logs
) -> None:
    records = logged_batches(logs.root / "augmented" / "validation")
    step, record = next(iter(records.items()))
    samples = record["samples"]
    assert len({s["batch"] for s in samples}) == 2  # positions repeat across batches
    view = gallery(view_fragment(runs="augmented", mode="validation", step=step))
    assert_captions_match(view.tiles(), record)
    badges = view.frame.eval_on_selector_all(
        ".tile .position", "b => b.map(e => e.textContent)"
    )
    assert badges == [f"b{s['batch']} #{s['position']}" for s in samples]
    # The second batch's sample at position 0 opens, not the first batch's.
    index = next(i for i, s in enumerate(samples) if s["batch"] == samples[-1]["batch"])
    view.frame.click(f".tile[data-index='{index}']")
    view.frame.wait_for_selector(f".detail[data-index='{index}']")
    assert view.frame.inner_text(".detail-filename") == samples[index]["filename"]
    view.page.keyboard.press("ArrowLeft")
    view.frame.wait_for_selector(f".detail[data-index='{index - 1}']")
    assert view.frame.inner_text(".detail-filename") == samples[index - 1]["filename"]
