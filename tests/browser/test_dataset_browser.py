"""The gallery's Dataset view in a real browser: headless Chromium, a real `tensorboard`.

Runs of `logs`, trained with the real `BatchImageLogger` (data map and watchlist on,
no batches scheduled, so every picture shown is a watchlist capture):
- `rig_a`, `rig_b`: the correspondence rig's images (`tests/fixtures/rig.py`: the pixels encode
  the sample id), every 7th label wrong, 4 epochs;
- `large`: 20,000 samples (class-tinted noise, 10% of the labels flipped, each file
  in its true class's folder), the tens-of-thousands case, and the README's
  screenshot;
- `plain`: a fit whose batches carry no sample ids: the data map is off, and the
  Dataset view says why in the logger's own words (its status record).

What the page shows is checked against the event files (`read_sample_stats`,
`read_batches(..., watchlist=True)`) and against the pictures' own pixels, never
against the plugin's answers.
"""

from __future__ import annotations

import io
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tb_batch_images import contract as fmt
from tests.fixtures import rig
from tests.fixtures.browser import SCREENSHOTS, Gallery, view_fragment
from tests.fixtures.servers import TensorBoardProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RIG_SAMPLES = 120
RIG_EPOCHS = 4
WATCHED = 16
LARGE_SAMPLES = 20_000
LARGE_EPOCHS = 3


def _rig_labels() -> np.ndarray:
    labels = np.array([rig.label_of(i) for i in range(RIG_SAMPLES)])
    labels[::7] = (labels[::7] + 1) % rig.CLASSES
    return labels


def _train_rig(log_dir: Path, seed: int) -> None:
    import keras

    from tb_batch_images import BatchImageLogger

    keras.utils.set_random_seed(seed)
    images = np.stack([rig.raw_image(i) for i in range(RIG_SAMPLES)])
    model = rig.make_model(rig.Recorder(capacity=RIG_EPOCHS * 16, max_batch=16))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(
        {"image": images, "sample_id": np.arange(RIG_SAMPLES)},
        _rig_labels(),
        batch_size=16,
        epochs=RIG_EPOCHS,
        shuffle=True,
        verbose=0,
        callbacks=[
            BatchImageLogger(
                str(log_dir),
                every_n_steps=0,
                filenames=[rig.filename_of(i) for i in range(RIG_SAMPLES)],
                class_names=["zero", "one", "two"],
                watchlist=WATCHED,
            )
        ],
    )


def _large_filenames(labels: np.ndarray) -> list[str]:
    names = ["red", "green", "blue"]
    return [
        f"/data/tinted_noise/{names[label]}/shape_{i:05d}.png"
        for i, label in enumerate(labels)
    ]


def _train_plain(log_dir: Path) -> str:
    """A fit without sample ids; returns the logger's data-map warning."""
    import warnings

    import keras

    from tb_batch_images import BatchImageLogger

    images = np.random.default_rng(0).random((32, 8, 8, 3)).astype("float32")
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(
            images,
            np.arange(32) % 3,
            batch_size=8,
            epochs=1,
            verbose=0,
            callbacks=[BatchImageLogger(str(log_dir), every_n_steps=0)],
        )
    return next(str(w.message) for w in caught if "data map" in str(w.message))


def _train_large(log_dir: Path) -> None:
    import keras

    from tb_batch_images import BatchImageLogger

    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, LARGE_SAMPLES)
    images = rng.random((LARGE_SAMPLES, 8, 8, 3)).astype("float32") * 0.5
    images[np.arange(LARGE_SAMPLES), :, :, labels] += 0.4 + 0.2 * rng.random(
        (LARGE_SAMPLES, 1, 1)
    ).astype("float32")
    images = np.clip(images, 0, 1)  # in [0, 1]: shown as is
    flipped = rng.random(LARGE_SAMPLES) < 0.1
    given = np.where(flipped, (labels + rng.integers(1, 3, LARGE_SAMPLES)) % 3, labels)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(
        {"image": images, "sample_id": np.arange(LARGE_SAMPLES)},
        given,
        batch_size=250,
        epochs=LARGE_EPOCHS,
        verbose=0,
        callbacks=[
            BatchImageLogger(
                str(log_dir),
                every_n_steps=0,
                filenames=_large_filenames(labels),
                class_names=["red", "green", "blue"],
            )
        ],
    )


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dataset_logs")
    _train_rig(root / "rig_a", seed=0)
    _train_rig(root / "rig_b", seed=1)
    _train_large(root / "large")
    (root / "plain_warning.txt").write_text(_train_plain(root / "plain"))
    return root


