"""The record validator (`tb_batch_images.contract.schema`), and every reader behind it.

- the schema is the one docs/format.md states ("Validation"), field by field: each
  field drops every JSON type its row does not accept;
- what the real logger writes passes with no warning;
- fuzzed with `hypothesis`: any bytes, and valid records with a field set to any JSON
  value (NaN/Infinity, huge and negative numbers, 100k-character strings, nesting),
  fields removed or added, newer versions. The validator never raises, and what it
  keeps is strict JSON within the schema's bounds;
- the routes: fuzzed records written with the real summary writer and served by the
  plugin inside TensorBoard's real WSGI app, and fuzzed request parameters; every
  route answers 200 or 4xx, never 5xx, and the server stays healthy;
- the malformed corpus (`tests/fixtures/malformed.py`) through both data providers and
  `read_batches`.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tb_batch_images import contract as fmt
from tb_batch_images.contract import schema as validate
from tests.fixtures import malformed
from tests.fixtures.servers import PluginServer

ROOT = Path(__file__).resolve().parents[2]
LOAD_FAST = pytest.mark.parametrize(
    "load_fast", [False, True], ids=["load_fast=false", "load_fast=true"]
)


# -- the schema, as docs/format.md states it --------------------------------------------
def documented_tables() -> dict[str, dict[str, str]]:
    """{table title: {field: accepts}} of the "Validation" section of docs/format.md."""
    text = (ROOT / "docs" / "format.md").read_text(encoding="utf-8")
    section = text.split("## Validation", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, dict[str, str]] = {}
    title = None
    for line in section.splitlines():
        if line and not line.startswith("|") and line.rstrip().endswith(":"):
            title = line.rstrip(":")
        row = re.match(r"\| `([a-z_]+)` +\| ([^|]+?(?: \\\| [^|]+?)*) +\|", line)
        if row and title:
            tables.setdefault(title, {})[row[1]] = row[2].replace("\\|", "|")
    return tables


TABLES = {
    "Batch record": validate.BATCH_RECORD,
    "Sample (an item of `samples`)": validate.SAMPLE,
    "An item of `top_k`": validate.SAMPLE.fields["top_k"].item,
    "`output_summary`": validate.SAMPLE.fields["output_summary"],
    "`boxes`": validate.SAMPLE.fields["boxes"],
    "Status record (a status record that cannot be used is ignored, with a log line)": (
        validate.STATUS_RECORD
    ),
}

# One value of each JSON type; "float" is a number that is not an integer.
KINDS = {
    "null": None,
    "bool": True,
    "int": 3,
    "float": 0.25,
    "string": "text",
    "list": ["text"],
    "object": {"key": "value"},
}
_ACCEPTS = {
    "int": {"int"},
    "number": {"int", "float"},
    "string": {"string"},
    "bool": {"bool"},
    "null": {"null"},
    "object": {"object"},
}


def accepted_kinds(accepts: str) -> set[str]:
    kinds: set[str] = set()
    for alternative in accepts.split("|"):
        alternative = alternative.strip()
        kinds |= {"list"} if alternative.startswith("list[") else _ACCEPTS[alternative]
    return kinds


def full_record() -> dict[str, Any]:
    """A record with every field of the schema, as the logger writes them."""
    record = malformed.good_record(0)
    sample = record["samples"][0]
    sample["output_summary"] = {"shape": [4, None], "min": 0.0, "max": 1.0, "mean": 0.5}
    sample["device"] = 1
    sample["process"] = 0
    sample["head_losses"] = {"cls": 0.25, "box": None}
    sample["input_size"] = [480, 640]
    record["image_key"] = "image"
    record["image_source"] = "rescaling"
    record["preprocessing"] = "caffe"
    record["output"] = "cls"
    record["masks"] = "classes"
    record["mask_shape"] = [8, 8]
    sample.update(
        label_mask=4,
        prediction_mask=5,
        pixel_accuracy=0.75,
        mean_iou=0.5,
        mask_classes=[0, 2],
        label_range=[0.0, 2.5],
        prediction_range=[-1.0, 1.0],
    )
    record.update(
        box_format="rel_xyxy",
        box_predictions="model",
        max_boxes=100,
        box_iou_threshold=0.5,
    )
    sample["boxes"] = {
        "count": 3,
        "label": [[1.5, 2.0, 10.25, 12.0], [0.0, 0.0, 4.0, 4.0]],
        "label_classes": [1, 2.5],
        "label_flags": [[], ["tiny", "label_out_of_range"]],
        "label_iou": [0.75, None],
        "prediction_count": 1,
        "prediction": [[1.0, 2.0, 10.0, 12.0]],
        "prediction_classes": [1],
        "prediction_scores": [0.875],
        "prediction_iou": [0.75],
        "mean_iou": 0.375,
        "missed": 1,
        "spurious": 0,
    }
    return record


def status_record() -> dict[str, Any]:
    return {
        "format_version": 1,
        "mode": "train",
        "wall_time": 1_700_000_000.5,
        "batches_written": 3,
        "dropped": {"queue_full": 0, "error": 0, "not_image": 0},
        "warnings": ["the input values match no known range"],
    }


def _encode(record: Any) -> bytes:
    return json.dumps(record, allow_nan=True).encode("utf-8")


def test_docs_state_every_field_the_validator_checks():
    tables = documented_tables()
    assert set(tables) == set(TABLES)
    for title, schema in TABLES.items():
        assert set(tables[title]) == set(schema.fields), title


# (table, where the field sits in a record, record maker, the check entry point)
_PLACES = [
    ("Batch record", (), full_record, validate.check_batch_record),
    ("Sample (an item of `samples`)", ("samples", 0), full_record, None),
    ("An item of `top_k`", ("samples", 0, "top_k", 0), full_record, None),
    ("`output_summary`", ("samples", 0, "output_summary"), full_record, None),
    ("`boxes`", ("samples", 0, "boxes"), full_record, None),
    (
        "Status record (a status record that cannot be used is ignored, with a log line)",
        (),
        status_record,
        validate.check_status_record,
    ),
]
_WRONG_TYPES = [
    (title, place, make, check or validate.check_batch_record, field, kind)
    for title, place, make, check in _PLACES
    for field, accepts in documented_tables()[title].items()
    for kind in KINDS
    if kind not in accepted_kinds(accepts)
]


# What docs/format.md says is filled in for a sample (at index 0) without the field.
_SAMPLE_DEFAULTS = {"position": 0, "flags": [], "top_k": []}


def _path(place: tuple[Any, ...], field: str) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in place)
    return (text + "." + field).lstrip(".")


def _at(record: Any, place: tuple[Any, ...]) -> Any:
    for key in place:
        record = record[key]
    return record


@pytest.mark.parametrize(
    "title, place, make, check, field, kind",
    _WRONG_TYPES,
    ids=[
        ("status:" if t.startswith("Status") else "") + f"{_path(p, f)}={k}"
        for t, p, _, _, f, k in _WRONG_TYPES
    ],
)
def test_a_field_of_a_type_its_row_does_not_accept_is_dropped_with_a_warning(
    title, place, make, check, field, kind
):
    record = make()
    _at(record, place)[field] = copy.deepcopy(KINDS[kind])
    checked = check(_encode(record))
    path = _path(place, field)
    if field in ("format_version", "samples") and not place:  # unusable: broken
        assert checked.record is None and field in checked.error
        return
    assert checked.error is None
    kept = _at(checked.record, place)
    if place == ("samples", 0) and field in _SAMPLE_DEFAULTS:  # docs: filled in
        assert kept[field] == _SAMPLE_DEFAULTS[field]
    else:
        assert field not in kept
    assert any(line.startswith(path + ":") for line in checked.warnings), (
        path,
        checked.warnings,
    )


def test_every_field_of_a_complete_record_is_kept_with_no_warning():
    for make, check in [
        (full_record, validate.check_batch_record),
        (status_record, validate.check_status_record),
    ]:
        record = make()
        checked = check(_encode(record))
        assert (checked.error, checked.warnings, checked.changed) == (None, (), False)
        assert checked.record == record


def test_records_the_logger_writes_pass_with_no_warning(keras_logdir: Path):
    """Every index entry, batch record (in its pack) and status record the real
    BatchImageLogger wrote."""
    import tensorflow as tf

    seen = {"entries": 0, "records": 0, "status": 0}
    for path in sorted(keras_logdir.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == fmt.STATUS_TAG:
                    data = value.tensor.string_val[0]
                    checked = validate.check_status_record(data)
                    assert (checked.error, checked.warnings) == (None, ())
                    assert checked.record == json.loads(data)
                    seen["status"] += 1
                elif value.tag.startswith(fmt.INDEX_TAG_PREFIX):
                    (data,) = value.tensor.string_val
                    assert len(data) < 300  # small enough for a million steps
                    entry = fmt.check_index_entry(data, event.step)
                    assert entry.error is None and entry.samples_logged == 4
                    seen["entries"] += 1
                    elements = fmt.read_pack(str(path.parent), entry, _read)
                    checked = validate.check_batch_record(elements[0])
                    assert (checked.error, checked.warnings) == (None, ())
                    assert not checked.changed
                    assert checked.record == json.loads(elements[0])
                    assert checked.record["wall_time"] == entry.wall_time
                    seen["records"] += 1
                else:
                    assert not value.tag.startswith(fmt.BATCHES_TAG + "/")
    assert all(seen.values()), seen
    # Under a keras.distribution the logger also writes each sample's device and
    # process (`tb_batch_images/record.py`); the validator keeps them.
    record = full_record()
    assert validate.check_batch_record(_encode(record)).warnings == ()


def test_box_lists_of_another_length_than_their_boxes_are_dropped():
    """The lists of one side run in parallel with its boxes (docs/format.md)."""
    record = full_record()
    boxes = record["samples"][0]["boxes"]
    boxes["label_classes"] = [1]  # two label boxes
    boxes["prediction_scores"] = [0.5, 0.25]  # one predicted box
    checked = validate.check_batch_record(_encode(record))
    kept = checked.record["samples"][0]["boxes"]
    assert "label_classes" not in kept and "prediction_scores" not in kept
    assert kept["label"] == boxes["label"] and kept["prediction_classes"] == [1]
    assert any(
        "boxes.label_classes: 1 items for 2 label" in w for w in checked.warnings
    )
    assert any("boxes.prediction_scores" in w for w in checked.warnings)


def _read(path: str, limit: int) -> bytes:
    with open(path, "rb") as file:
        return file.read(limit)


def test_version_1_records_read_as_they_are():
    """Logs written before masks (format version 1) are read with no warning."""
    record = malformed.good_record(0)
    record["format_version"] = 1
    checked = validate.check_batch_record(_encode(record))
    assert checked.error is None and not checked.warnings
    assert checked.record["samples"] == record["samples"]
    assert fmt.FORMAT_VERSION == 3


def test_a_newer_format_version_is_a_broken_step_that_says_to_upgrade():
    record = full_record()
    record["format_version"] = fmt.FORMAT_VERSION + 1
    checked = validate.check_batch_record(_encode(record))
    assert checked.record is None
    assert "newer" in checked.error and "upgrade" in checked.error


@pytest.mark.parametrize("depth", [1_000, 10_000, 1_000_000])
def test_json_nested_too_deeply_to_parse_is_a_broken_step(depth: int):
    data = b'{"format_version": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"
    checked = validate.check_batch_record(data)
    assert checked.record is None and "nested too deeply" in checked.error


def test_warnings_are_bounded():
    record = full_record()
    record["samples"] = [{"flags": "x"} for _ in range(1000)]
    checked = validate.check_batch_record(_encode(record))
    assert len(checked.warnings) == validate.MAX_WARNINGS + 1
    assert checked.warnings[-1] == f"and {1000 - validate.MAX_WARNINGS} more"
    assert len(checked.record["samples"]) == 1000


# -- fuzz: hypothesis ----------------------------------------------------------------
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**100), max_value=2**100),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=16),
    st.sampled_from(
        ["", "x" * 100_000, malformed.MARKUP, "\x00", "\ud800", "train", "png"]
    ),
)
JSON_VALUES = st.recursive(
    _LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def mutated_records(draw: Any) -> bytes:
    """A complete record with a few fields replaced, removed or added."""
    record = full_record()
    record["samples"] = record["samples"][: draw(st.integers(1, 4))]
    places = [((), validate.BATCH_RECORD)]
    places += [
        (("samples", index), validate.SAMPLE) for index in range(len(record["samples"]))
    ]
    for _ in range(draw(st.integers(1, 4))):
        place, schema = draw(st.sampled_from(places))
        target = _at(record, place)
        action = draw(st.sampled_from(["set", "set", "set", "remove", "add", "deep"]))
        field = draw(st.sampled_from(sorted(schema.fields)))
        if action == "set":
            target[field] = draw(JSON_VALUES)
        elif action == "remove":
            target.pop(field, None)
        elif action == "add":
            target[draw(st.text(min_size=1, max_size=12))] = draw(JSON_VALUES)
        else:
            target[field] = _deep(draw(st.integers(1, 900)))
        if "samples" not in record or not isinstance(record["samples"], list):
            break  # the samples are gone: no place inside them is left
        places = [p for p in places if not p[0] or p[0][1] < len(record["samples"])]
        places = [p for p in places if not p[0] or isinstance(_at(record, p[0]), dict)]
    if draw(st.booleans()) and draw(st.booleans()):
        record["format_version"] = draw(st.integers(min_value=2, max_value=2**70))
    return _encode(record)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    return 0


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _leaves(item)
    else:
        yield value


def assert_within_the_schema(checked: validate.Checked) -> None:
    """What the validator keeps is strict, bounded JSON that checks clean again."""
    assert (checked.record is None) != (checked.error is None)
    if checked.record is None:
        assert isinstance(checked.error, str) and checked.error
        return
    record = checked.record
    strict = json.dumps(record, allow_nan=False)  # no NaN, no Infinity
    # record, samples, a sample, output_summary, shape (or boxes, label, a box)
    assert _depth(record) <= 6
    for leaf in _leaves(record):
        if isinstance(leaf, str):
            assert len(leaf) <= validate.MAX_TEXT_CHARS
        elif isinstance(leaf, int) and not isinstance(leaf, bool):
            assert abs(leaf) <= validate.MAX_SAFE_INTEGER
        elif isinstance(leaf, float):
            assert math.isfinite(leaf)
    assert len(checked.warnings) <= validate.MAX_WARNINGS + 1
    for sample in record["samples"]:
        assert isinstance(sample["position"], int)
        assert all(isinstance(flag, str) for flag in sample["flags"])
        assert all(isinstance(item, dict) for item in sample["top_k"])
    again = validate.check_batch_record(strict.encode("utf-8"))
    assert (again.record, again.warnings) == (record, ())


@settings(max_examples=300, deadline=None)
@given(mutated_records())
def test_fuzzed_records_give_a_usable_record_or_a_broken_step(data: bytes):
    assert_within_the_schema(validate.check_batch_record(data))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), JSON_VALUES.map(_encode)))
def test_any_bytes_or_json_give_a_usable_record_or_a_broken_step(data: bytes):
    assert_within_the_schema(validate.check_batch_record(data))
    status = validate.check_status_record(data)
    assert (status.record is None) != (status.error is None)
    if status.record is not None:
        json.dumps(status.record, allow_nan=False)


# -- the routes, over fuzzed records -----------------------------------------------------
def _strict_json(body: bytes) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} in an answer: not JSON")

    return json.loads(body, parse_constant=refuse)


class Routes:
    """GETs of a plugin route that must never be a 5xx; JSON answers must be strict."""

    def __init__(self, server: PluginServer):
        self.server = server

    def get(self, route: str, **params: Any) -> tuple[int, bytes]:
        response = self.server.get(route, **params)
        body = response.get_data()
        assert response.status_code < 500, (route, params, body[:2000])
        if response.mimetype == "application/json":
            _strict_json(body)
        return response.status_code, body

    def every_route(self, run: str, step: int) -> dict[str, Any]:
        """GETs every route for one step; returns its /samples answer."""
        self.get("/runs")
        assert self.get("/steps", run=run)[0] == 200
        status, body = self.get("/samples", run=run, step=step)
        assert status == 200
        batch = _strict_json(body)
        for sample in batch["samples"]:
            if sample.get("image"):
                assert self.get("/image", key=sample["image"])[0] == 200
            for mask in ("label_mask_image", "prediction_mask_image"):
                if sample.get(mask):
                    assert self.get("/image", key=sample[mask])[0] == 200
            if isinstance(sample.get("filename"), str) and sample["filename"]:
                assert self.get("/history", filename=sample["filename"])[0] == 200
            if isinstance(sample.get("sample_id"), int):
                assert self.get("/history", sample_id=sample["sample_id"])[0] == 200
        return batch

    def healthy(self) -> None:
        """The good run of the corpus still answers every route in full."""
        runs = {run["run"] for run in _strict_json(self.get("/runs")[1])["runs"]}
        assert {malformed.GOOD_RUN, malformed.MALFORMED_RUN} <= runs
        steps = _strict_json(self.get("/steps", run=malformed.GOOD_RUN)[1])["steps"]
        assert len(steps) == malformed.GOOD_STEPS
        for step in steps:
            batch = self.every_route(malformed.GOOD_RUN, step["step"])
            assert batch["error"] is None and batch["warnings"] == []
            status, image = self.get("/image", key=batch["samples"][0]["image"])
            assert status == 200 and image.startswith(b"\x89PNG")


class FuzzBoard:
    """The plugin (in-process loader) over the malformed corpus and a run that grows
    by one fuzzed step per example."""

    RUN = "fuzz/train"

    def __init__(self, logdir: Path):
        from benchmarks import make_logdir
        from tests.fixtures.logdirs import StepWriter

        malformed.write_corpus(logdir)
        self.server = PluginServer(logdir, load_fast=False)
        self.routes = Routes(self.server)
        self.writer = StepWriter(logdir / self.RUN)
        self.pool = make_logdir.png_pool(4, malformed.IMAGE_SIZE)
        self.steps = itertools.count()

    def write(self, element_0: bytes, images: int) -> int:
        """Writes one step with the logger's own writer; TensorBoard reloads."""
        step = next(self.steps)
        self.writer.step(step, [element_0, *self.pool[:images]])
        self.server.reload()
        return step


