"""Request parameters of the plugin's routes: parsed and checked, or a 400 naming them.

Every route handler takes its parameters through these functions, so a bad or missing
parameter is an `InvalidArgumentError` (a JSON 400), never a trace.
"""

from __future__ import annotations

import re
from typing import Any

from tensorboard import errors, plugin_util
from werkzeug import wrappers

from tb_batch_images import contract

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


_INTEGER = re.compile(r"-?[0-9]{1,19}")


MAX_PAGE = 10000


# -- request parsing -------------------------------------------------------------
def context(request: wrappers.Request) -> tuple[Any, str]:
    """(request context, experiment id) of a request."""
    return plugin_util.context(request.environ), plugin_util.experiment_id(
        request.environ
    )


def required(request: wrappers.Request, name: str) -> str:
    """A string parameter; missing or empty is a 400 naming it."""
    value = request.args.get(name)
    if not value:
        raise errors.InvalidArgumentError(f"missing parameter {name!r}")
    return value


def optional(request: wrappers.Request, name: str) -> str | None:
    """A string parameter, None when missing or empty."""
    return request.args.get(name) or None


def choice(request: wrappers.Request, name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first when missing); anything else is a 400."""
    value = request.args.get(name) or choices[0]
    if value not in choices:
        raise errors.InvalidArgumentError(
            f"parameter {name!r} must be one of {', '.join(choices)}"
        )
    return value


def tag_of(request: wrappers.Request) -> str:
    return optional(request, "tag") or contract.BATCHES_TAG


def integer(
    request: wrappers.Request,
    name: str,
    *,
    default: int | None = None,
    minimum: int = _INT64_MIN,
    maximum: int = _INT64_MAX,
) -> int:
    """A decimal integer parameter in [minimum, maximum]; anything else is a 400."""
    text = request.args.get(name)
    if not text:
        if default is None:
            raise errors.InvalidArgumentError(f"missing parameter {name!r}")
        return default
    if not _INTEGER.fullmatch(text) or not minimum <= int(text) <= maximum:
        raise errors.InvalidArgumentError(
            f"parameter {name!r} must be an integer from {minimum} to {maximum}"
        )
    return int(text)


def integer_list(
    request: wrappers.Request, name: str, *, maximum_items: int
) -> list[int]:
    """A required comma-separated list of non-negative decimal integers."""
    text = required(request, name)
    items = text.split(",")
    if len(items) > maximum_items:
        raise errors.InvalidArgumentError(
            f"parameter {name!r} holds more than {maximum_items} items"
        )
    if not all(
        _INTEGER.fullmatch(item) and 0 <= int(item) <= _INT64_MAX for item in items
    ):
        raise errors.InvalidArgumentError(
            f"parameter {name!r} must be comma-separated integers from 0 to {_INT64_MAX}"
        )
    return list(dict.fromkeys(int(item) for item in items))