def _epochs(root: Path, run: str) -> list[Any]:
    from tb_batch_images import read_sample_stats

    return read_sample_stats(str(root / run)).epochs


def _watchlist(root: Path, run: str) -> dict[int, Any]:
    """{epoch: LoggedBatch} of a run's watchlist captures, from its event files."""
    from tb_batch_images import read_batches

    return {
        batch.epoch: batch
        for batch in read_batches(str(root / run), run="train", watchlist=True)
    }


@pytest.fixture(scope="module")
def board(logs: Path) -> Iterator[TensorBoardProcess]:
    server = TensorBoardProcess(logs)
    try:
        server.start()
        expected = {"rig_a/train": RIG_EPOCHS, "rig_b/train": RIG_EPOCHS}
        expected["large/train"] = LARGE_EPOCHS

        def loaded() -> bool:
            answer = server.json("/sample_stats_runs")
            runs = {r["run"]: len(r["steps"]) for r in answer["runs"]}
            off = [r["run"] for r in answer["off"]]
            return runs == expected and off == ["plain/train"]

        server.wait_until(loaded)
        yield server
    finally:
        server.stop()


@pytest.fixture
def dataset(
    browser_context: Any, board: TensorBoardProcess
) -> Iterator[Callable[..., Gallery]]:
    """`dataset(**state)`: a new page on the Dataset view; no page errors, no dialogs."""
    opened: list[Gallery] = []

    def open_view(**state: str) -> Gallery:
        view = Gallery(browser_context.new_page())
        opened.append(view)
        view.page.goto(board.url(view_fragment(view="dataset", **state)))
        handle = view.page.wait_for_selector(
            f"iframe[src*='plugin_entry.html?name={fmt.PLUGIN_NAME}']"
        )
        view.frame = handle.content_frame()
        wait_ready(view)
        return view

    yield open_view
    for view in opened:
        view.page.close()
        assert view.errors == [], f"script errors in the page: {view.errors}"
        assert view.dialogs == [], f"the page opened dialogs: {view.dialogs}"


def wait_ready(view: Gallery) -> None:
    view.frame.wait_for_selector("section.dataset[data-status=ready]", state="attached")
    view.frame.wait_for_selector(".suspects-grid[data-status=ready]", state="attached")


def _canvas(view: Gallery, run: str) -> dict[str, Any]:
    return view.frame.eval_on_selector(
        f".dataset-column[data-run='{run}'] .datamap-canvas",
        """c => { const box = c.getBoundingClientRect();
                  return {points: Number(c.dataset.points), plot: JSON.parse(c.dataset.plot),
                          draw_ms: Number(c.dataset.drawMs),
                          left: box.left, top: box.top, width: box.width, height: box.height}; }""",
    )


def _place(canvas: dict[str, Any], confidence: float, variability: float):
    """Where the page should draw a sample (CSS pixels, relative to the iframe)."""
    plot = canvas["plot"]
    across = (variability - plot["x_min"]) / (plot["x_max"] - plot["x_min"])
    up = (confidence - plot["y_min"]) / (plot["y_max"] - plot["y_min"])
    x = plot["left"] + min(max(across, 0), 1) * plot["width"]
    y = plot["top"] + (1 - min(max(up, 0), 1)) * plot["height"]
    return x, y


