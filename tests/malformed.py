"""A log directory of hand-made malformed steps, written with the real summary writer.

Shared logs are written by other versions, damaged, or made by hand; these are the
shapes such records take. `write_corpus(logdir)` writes, through the writer's own
`write_summary` (the bytes TensorBoard reads are exactly what a logger would write):

- `malformed/train`: step i holds `CASES[i]` (a record that is fine, one the validator
  repairs with warnings, or one it cannot use: a broken step), and a status record
  whose fields are all of the wrong type (its string `wall_time` once made `/runs` a 500);
- `good/train`: `GOOD_STEPS` ordinary steps, to check that other runs stay usable.

Each `Case` says what a reader must make of it (`broken`: words of the error;
`warned`: the field paths its warnings name), so the plugin tests and the browser test
check the same expectations.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import make_logdir
from tb_batch_images import contract as fmt

MARKUP = "<img src=x onerror=alert(1)>"
IMAGE_SIZE = 8
SAMPLES = 4
GOOD_STEPS = 3
MALFORMED_RUN = "malformed/train"
GOOD_RUN = "good/train"


@dataclasses.dataclass(frozen=True)
class Case:
    """One step of `malformed/train`."""

    name: str
    element_0: bytes | None  # None: a value with no elements at all
    images: int = SAMPLES
    broken: str | None = None  # words of the step's error; None: the step is usable
    warned: tuple[str, ...] = ()  # field paths its warnings name

    @property
    def usable(self) -> bool:
        return self.broken is None


def good_record(step: int, samples: int = SAMPLES) -> dict[str, Any]:
    """A complete record as the logger writes it (docs/format.md), through JSON."""
    record = make_logdir.batch_record(
        mode="train",
        step=step,
        epoch=0,
        batch=step,
        sequence=step,
        sample_ids=list(range(step * samples, (step + 1) * samples)),
        image_size=IMAGE_SIZE,
        wall_time=1_700_000_000.0 + step,
    )
    record["backend"] = "tensorflow"
    return json.loads(fmt.encode_record(record))


def _edited(edit: Callable[[dict[str, Any]], None]) -> Callable[[int], bytes]:
    def element_0(step: int) -> bytes:
        record = copy.deepcopy(good_record(step))
        edit(record)
        return json.dumps(record).encode("utf-8")

    return element_0


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit setting `samples.0.flags`-style paths."""

    def edit(record: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = record
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[int(last) if isinstance(target, list) else last] = value

    return edit


def _all(*edits: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(record: dict[str, Any]) -> None:
        for one in edits:
            one(record)

    return edit


def _every_field_wrong(record: dict[str, Any]) -> None:
    for key in list(record):
        if key not in ("format_version", "samples"):
            record[key] = 5 if isinstance(record[key], str) else "wrong"
    for sample in record["samples"]:
        for key in list(sample):
            sample[key] = {"nested": [1]} if key != "position" else "first"


def _raw(text: str) -> Callable[[int], bytes]:
    return lambda step: text.replace("STEP", str(step)).encode("utf-8")


_DEEP = 100_000
# (name, element 0 for a step, keyword arguments of Case)
_CASES: list[tuple[str, Callable[[int], bytes] | None, dict[str, Any]]] = [
    ("good", _edited(lambda record: None), {}),
    (
        "class_names_object",
        _edited(_set("class_names", {"0": "cat", "1": "dog"})),
        {"warned": ("class_names",)},
    ),
    (
        "flags_string",
        _edited(_set("samples.0.flags", "nan")),
        {"warned": ("samples[0].flags",)},
    ),
    ("not_utf8", lambda step: b"\xff\xfe not UTF-8", {"broken": "not UTF-8"}),
    ("not_json", _raw('{"format_version": 1, "samples": ['), {"broken": "not JSON"}),
    ("not_an_object", _raw("[1, 2, 3]"), {"broken": "not a JSON object"}),
    (
        "newer_version",
        _edited(_set("format_version", fmt.FORMAT_VERSION + 1)),
        {"broken": "newer"},
    ),
    (
        "no_version",
        _raw('{"samples": [], "step": STEP}'),
        {"broken": "format_version"},
    ),
    (
        "nested_too_deeply",
        _raw('{"format_version": 1, "x": ' + "[" * _DEEP + "]" * _DEEP + "}"),
        {"broken": "nested too deeply"},
    ),
    (
        "nested_in_a_field",
        _edited(_set("samples.0.label", json.loads("[" * 500 + "]" * 500))),
        {"warned": ("samples[0].label",)},
    ),
    (
        "huge_strings",
        _edited(
            _all(
                _set("samples.0.filename", "f" * 100_000 + ".png"),
                _set("samples.1.label_name", "n" * 100_000),
            )
        ),
        {"warned": ("samples[0].filename", "samples[1].label_name")},
    ),
    (
        "nan_and_infinity",
        _edited(
            _all(
                _set("samples.0.loss", float("nan")),
                _set("samples.1.confidence", float("inf")),
                _set("value_range", [float("-inf"), 1.0]),
            )
        ),
        {"warned": ("samples[0].loss", "samples[1].confidence", "value_range")},
    ),
    (
        "huge_and_negative_numbers",
        _edited(
            _all(
                _set("epoch", -5),
                _set("batch_size", 10**30),
                _set("wall_time", 1e300),
                _set("samples.0.position", 1e300),
                _set("samples.1.loss", -1e308),  # a number: kept
                _set("samples.2.image_shape", [10**12, 8, 3]),
            )
        ),
        {
            "warned": (
                "epoch",
                "batch_size",
                "wall_time",
                "samples[0].position",
                "samples[2].image_shape",
            )
        },
    ),
    (
        "samples_not_a_list",
        _edited(_set("samples", {"0": {"filename": "a.png"}})),
        {"broken": "samples"},
    ),
    (
        "a_sample_not_an_object",
        _edited(_set("samples.1", "junk")),
        {"warned": ("samples[1]",)},
    ),
    (
        "missing_fields",
        _raw('{"format_version": 1, "samples": [{"filename": "bare.png"}]}'),
        {"images": 1},
    ),
    (
        "unknown_fields",
        _edited(
            _all(
                _set("future_field", {"deep": [1, 2]}),
                _set("samples.0.future_sample_field", "x"),
            )
        ),
        {"warned": ("future_field", "samples[0].future_sample_field")},
    ),
    (
        "every_field_of_the_wrong_type",
        _edited(_every_field_wrong),
        {"warned": ("mode", "epoch")},
    ),
    (
        "markup_in_strings",
        _edited(
            _all(
                _set("class_names", [MARKUP, "dog", "bird"]),
                _set("samples.0.filename", MARKUP),
                _set("samples.0.label_name", MARKUP),
                _set("samples.0.flags", [MARKUP]),
                _set(MARKUP, 1),
            )
        ),
        {"warned": (MARKUP,)},
    ),
    ("no_elements", None, {"images": 0, "broken": "empty"}),
    (
        "fewer_images_than_samples",
        _edited(lambda record: None),
        {"images": 2, "warned": (f"{SAMPLES} samples but 2 images",)},
    ),
    (
        "bad_items_in_lists",
        _edited(
            _all(
                _set("samples.0.top_k", [{"class": "a"}, 5, {"class": 1}]),
                _set("samples.1.flags", ["nan", 3, None]),
                _set("input_shape", [8, "8", 3]),
            )
        ),
        {"warned": ("samples[0].top_k", "samples[1].flags", "input_shape")},
    ),
]


CASES = [
    Case(name, None if element_0 is None else element_0(step), **options)
    for step, (name, element_0, options) in enumerate(_CASES)
]

# A status record with every field of the wrong type (docs/format.md: ignored).
BAD_STATUS = json.dumps(
    {
        "format_version": 1,
        "mode": ["train"],
        "wall_time": "yesterday",
        "batches_written": "many",
        "dropped": {"queue_full": "lots"},
        "warnings": 5,
    }
).encode("utf-8")


def write_corpus(logdir: str | Path) -> None:
    """Writes `malformed/train` (one step per case) and `good/train` under logdir."""
    import tensorflow as tf

    from tb_batch_images.host.writer import write_summary

    pool = make_logdir.png_pool(SAMPLES, IMAGE_SIZE)
    writer = tf.summary.create_file_writer(str(Path(logdir) / MALFORMED_RUN))
    try:
        for step, case in enumerate(CASES):
            elements = [] if case.element_0 is None else [case.element_0]
            elements += pool[: case.images]
            write_summary(writer, fmt.BATCHES_TAG, fmt.SERIES_BATCHES, step, elements)
        write_summary(
            writer, fmt.STATUS_TAG, fmt.SERIES_STATUS, len(CASES) - 1, [BAD_STATUS]
        )
    finally:
        writer.close()
    make_logdir.write_run(
        Path(logdir) / GOOD_RUN,
        steps=GOOD_STEPS,
        images_per_step=SAMPLES,
        image_size=IMAGE_SIZE,
        dataset_size=40,
    )
