"""Checks batch and status records against the schema of docs/format.md ("Validation").

One validator for every reader: the TensorBoard plugin (before it caches and serves a
record) and `tb_batch_images.read_batches`. Log directories are shared, downloaded, or
written by another version; a reader shows what it can and says what it could not:

- a field of the wrong type is dropped (`flags` and `top_k` keep their good items);
- a number out of range is clamped; a string or list that is too long is cut;
- NaN and +-Infinity become null where null is allowed, else the field is dropped;
- a field the schema does not know is dropped;

and each of these adds a line to `warnings`. A record that cannot be used at all (not
UTF-8 JSON, not an object, nested too deeply to parse, too large, no `format_version`
or a newer one, `samples` not a list) gives an `error` and no record: a broken step.

The schema is the tables below (`BATCH_RECORD`, `SAMPLE`, `STATUS_RECORD`); the
docs state the same, field by field, and `tests/contract/test_validate.py` holds both to it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from typing import Any

from tb_batch_images.contract import names
from tb_batch_images.contract.limits import (
    MAX_BOXES,
    MAX_CLASSES,
    MAX_COUNTERS,
    MAX_DIMS,
    MAX_FLAGS,
    MAX_HEAD_NAME_CHARS,
    MAX_HEADS,
    MAX_IMAGE_SIDE,
    MAX_MASK_CLASSES,
    MAX_RAW_VALUES,
    MAX_RECORD_BYTES,
    MAX_SAFE_INTEGER,
    MAX_SAMPLES,
    MAX_STATUS_WARNINGS,
    MAX_TEXT_CHARS,
    MAX_TOP_K,
    MAX_WALL_TIME,
    MAX_WARNINGS,
)

_DROP = object()  # a check's answer for "leave this field out"

# Where a value is: "" (the record), or (where its container is, its key or index).
Path = str | tuple[Any, str | int]


@dataclasses.dataclass(frozen=True)
class Checked:
    """The outcome of checking one record.

    `record` is the usable record (None when `error` says why there is none);
    `warnings` says what was dropped, clamped or cut; `changed` is False when `record`
    is exactly what was written.
    """

    record: dict[str, Any] | None
    error: str | None = None
    warnings: tuple[str, ...] = ()
    changed: bool = False


class _Report:
    """Collects what a check changed, at most MAX_WARNINGS lines of it."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.more = 0
        self.changed = False

    def add(self, path: Path, problem: str) -> None:
        self.changed = True
        if len(self.lines) < MAX_WARNINGS:
            self.lines.append(f"{_path_text(path)}: {problem}")
        else:
            self.more += 1

    def wrong_type(self, path: Path, expected: str, value: Any) -> None:
        self.add(path, f"expected {expected}, got {_kind(value)}; dropped")

    def warnings(self) -> tuple[str, ...]:
        if self.more:
            return (*self.lines, f"and {self.more} more")
        return tuple(self.lines)


# -- checks: one per kind of field -------------------------------------------------
class _Check:
    """A field's type: `check` answers the value to keep, or _DROP."""

    expected = "a value"
    plural = "values"  # "a list of <plural>"
    nullable = False

    def matches(self, value: Any) -> bool:
        """Whether the value has this check's JSON kind (null aside)."""
        raise NotImplementedError

    def check(self, value: Any, path: Path, report: _Report) -> Any:
        if value is None:
            if self.nullable:
                return None
            report.wrong_type(path, self.expected, value)
            return _DROP
        if not self.matches(value):
            report.wrong_type(path, self.describe(), value)
            return _DROP
        return self.check_value(value, path, report)

    def check_value(self, value: Any, path: Path, report: _Report) -> Any:
        return value

    def describe(self) -> str:
        return self.expected + (" or null" if self.nullable else "")