def _shortened(path: str, most: int = 30) -> str:
    """frontend/format.js shortenPath: folder/name, cut in the middle."""
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    text = "/".join(parts[-2:]) if len(parts) > 1 else path
    if len(text) <= most:
        return text
    tail = -(-(most - 1) * 6 // 10)
    head = most - 1 - tail
    return text[:head] + "…" + text[len(text) - tail :]


def _drawable(epoch: Any) -> np.ndarray:
    columns = epoch.columns
    return np.flatnonzero(
        (columns["count"] > 0)
        & np.isfinite(columns["confidence"])
        & np.isfinite(columns["variability"])
    )


def _picture_id(board: TensorBoardProcess, frame: Any, selector: str) -> int:
    """The sample id the pixels of an <img> in the page encode (rig images)."""
    from PIL import Image

    src = frame.eval_on_selector(selector, "img => img.src")
    assert "/data/plugin/batch_images/image?" in src
    with urllib.request.urlopen(src, timeout=20) as answer:
        pixels = np.asarray(Image.open(io.BytesIO(answer.read())))
    return rig.decode_id(pixels)


def _iframe_offset(view: Gallery) -> tuple[float, float]:
    box = view.page.eval_on_selector(
        f"iframe[src*='plugin_entry.html?name={fmt.PLUGIN_NAME}']",
        "f => { const b = f.getBoundingClientRect(); return [b.left, b.top]; }",
    )
    return box[0], box[1]


def test_the_data_map_draws_every_seen_sample_and_a_click_opens_the_right_one(
    dataset: Callable[..., Gallery], logs: Path, board: TensorBoardProcess
) -> None:
    last = _epochs(logs, "rig_a")[-1]
    view = dataset(ds_runs="rig_a/train")
    canvas = _canvas(view, "rig_a/train")
    drawable = _drawable(last)
    assert canvas["points"] == len(drawable) == RIG_SAMPLES

    # The sample farthest from its nearest neighbour: a click there is unambiguous.
    places = np.array(
        [
            _place(
                canvas, last.columns["confidence"][i], last.columns["variability"][i]
            )
            for i in drawable
        ]
    )
    gaps = np.linalg.norm(places[:, None] - places[None], axis=-1)
    np.fill_diagonal(gaps, np.inf)
    chosen = int(drawable[int(np.argmax(gaps.min(axis=1)))])
    x, y = (float(v) for v in places[list(drawable).index(chosen)])
    left, top = _iframe_offset(view)
    view.page.mouse.move(left + canvas["left"] + x, top + canvas["top"] + y)
    view.frame.wait_for_selector(".datamap-tooltip:not([hidden])")
    assert view.frame.text_content(".tooltip-filename") == rig.filename_of(chosen)
    view.page.mouse.click(left + canvas["left"] + x, top + canvas["top"] + y)
    panel = f".sample-panel[data-sample-id='{chosen}'][data-status=ready]"
    view.frame.wait_for_selector(panel)
    assert view.frame.text_content(".sample-filename") == rig.filename_of(chosen)
    # Its statistics at every epoch, as the event files hold them.
    rows = view.frame.eval_on_selector_all(
        ".sample-epochs tbody tr", "rows => rows.map(r => r.dataset.epoch)"
    )
    assert rows == [str(e.epoch) for e in _epochs(logs, "rig_a")]
    # And a picture of it, if it was ever watched: the pixels say which sample.
    watched = {
        s.sample_id for b in _watchlist(logs, "rig_a").values() for s in b.samples
    }
    if chosen in watched:
        assert _picture_id(board, view.frame, ".sample-figure img") == chosen
    else:
        assert view.frame.query_selector(".sample-figure img") is None

    # A watched sample opened from the URL alone shows its own picture.
    some = sorted(watched)[0]
    linked = dataset(
        ds_runs="rig_a/train", ds_sample=str(some), ds_sample_run="rig_a/train"
    )
    linked.frame.wait_for_selector(
        f".sample-panel[data-sample-id='{some}'][data-status=ready]"
    )
    assert _picture_id(board, linked.frame, ".sample-figure img") == some
    strip = linked.frame.eval_on_selector_all(
        ".sample-strip .strip-item", "items => items.map(i => i.dataset.source)"
    )
    assert strip and set(strip) == {"watchlist"}


def test_the_suspects_grid_shows_the_pictures_of_watchlisted_samples(
    dataset: Callable[..., Gallery], logs: Path, board: TensorBoardProcess
) -> None:
    epochs = _epochs(logs, "rig_a")
    captures = _watchlist(logs, "rig_a")
    assert sorted(captures) == list(range(1, RIG_EPOCHS))
    # The epoch before the last: its top suspects are the last epoch's watchlist.
    index = RIG_EPOCHS - 2
    view = dataset(ds_runs="rig_a/train", ds_epoch=str(index))
    column = ".dataset-column[data-run='rig_a/train']"
    assert view.frame.get_attribute(column, "data-epoch") == str(index)
    tiles = view.frame.eval_on_selector_all(
        f"{column} .suspect-tile",
        """tiles => tiles.map(t => ({id: Number(t.dataset.sampleId), source: t.dataset.source,
             filename: t.querySelector('.filename').textContent,
             picture: Boolean(t.querySelector('img'))}))""",
    )
    expected = epochs[index].suspects(len(tiles))
    assert [tile["id"] for tile in tiles] == expected  # ranked as the reader ranks
    watched = {s.sample_id for s in captures[index + 1].samples}
    assert watched == set(expected[:WATCHED])
    for rank, tile in enumerate(tiles):
        assert tile["filename"] == rig.filename_of(tile["id"])
        if tile["id"] in watched:
            assert tile["picture"] and tile["source"] == "watchlist", tile
            selector = f"{column} .suspect-tile[data-rank='{rank}'] img"
            assert _picture_id(board, view.frame, selector) == tile["id"]
    # The scrubber moves to the latest epoch, and the URL follows.
    view.frame.eval_on_selector(
        "[data-control=ds-epoch]",
        "s => { s.value = s.max; s.dispatchEvent(new Event('input')); }",
    )
    view.frame.wait_for_selector(f"{column}[data-epoch='{RIG_EPOCHS - 1}']")
    assert "ds_epoch" not in view.page.url


def test_two_runs_side_by_side_and_tens_of_thousands_of_points(
    dataset: Callable[..., Gallery], logs: Path
) -> None:
    view = dataset(ds_runs="rig_a/train,rig_b/train")
    runs = view.frame.eval_on_selector_all(
        ".dataset-column", "columns => columns.map(c => c.dataset.run)"
    )
    assert runs == ["rig_a/train", "rig_b/train"]
    for run in runs:
        expected = len(_drawable(_epochs(logs, run.split("/")[0])[-1]))
        assert _canvas(view, run)["points"] == expected

    # These logs hold no batches: the Batches view says so, and the Dataset comes back.
    view.frame.click(".view-switch [data-view=batches]")
    view.frame.wait_for_selector("main[data-status=empty]")
    assert view.frame.is_hidden("section.dataset")
    view.frame.click(".view-switch [data-view=dataset]")
    wait_ready(view)
    assert view.frame.is_visible(".dataset-column[data-run='rig_b/train'] canvas")

    large = dataset(ds_runs="large/train")
    canvas = _canvas(large, "large/train")
    assert canvas["points"] == len(_drawable(_epochs(logs, "large")[-1]))
    assert canvas["points"] == LARGE_SAMPLES
    # One draw of 20,000 points (recorded, not asserted: the machine is shared).
    print(f"\ndata map of {canvas['points']} points drawn in {canvas['draw_ms']} ms")
    # One canvas for the map, no DOM per point (the Batches view's loss curve is the
    # page's other canvas).
    column = large.frame.locator(".dataset-column[data-run='large/train']")
    assert column.locator("canvas").count() == 1
    assert column.locator(".datamap-box > *").count() <= 2  # the canvas, its tooltip


def test_screenshot_of_the_data_map(
    dataset: Callable[..., Gallery], logs: Path
) -> None:
    view = dataset(ds_runs="large/train", ds_epoch=str(LARGE_EPOCHS - 2))
    view.frame.wait_for_function(
        """() => { const shown = [...document.querySelectorAll('.suspect-tile img')]
                     .filter(i => i.getBoundingClientRect().top < innerHeight);
                   return shown.length && shown.every(i => i.complete && i.naturalWidth); }"""
    )
    view.screenshot("dataset.png")
    assert (SCREENSHOTS / "dataset.png").stat().st_size > 20_000

    # The confusion matrix of the last epoch, its biggest mistake opened.
    last = _epochs(logs, "large")[-1]
    seen = last.columns["count"] > 0
    matrix = np.zeros((3, 3), int)
    np.add.at(
        matrix,
        (
            last.columns["label"][seen].astype(int),
            last.columns["last_predicted"][seen].astype(int),
        ),
        1,
    )
    np.fill_diagonal(matrix, 0)
    g, p = (int(v) for v in np.unravel_index(np.argmax(matrix), matrix.shape))
    view = dataset(ds_runs="large/train", ds_cell=f"{g},{p}", ds_cell_run="large/train")
    panel = ".cell-samples .suspects-grid[data-status=ready]"
    view.frame.wait_for_selector(panel)
    view.frame.eval_on_selector(".confusion", "e => e.scrollIntoView()")
    view.frame.wait_for_function(
        """() => [...document.querySelectorAll('.cell-samples img')]
                   .filter(i => i.getBoundingClientRect().top < innerHeight)
                   .every(i => i.complete && i.naturalWidth)"""
    )
    view.screenshot("dataset_confusion.png")
    assert (SCREENSHOTS / "dataset_confusion.png").stat().st_size > 20_000


def _ranked(epoch: Any, ids: np.ndarray) -> list[int]:
    """Ids ranked as the suspects are (non-finite first, then by score, by id)."""
    rank = {sample_id: i for i, sample_id in enumerate(epoch.suspects(10**9))}
    return sorted((int(i) for i in ids), key=lambda i: rank[i])


def test_a_confusion_cell_opens_its_samples_with_their_pictures(
    dataset: Callable[..., Gallery], logs: Path, board: TensorBoardProcess
) -> None:
    last = _epochs(logs, "rig_a")[-1]
    given, predicted = last.columns["label"], last.columns["last_predicted"]
    seen = last.columns["count"] > 0
    expected = np.zeros((rig.CLASSES, rig.CLASSES), int)
    np.add.at(expected, (given[seen].astype(int), predicted[seen].astype(int)), 1)
    view = dataset(ds_runs="rig_a/train")
    column = ".dataset-column[data-run='rig_a/train']"
    assert view.frame.text_content(f"{column} .column-title") == "rig_a"
    shown = view.frame.eval_on_selector_all(
        f"{column} .confusion-cell",
        "cells => cells.map(c => [Number(c.dataset.given), Number(c.dataset.predicted), Number(c.textContent)])",
    )
    matrix = np.zeros_like(expected)
    for row, col, count in shown:
        matrix[row, col] = count
    np.testing.assert_array_equal(matrix, expected)
    section = f"{column} .confusion"
    assert view.frame.get_attribute(section, "data-diagonal") == str(np.trace(expected))
    assert view.frame.get_attribute(section, "data-off-diagonal") == str(
        expected.sum() - np.trace(expected)
    )
    # Per-class accuracy, as the event files hold it.
    accuracy = view.frame.eval_on_selector_all(
        f"{column} .class-accuracy", "cells => cells.map(c => c.textContent)"
    )
    for index, text in enumerate(accuracy):
        mine = seen & (given == index)
        right = np.mean(last.columns["last_correct"][mine] > 0.5)
        assert text == f"{right * 100:.1f}%"

    # The biggest off-diagonal cell: a click lists exactly its samples, ranked.
    off = expected.copy()
    np.fill_diagonal(off, 0)
    g, p = (int(v) for v in np.unravel_index(np.argmax(off), off.shape))
    assert off[g, p] > 0
    view.frame.click(
        f"{column} .confusion-cell[data-given='{g}'][data-predicted='{p}']"
    )
    panel = f"{column} .cell-samples[data-given='{g}'][data-predicted='{p}']"
    view.frame.wait_for_selector(f"{panel} .suspects-grid[data-status=ready]")
    members = np.flatnonzero(seen & (given == g) & (predicted == p))
    ids = [
        int(i)
        for i in view.frame.eval_on_selector_all(
            f"{panel} .suspect-tile", "tiles => tiles.map(t => t.dataset.sampleId)"
        )
    ]
    assert ids == _ranked(last, members)[:40]
    assert view.frame.get_attribute(panel, "data-count") == str(len(members))
    assert f"ds_cell={g}%2C{p}" in view.page.url or f"ds_cell={g},{p}" in view.page.url
    # Their pictures: the pixels say which sample (for those ever captured).
    pictured = view.frame.eval_on_selector_all(
        f"{panel} .suspect-tile[data-source=watchlist]",
        "tiles => tiles.map(t => Number(t.dataset.rank))",
    )
    for rank in pictured[:3]:
        selector = f"{panel} .suspect-tile[data-rank='{rank}'] img"
        assert _picture_id(board, view.frame, selector) == ids[rank]
    # A tile opens its sample.
    view.frame.click(f"{panel} .suspect-tile[data-rank='0']")
    view.frame.wait_for_selector(
        f".sample-panel[data-sample-id='{ids[0]}'][data-status=ready]"
    )


def test_the_csv_export_downloads_the_ranked_list(
    dataset: Callable[..., Gallery], logs: Path
) -> None:
    from tb_batch_images import read_sample_stats

    view = dataset(ds_runs="rig_a/train")
    with view.page.expect_download() as download:
        view.frame.click(".dataset-column[data-run='rig_a/train'] .csv-link")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    expected = read_sample_stats(str(logs), run="rig_a/train").suspects(None)
    assert text == expected.to_csv()
    assert download.value.suggested_filename == "suspects_rig_a_train_epoch3.csv"
    lines = text.splitlines()
    assert len(lines) == RIG_SAMPLES + 1
    assert [line.split(",")[3] for line in lines[1:11]] == [
        str(i) for i in _epochs(logs, "rig_a")[-1].suspects(10)
    ]


def test_a_run_whose_data_map_is_off_says_why_in_the_loggers_words(
    dataset: Callable[..., Gallery], logs: Path
) -> None:
    view = dataset(ds_runs="rig_a/train")
    notice = ".notice[data-kind=data-map-off][data-run='plain/train']"
    reason = view.frame.text_content(f"{notice} .off-reason")
    warning = (logs / "plain_warning.txt").read_text()
    assert reason and reason in warning and "sample_id" in reason
    assert view.frame.text_content(f"{notice} strong").startswith("plain:")


def test_suspect_tiles_show_folder_and_file_and_the_map_fits_its_data(
    dataset: Callable[..., Gallery], logs: Path
) -> None:
    last = _epochs(logs, "large")[-1]
    view = dataset(ds_runs="large/train")
    column = ".dataset-column[data-run='large/train']"
    tiles = view.frame.eval_on_selector_all(
        f"{column} .suspects-grid:not(.cell-grid) .suspect-tile",
        """tiles => tiles.map(t => ({id: Number(t.dataset.sampleId),
             shown: t.querySelector('.filename').textContent, title: t.title}))""",
    )
    assert tiles
    for tile in tiles:
        full = last.filenames[tile["id"]]
        assert tile["title"] == full
        assert tile["shown"] == _shortened(full)
        assert "/" in tile["shown"]  # the class folder is there
    plot = _canvas(view, "large/train")["plot"]
    drawable = _drawable(last)
    variability = last.columns["variability"][drawable]
    confidence = last.columns["confidence"][drawable]
    assert (
        plot["x_min"] == 0
        and variability.max() <= plot["x_max"] < variability.max() + 0.05 + 1e-6
    )
    assert plot["y_min"] <= confidence.min() < plot["y_min"] + 0.1 + 1e-6
    assert (
        confidence.max() <= plot["y_max"] < confidence.max() + 0.1 + 1e-6
        or plot["y_max"] == 1
    )
    reliable = last.reliability()["reliable"]
    assert view.frame.get_attribute(column, "data-reliable") == str(reliable).lower()
    assert view.frame.is_visible(f"{column} .notice[data-kind=unreliable]") == (
        not reliable
    )