@pytest.fixture(scope="module")
def fuzz_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzBoard]:
    board = FuzzBoard(tmp_path_factory.mktemp("fuzz_logs"))
    yield board
    board.writer.close()
    board.server.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=mutated_records(), images=st.integers(0, 4))
def test_fuzzed_records_written_to_event_files_never_make_a_route_fail(
    fuzz_board: FuzzBoard, data: bytes, images: int
):
    step = fuzz_board.write(data, images)
    batch = fuzz_board.routes.every_route(FuzzBoard.RUN, step)
    checked = validate.check_batch_record(data)
    assert batch["error"] == checked.error
    assert isinstance(batch["warnings"], list)


_PARAMS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "-1",
            "1e3",
            "1.5",
            str(2**63),
            "9" * 40,
            FuzzBoard.RUN,
            malformed.MALFORMED_RUN,
            malformed.GOOD_RUN,
            "../../etc/passwd",
            malformed.MARKUP,
        ]
    ),
)
_ROUTES = [
    "/runs",
    "/steps",
    "/samples",
    "/image",
    "/history",
    "/index.js",
    "/static/x",
]
_NAMES = [
    "run",
    "tag",
    "step",
    "offset",
    "limit",
    "key",
    "filename",
    "sample_id",
    "runs",
]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    route=st.sampled_from(_ROUTES),
    params=st.dictionaries(st.sampled_from(_NAMES), _PARAMS, max_size=4),
)
def test_fuzzed_request_parameters_get_200_or_a_4xx(
    fuzz_board: FuzzBoard, route: str, params: dict[str, str]
):
    fuzz_board.routes.get(route, **params)