class _Int(_Check):
    expected = "an integer"
    plural = "integers"

    def __init__(
        self,
        low: int = 0,
        high: int = MAX_SAFE_INTEGER,
        nullable: bool = False,
    ):
        self.low, self.high, self.nullable = low, high, nullable

    def matches(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def check(self, value: Any, path: Path, report: _Report) -> Any:
        if type(value) is int and self.low <= value <= self.high:
            return value  # the common case, first: records are checked in bulk
        return super().check(value, path, report)

    def check_value(self, value: int, path: Path, report: _Report) -> int:
        if value < self.low or value > self.high:
            clamped = min(max(value, self.low), self.high)
            report.add(path, f"{_number(value)} is out of range; clamped to {clamped}")
            return clamped
        return value


class _Number(_Check):
    """Any JSON number (integers too), finite."""

    expected = "a number"
    plural = "numbers"

    def __init__(
        self,
        low: float = -sys.float_info.max,
        high: float = sys.float_info.max,
        nullable: bool = False,
    ):
        self.low, self.high, self.nullable = low, high, nullable

    def matches(self, value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    def check(self, value: Any, path: Path, report: _Report) -> Any:
        # The common case, first (NaN and +-Infinity fail the comparison).
        if type(value) is float and self.low <= value <= self.high:
            return value
        if value is None and self.nullable:
            return None
        return super().check(value, path, report)

    def check_value(self, value: float, path: Path, report: _Report) -> Any:
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf if value > 0 else -math.inf
        if not math.isfinite(number):
            if self.nullable:
                report.add(path, f"{_number(value)} is not a finite number; null")
                return None
            report.add(path, f"{_number(value)} is not a finite number; dropped")
            return _DROP
        if number < self.low or number > self.high:
            clamped = min(max(number, self.low), self.high)
            report.add(path, f"{_number(value)} is out of range; clamped to {clamped}")
            return clamped
        if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
            report.changed = True  # as JavaScript reads it
            return number
        return value


class _Bool(_Check):
    expected = "true or false"
    plural = "true/false values"

    def __init__(self, nullable: bool = False):
        self.nullable = nullable

    def matches(self, value: Any) -> bool:
        return isinstance(value, bool)

    def check(self, value: Any, path: Path, report: _Report) -> Any:
        if type(value) is bool:
            return value
        return super().check(value, path, report)


class _Text(_Check):
    expected = "a string"
    plural = "strings"

    def __init__(
        self,
        nullable: bool = False,
        choices: tuple[str, ...] | None = None,
        max_chars: int = MAX_TEXT_CHARS,
    ):
        self.nullable, self.choices, self.max_chars = nullable, choices, max_chars

    def matches(self, value: Any) -> bool:
        return isinstance(value, str)

    def check(self, value: Any, path: Path, report: _Report) -> Any:
        if (
            type(value) is str
            and len(value) <= self.max_chars
            and (self.choices is None or value in self.choices)
        ):
            return value
        if value is None and self.nullable:
            return None
        return super().check(value, path, report)

    def check_value(self, value: str, path: Path, report: _Report) -> Any:
        if self.choices is not None and value not in self.choices:
            choices = ", ".join(self.choices)
            report.add(path, f"not one of {choices}; dropped")
            return _DROP
        if len(value) > self.max_chars:
            report.add(
                path, f"{len(value)} characters; cut to the first {self.max_chars}"
            )
            return value[: self.max_chars]
        return value


class _List(_Check):
    """A list of `item`s, at most `max_items` (cut), or exactly `length` items.

    A bad item drops the whole list, unless `keep_good_items` (order-free lists).
    """

    expected = "a list"
    plural = "lists"

    def __init__(
        self,
        item: _Check,
        max_items: int,
        *,
        nullable: bool = False,
        keep_good_items: bool = False,
        length: int | None = None,
    ):
        self.item, self.max_items, self.nullable = item, max_items, nullable
        self.keep_good_items, self.length = keep_good_items, length

    def matches(self, value: Any) -> bool:
        return isinstance(value, list)

    def describe(self) -> str:
        items = self.item.plural + (" (or nulls)" if self.item.nullable else "")
        return f"a list of {items}" + (" or null" if self.nullable else "")

    def check_value(self, value: list, path: Path, report: _Report) -> Any:
        if self.length is not None and len(value) != self.length:
            report.add(path, f"{len(value)} items, not {self.length}; dropped")
            return _DROP
        if len(value) > self.max_items:
            report.add(path, f"{len(value)} items; cut to the first {self.max_items}")
            value = value[: self.max_items]
        kept = []
        for index, item in enumerate(value):
            item_path = (path, index)
            if not self.keep_good_items and not (
                (item is None and self.item.nullable) or self.item.matches(item)
            ):
                report.add(
                    item_path,
                    f"expected {self.item.describe()}, got {_kind(item)}; "
                    f"{_path_text(path)} dropped",
                )
                return _DROP
            checked = self.item.check(item, item_path, report)
            if checked is _DROP:
                if self.keep_good_items:
                    continue
                report.add(path, "holds an unusable item; dropped")
                return _DROP
            kept.append(checked)
        return kept


class _Either(_Check):
    """The first of several checks whose JSON kind the value has."""

    def __init__(self, *choices: _Check, nullable: bool = False):
        self.choices, self.nullable = choices, nullable
        self.plural = " or ".join(choice.plural for choice in choices)

    def matches(self, value: Any) -> bool:
        return any(choice.matches(value) for choice in self.choices)

    def describe(self) -> str:
        kinds = " or ".join(choice.describe() for choice in self.choices)
        return kinds + (" or null" if self.nullable else "")

    def check_value(self, value: Any, path: Path, report: _Report) -> Any:
        choice = next(choice for choice in self.choices if choice.matches(value))
        return choice.check(value, path, report)


class _Counts(_Check):
    """An object of non-negative integer counts by name (`dropped`)."""

    expected = "an object of counts"

    def matches(self, value: Any) -> bool:
        return isinstance(value, dict)

    def check_value(self, value: dict, path: Path, report: _Report) -> dict:
        counts = {}
        count_check = _Int()
        for name, count in list(value.items())[:MAX_COUNTERS]:
            key = name[:64]
            checked = count_check.check(count, (path, key), report)
            if checked is not _DROP:
                counts[key] = checked
        if len(value) > MAX_COUNTERS:
            report.add(path, f"{len(value)} keys; cut to the first {MAX_COUNTERS}")
        return counts


class _NumberMap(_Check):
    """An object of numbers (or nulls) by name (`head_losses`), in written order."""

    expected = "an object of numbers"

    def __init__(self, max_keys: int, max_key_chars: int):
        self.max_keys, self.max_key_chars = max_keys, max_key_chars

    def matches(self, value: Any) -> bool:
        return isinstance(value, dict)

    def check_value(self, value: dict, path: Path, report: _Report) -> dict:
        numbers = {}
        number_check = _Number(nullable=True)
        for name, number in list(value.items())[: self.max_keys]:
            key = name[: self.max_key_chars]
            if key != name:
                report.add(
                    (path, key), f"name of {len(name)} characters; cut to {len(key)}"
                )
            checked = number_check.check(number, (path, key), report)
            if checked is not _DROP:
                numbers[key] = checked
        if len(value) > self.max_keys:
            report.add(path, f"{len(value)} keys; cut to the first {self.max_keys}")
        return numbers


class _Object(_Check):
    """An object with known fields; unknown fields are dropped, `defaults` filled in."""

    expected = "an object"
    plural = "objects"

    def __init__(
        self,
        fields: dict[str, _Check],
        nullable: bool = False,
        defaults: dict[str, Any] | None = None,
    ):
        self.fields, self.nullable = fields, nullable
        self.defaults = defaults or {}

    def matches(self, value: Any) -> bool:
        return isinstance(value, dict)

    def check_value(self, value: dict, path: Path, report: _Report) -> dict:
        checked = {}
        for name, field_value in value.items():
            field_path = (path, name)  # formatted only for a warning
            check = self.fields.get(name)
            if check is None:
                report.add(field_path, "unknown field; dropped")
                continue
            result = check.check(field_value, field_path, report)
            if result is not _DROP:
                checked[name] = result
        for name, default in self.defaults.items():
            if name not in checked:
                report.changed = True
                checked[name] = list(default) if isinstance(default, list) else default
        return checked


class _Boxes(_Object):
    """A sample's `boxes`: an object whose lists run in parallel.

    The lists of one side (`label*`, `prediction*`) describe the same boxes, one item
    each: when one has another length than the side's boxes, it is dropped.
    """

    SIDES = {
        "label": ("label_classes", "label_flags", "label_iou"),
        "prediction": ("prediction_classes", "prediction_scores", "prediction_iou"),
    }

    def check_value(self, value: dict, path: Path, report: _Report) -> dict:
        checked = super().check_value(value, path, report)
        for side, parallel in self.SIDES.items():
            boxes = checked.get(side)
            for name in parallel:
                if name not in checked:
                    continue
                if boxes is None or len(checked[name]) != len(boxes):
                    count = "no" if boxes is None else len(boxes)
                    report.add(
                        (path, name),
                        f"{len(checked[name])} items for {count} {side} boxes; dropped",
                    )
                    del checked[name]
        return checked


class _Samples(_Check):
    """`samples`: a sample that is not an object keeps its place (images follow the
    order of the samples) with no fields but its position."""

    expected = "a list of objects"

    def __init__(self, sample: _Object):
        self.sample = sample

    def matches(self, value: Any) -> bool:
        return isinstance(value, list)

    def check_value(self, value: list, path: Path, report: _Report) -> list:
        if len(value) > MAX_SAMPLES:
            report.add(path, f"{len(value)} items; cut to the first {MAX_SAMPLES}")
            value = value[:MAX_SAMPLES]
        samples = []
        for index, sample in enumerate(value):
            sample_path = (path, index)
            if not isinstance(sample, dict):
                report.add(
                    sample_path,
                    f"expected an object, got {_kind(sample)}; shown without fields",
                )
                sample = {}
            checked = self.sample.check(sample, sample_path, report)
            if "position" not in checked:
                checked["position"] = index
            samples.append(checked)
        return samples


# -- the schema (docs/format.md, "Validation") -------------------------------------
def _count(nullable: bool = False) -> _Int:
    return _Int(0, MAX_SAFE_INTEGER, nullable=nullable)


def _signed(nullable: bool = False) -> _Int:
    return _Int(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER, nullable=nullable)


def _probability(nullable: bool = True) -> _Number:
    return _Number(0.0, 1.0, nullable=nullable)


# label / prediction: a class, a class set, or raw values (non-finite written as null).
_CLASS_VALUE = _Either(
    _signed(), _List(_Number(nullable=True), MAX_RAW_VALUES), nullable=True
)
_SHAPE = _List(_Int(0, MAX_SAFE_INTEGER), MAX_DIMS)
# Boxes (docs/format.md, "Boxes"): xyxy pixels of the logged picture.
_BOX_LIST = _List(_List(_Number(), 4, length=4), MAX_BOXES)
_BOX_NUMBERS = _List(_Number(nullable=True), MAX_BOXES)
BOXES = _Boxes(
    {
        "count": _count(),
        "label": _BOX_LIST,
        "label_classes": _BOX_NUMBERS,
        "label_flags": _List(
            _List(_Text(max_chars=64), MAX_FLAGS, keep_good_items=True), MAX_BOXES
        ),
        "label_iou": _List(_probability(), MAX_BOXES),
        "prediction_count": _count(),
        "prediction": _BOX_LIST,
        "prediction_classes": _BOX_NUMBERS,
        "prediction_scores": _BOX_NUMBERS,
        "prediction_iou": _List(_probability(), MAX_BOXES),
        "mean_iou": _probability(),
        "missed": _count(),
        "spurious": _count(),
    }
)

SAMPLE = _Object(
    {
        "position": _count(),
        "batch": _count(),
        "sample_id": _signed(nullable=True),
        "filename": _Text(nullable=True),
        "label": _CLASS_VALUE,
        "label_name": _Text(nullable=True),
        "prediction": _CLASS_VALUE,
        "prediction_name": _Text(nullable=True),
        "confidence": _probability(),
        "correct": _Bool(nullable=True),
        "top_k": _List(
            _Object(
                {
                    "class": _signed(nullable=True),
                    "name": _Text(nullable=True),
                    "probability": _probability(),
                }
            ),
            MAX_TOP_K,
            keep_good_items=True,
        ),
        "output_summary": _Object(
            {
                "shape": _List(_Int(0, MAX_SAFE_INTEGER, nullable=True), MAX_DIMS),
                "min": _Number(nullable=True),
                "max": _Number(nullable=True),
                "mean": _Number(nullable=True),
            },
            nullable=True,
        ),
        "loss": _Number(nullable=True),
        "flags": _List(_Text(max_chars=64), MAX_FLAGS, keep_good_items=True),
        "image_shape": _List(_Int(0, MAX_IMAGE_SIDE), MAX_DIMS),
        "device": _Either(_count(), _Text()),
        "process": _count(),
        "head_losses": _NumberMap(MAX_HEADS, MAX_HEAD_NAME_CHARS),
        "input_size": _List(_Int(0, MAX_SAFE_INTEGER), 2, length=2),
        "label_mask": _count(),
        "prediction_mask": _count(),
        "pixel_accuracy": _probability(),
        "mean_iou": _probability(),
        "mask_classes": _List(_Int(0, 255), MAX_MASK_CLASSES),
        "label_range": _List(_Number(), 2, nullable=True, length=2),
        "prediction_range": _List(_Number(), 2, nullable=True, length=2),
        "culprit": _Bool(),
        "boxes": BOXES,
    },
    defaults={"flags": [], "top_k": []},
)

BATCH_RECORD = _Object(
    {
        "format_version": _count(),
        "mode": _Text(choices=tuple(names.MODE_DIRS)),
        "step": _count(),
        "epoch": _count(),
        "batch": _count(),
        "wall_time": _Number(0.0, MAX_WALL_TIME),
        "sequence": _count(),
        "batch_size": _count(),
        "samples_logged": _count(),
        "selection": _Text(),
        "replica": _count(),
        "num_replicas": _count(),
        "backend": _Text(),
        "task": _Text(),
        "class_names": _List(_Text(), MAX_CLASSES, nullable=True),
        "num_classes": _count(nullable=True),
        "image_key": _Text(nullable=True),
        "image_source": _Text(nullable=True),
        "preprocessing": _Text(nullable=True),
        "output": _Text(nullable=True),
        "input_shape": _SHAPE,
        "input_dtype": _Text(),
        "input_layout": _Text(),
        "value_range": _List(_Number(), 2, nullable=True, length=2),
        "image_format": _Text(choices=tuple(names.IMAGE_MIME_TYPES)),
        "masks": _Text(choices=names.MASK_TYPES),
        "mask_shape": _List(_Int(0, MAX_IMAGE_SIDE), 2, length=2),
        "box_format": _Text(choices=names.BOX_FORMATS),
        "box_predictions": _Text(nullable=True, choices=names.BOX_PREDICTION_SOURCES),
        "max_boxes": _count(),
        "box_iou_threshold": _probability(nullable=False),
        "dropped": _Counts(),
        "trigger": _Text(max_chars=64),
        "batch_loss": _Number(nullable=True),
        "batch_loss_finite": _Bool(),
        "loss_mean": _Number(nullable=True),
        "loss_deviation": _Number(nullable=True),
        "non_finite_samples": _count(),
        "samples": _Samples(SAMPLE),
    },
    defaults={"samples": []},
)

STATUS_RECORD = _Object(
    {
        "format_version": _count(),
        "mode": _Text(choices=tuple(names.MODE_DIRS)),
        "wall_time": _Number(0.0, MAX_WALL_TIME),
        "batches_written": _count(),
        "dropped": _Counts(),
        "warnings": _List(_Text(), MAX_STATUS_WARNINGS, keep_good_items=True),
        "data_map_off": _Text(),
    },
)


# -- entry points --------------------------------------------------------------------
def check_batch_record(data: bytes) -> Checked:
    """Element 0 of a logged step, checked: a usable record, or why there is none."""
    parsed, error = _parse(data)
    if (
        error is None
        and "samples" in parsed
        and not isinstance(parsed["samples"], list)
    ):
        error = f"samples is {_kind(parsed['samples'])}, not a list"
    if error is not None:
        return Checked(record=None, error=f"not a tb-batch-images record: {error}")
    return _check(parsed, BATCH_RECORD)


def check_status_record(data: bytes) -> Checked:
    """Element 0 of a status value, checked like a batch record."""
    parsed, error = _parse(data)
    if error is not None:
        return Checked(record=None, error=f"not a tb-batch-images status: {error}")
    return _check(parsed, STATUS_RECORD)


def _parse(data: bytes) -> tuple[Any, str | None]:
    """(the JSON object, None) or (None, why it is not a record)."""
    if len(data) > MAX_RECORD_BYTES:
        return None, f"{len(data)} bytes, more than {MAX_RECORD_BYTES}"
    try:
        parsed = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except RecursionError:
        return None, "nested too deeply"
    except ValueError as problem:
        return None, f"not JSON ({str(problem)[:200]})"
    if not isinstance(parsed, dict):
        return None, f"{_kind(parsed)}, not a JSON object"
    return parsed, None


def _check(parsed: dict[str, Any], schema: _Object) -> Checked:
    version = parsed.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return Checked(
            record=None,
            error="not a tb-batch-images record: no format_version (an integer >= 1)",
        )
    if version > names.FORMAT_VERSION:
        return Checked(
            record=None,
            error=f"record format version {_number(version)} is newer than this "
            f"reader ({names.FORMAT_VERSION}); upgrade tb-batch-images",
        )
    report = _Report()
    record = schema.check(parsed, "", report)
    return Checked(record=record, warnings=report.warnings(), changed=report.changed)


# -- wording ---------------------------------------------------------------------------
def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _number(value: int | float) -> str:
    """A number for a message: huge integers by their size, not their digits."""
    if isinstance(value, int) and abs(value) > 10**15:
        return f"an integer of {abs(value).bit_length()} bits"
    return repr(value)


def _path_text(path: Path) -> str:
    """`samples[3].flags` for ((("", "samples"), 3), "flags"), cut to 120 characters."""
    keys: list[str | int] = []
    while path:
        path, key = path
        keys.append(key)
    text = "".join(
        f"[{key}]" if isinstance(key, int) else f".{key}" for key in reversed(keys)
    ).lstrip(".")
    return text if len(text) <= 120 else text[:117] + "..."