def test_the_server_stays_healthy_after_the_fuzzing(fuzz_board: FuzzBoard):
    fuzz_board.routes.healthy()


# -- the malformed corpus, through both providers and read_batches ---------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logdir = tmp_path_factory.mktemp("malformed_logs")
    malformed.write_corpus(logdir)
    return logdir


def _assert_case(case: malformed.Case, error: str | None, warnings: list[str]) -> None:
    if case.broken:
        assert error is not None and case.broken in error, (case.name, error)
        return
    assert error is None, (case.name, error)
    for path in case.warned:
        assert any(line.startswith(path) for line in warnings), (case.name, warnings)
    if not case.warned:
        assert warnings == [], (case.name, warnings)


@LOAD_FAST
def test_every_malformed_step_is_served_or_listed_broken_in_both_providers(
    load_fast: bool, corpus: Path, plugin_server: Any
):
    server = plugin_server(corpus, load_fast)
    server.wait_for_steps(
        {
            malformed.MALFORMED_RUN: len(malformed.CASES),
            malformed.GOOD_RUN: malformed.GOOD_STEPS,
        }
    )
    runs = {run["run"]: run for run in server.json("/runs")["runs"]}
    # The status record of every wrong type is ignored: no 500, no invented counts.
    assert runs[malformed.MALFORMED_RUN]["warnings"] == []
    routes = Routes(server)
    steps = server.json("/steps", run=malformed.MALFORMED_RUN)["steps"]
    assert [step["step"] for step in steps] == list(range(len(malformed.CASES)))
    for case, summary in zip(malformed.CASES, steps, strict=True):
        batch = routes.every_route(malformed.MALFORMED_RUN, summary["step"])
        _assert_case(case, batch["error"], batch["warnings"])
        # Format version 3 lists steps from their index entries (the writer's own,
        # sound here): a record's problems show when its step is read.
        assert summary["error"] is None
        if case.usable:
            with_images = [s for s in batch["samples"] if s["image"]]
            assert len(with_images) == min(case.images, len(batch["samples"]))
    routes.healthy()


def test_read_batches_yields_broken_steps_with_their_error(corpus: Path):
    from tb_batch_images import read_batches

    batches = list(read_batches(str(corpus), run=malformed.MALFORMED_RUN))
    assert [batch.step for batch in batches] == list(range(len(malformed.CASES)))
    for case, batch in zip(malformed.CASES, batches, strict=True):
        _assert_case(case, batch.error, batch.warnings)
        if case.usable:
            assert all(
                sample.image is not None for sample in batch.samples[: case.images]
            )
        else:
            assert batch.samples == [] and batch.record == {}
