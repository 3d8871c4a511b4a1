"""The `batch_images` TensorBoard plugin: HTTP routes over the logged batches.

TensorBoard finds `BatchImagesLoader` through the `tensorboard_plugins` entry point
(`setup.py`) and mounts the routes of `BatchImagesPlugin.get_plugin_apps` under
`/data/plugin/batch_images`. The routes are documented in `docs/api.md`; the data comes
only from `context.data_provider` (see `tb_batch_images.plugin_data`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tb_batch_images import format as fmt
from tb_batch_images import plugin_data, plugin_sample_stats
from tb_batch_images.plugin_data import BatchImagesData

_PACKAGE_DIR = Path(__file__).resolve().parent

# Static files served by their name: the frontend is a flat folder of these kinds.
_STATIC_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_STATIC_PREFIX = f"/data/plugin/{fmt.PLUGIN_NAME}/static/"

# An image key names immutable content (see `plugin_data.image_key`).
_IMMUTABLE = "private, max-age=31536000, immutable"
_ONE_YEAR = 31536000
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_MAX_PAGE = 10000


def frontend_dir() -> Path:
    """The frontend folder: inside the package when installed, else the repo's."""
    installed = _PACKAGE_DIR / "frontend"
    return installed if installed.is_dir() else _PACKAGE_DIR.parent / "frontend"


def _frontend_files(folder: Path) -> dict[str, Path]:
    """The whitelist of servable frontend files: name -> path, from one listing."""
    if not folder.is_dir():
        return {}
    return {
        path.name: path
        for path in folder.iterdir()
        if path.is_file()
        and path.suffix in _STATIC_TYPES
        and _STATIC_NAME.fullmatch(path.name)
    }


def _route(
    handler: Callable[[BatchImagesPlugin, wrappers.Request], wrappers.Response],
) -> Callable[..., Any]:
    """Makes a WSGI app of a handler; bad and unknown parameters become JSON 4xx."""

    @functools.wraps(handler)
    def handle(
        plugin: BatchImagesPlugin, request: wrappers.Request
    ) -> wrappers.Response:
        try:
            return handler(plugin, request)
        except (errors.InvalidArgumentError, errors.NotFoundError) as error:
            return http_util.Respond(
                request, {"error": str(error)}, "application/json", code=error.http_code
            )

    return wrappers.Request.application(handle)


class BatchImagesPlugin(base_plugin.TBPlugin):
    """Serves the logged batches: runs, steps, samples, images and sample history."""

    plugin_name = fmt.PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext):
        self._data = BatchImagesData(context.data_provider)
        self._provider = context.data_provider
        self._frontend = _frontend_files(frontend_dir())

    def get_plugin_apps(self) -> dict[str, Callable[..., Any]]:
        return {
            "/runs": self._serve_runs,
            "/steps": self._serve_steps,
            "/samples": self._serve_samples,
            "/image": self._serve_image,
            "/history": self._serve_history,
            "/sample_stats": self._serve_sample_stats,
            "/sample_stats_runs": self._serve_sample_stats_runs,
            "/sample": self._serve_sample,
            "/sample_pictures": self._serve_sample_pictures,
            "/index.js": self._serve_index,
            "/static/*": self._serve_static,
        }

    def is_active(self) -> bool:
        return False  # TensorBoard asks the data provider (`data_plugin_names`).

    def data_plugin_names(self) -> tuple[str, ...]:
        return (fmt.PLUGIN_NAME,)

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(
            es_module_path="/index.js", tab_name="Batch Images"
        )

    # -- data routes ------------------------------------------------------------
    @_route
    def _serve_runs(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = _context(request)
        return _json(request, {"runs": self._data.runs(ctx, experiment)})

    @_route
    def _serve_steps(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = _context(request)
        run, tag = _required(request, "run"), _tag(request)
        offset = _integer(request, "offset", default=0, minimum=0)
        limit = _integer(request, "limit", default=1000, minimum=1, maximum=_MAX_PAGE)
        order = _choice(request, "order", ("oldest", "newest"))
        fields = _choice(request, "fields", ("summary", "step"))
        series = self._data.batch_series(ctx, experiment, run, tag)
        total = len(series.steps)
        # A page is `limit` steps, `offset` from the oldest (or the newest) step;
        # either way the page itself is ordered by step, and `first` is the index of
        # its first step in the whole list.
        if order == "newest":
            end = max(0, total - offset)
            first = max(0, end - limit)
        else:
            first = min(offset, total)
            end = min(total, offset + limit)
        refs = series.steps[first:end]
        if fields == "step":  # step numbers only: no record is read
            page: list[Any] = [ref.step for ref in refs]
        else:
            infos = self._data.step_infos(ctx, run, tag, refs)
            page = [info.summary() for info in infos]
        return _json(
            request,
            {
                "run": run,
                "tag": tag,
                "total": total,
                "offset": offset,
                "limit": limit,
                "order": order,
                "first": first,
                "steps": page,
            },
        )

    @_route
    def _serve_samples(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = _context(request)
        run, tag, step = (
            _required(request, "run"),
            _tag(request),
            _integer(request, "step"),
        )
        ref = self._data.step_ref(ctx, experiment, run, tag, step)
        info = self._data.step_info(ctx, run, tag, ref)
        return _json(request, _batch(run, tag, info))

    @_route
    def _serve_image(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = _context(request)
        try:
            run, tag, step, wall_time, index = plugin_data.parse_image_key(
                _required(request, "key")
            )
        except ValueError:
            raise errors.InvalidArgumentError("parameter 'key' is malformed") from None
        ref = self._data.step_ref(ctx, experiment, run, tag, step, wall_time)
        mime_type = self._data.step_info(ctx, run, tag, ref).mime_type
        data = self._data.read_image(ctx, ref, index)
        if data.startswith(_PNG_SIGNATURE):
            mime_type = "image/png"  # masks are PNG whatever the pictures' format
        response = http_util.Respond(request, data, mime_type, expires=_ONE_YEAR)
        response.headers["Cache-Control"] = _IMMUTABLE
        return response

    @_route
    def _serve_sample_stats_runs(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = _context(request)
        runs = plugin_sample_stats.runs_with_stats(self._provider, ctx, experiment)
        return _json(request, {"runs": runs})

    @_route
    def _serve_sample_stats(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = _context(request)
        step = _integer(request, "step") if request.args.get("step") else None
        answer = plugin_sample_stats.sample_stats(
            self._provider, ctx, experiment, _required(request, "run"), step
        )
        return _json(request, answer)

    @_route
    def _serve_sample(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = _context(request)
        run = _required(request, "run")
        sample_id = _integer(request, "sample_id", minimum=0)
        answer = plugin_sample_stats.sample_detail(
            self._data, ctx, experiment, run, sample_id
        )
        return _json(request, answer)

    @_route
    def _serve_sample_pictures(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = _context(request)
        run = _required(request, "run")
        ids = _integer_list(
            request, "ids", maximum_items=plugin_sample_stats.MAX_PICTURE_IDS
        )
        answer = plugin_sample_stats.sample_pictures(
            self._data, ctx, experiment, run, ids
        )
        return _json(request, answer)

    @_route
    def _serve_history(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = _context(request)
        filename = _optional(request, "filename")
        sample_id = None
        if request.args.get("sample_id"):
            sample_id = _integer(request, "sample_id")
        if (filename is None) == (sample_id is None):
            raise errors.InvalidArgumentError(
                "give exactly one of the parameters 'filename' and 'sample_id'"
            )
        runs_text = _optional(request, "runs")
        limit = _integer(request, "limit", default=1000, minimum=1, maximum=_MAX_PAGE)
        found = self._data.history(
            ctx,
            experiment,
            filename=filename,
            sample_id=sample_id,
            runs=runs_text.split(",") if runs_text is not None else None,
        )
        appearances = [_appearance(*match) for match in found[:limit]]
        return _json(
            request,
            {"appearances": appearances, "total": len(found), "limit": limit},
        )

    # -- frontend ---------------------------------------------------------------
    @_route
    def _serve_index(self, request: wrappers.Request) -> wrappers.Response:
        return self._static_file(request, "index.js")

    @_route
    def _serve_static(self, request: wrappers.Request) -> wrappers.Response:
        _, _, name = request.path.partition(_STATIC_PREFIX)
        return self._static_file(request, name)

    def _static_file(self, request: wrappers.Request, name: str) -> wrappers.Response:
        path = self._frontend.get(name)  # never a path built from the request
        if path is None:
            raise errors.NotFoundError(f"no frontend file {name[:100]!r}")
        return http_util.Respond(request, path.read_bytes(), _STATIC_TYPES[path.suffix])


class BatchImagesLoader(base_plugin.TBLoader):
    """Loads the plugin and keeps every logged step by default.

    TensorBoard keeps only 10 steps of a plugin's blob sequences unless told otherwise;
    `fix_flags` makes `--samples_per_plugin batch_images=0` (keep all) the default for
    both loaders, while a value the user gives still wins.
    """

    def fix_flags(self, flags: Any) -> None:
        samples = getattr(flags, "samples_per_plugin", None)
        if isinstance(samples, dict):
            flags.samples_per_plugin = {fmt.PLUGIN_NAME: 0, **samples}

    def load(self, context: base_plugin.TBContext) -> BatchImagesPlugin:
        return BatchImagesPlugin(context)


# -- request parsing -------------------------------------------------------------
def _context(request: wrappers.Request) -> tuple[Any, str]:
    return plugin_util.context(request.environ), plugin_util.experiment_id(
        request.environ
    )


def _required(request: wrappers.Request, name: str) -> str:
    """A string parameter; missing or empty is a 400 naming it."""
    value = request.args.get(name)
    if not value:
        raise errors.InvalidArgumentError(f"missing parameter {name!r}")
    return value


def _optional(request: wrappers.Request, name: str) -> str | None:
    """A string parameter, None when missing or empty."""
    return request.args.get(name) or None


def _choice(request: wrappers.Request, name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first when missing); anything else is a 400."""
    value = request.args.get(name) or choices[0]
    if value not in choices:
        raise errors.InvalidArgumentError(
            f"parameter {name!r} must be one of {', '.join(choices)}"
        )
    return value


def _tag(request: wrappers.Request) -> str:
    return _optional(request, "tag") or fmt.BATCHES_TAG


def _integer(
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


def _integer_list(
    request: wrappers.Request, name: str, *, maximum_items: int
) -> list[int]:
    """A required comma-separated list of non-negative decimal integers."""
    text = _required(request, name)
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


# -- answers ---------------------------------------------------------------------
def _json(request: wrappers.Request, payload: Any) -> wrappers.Response:
    return http_util.Respond(request, payload, "application/json")


def _batch(run: str, tag: str, info: plugin_data.StepInfo) -> dict[str, Any]:
    """The `Batch` of docs/api.md: the checked record, with an image key per sample."""
    if info.error:
        return {
            "run": run,
            "tag": tag,
            "step": info.ref.step,
            "error": info.error,
            "warnings": [],
            "samples": [],
        }
    record = info.record()
    images = len(info.ref.blob_keys) - 1
    batch = {key: value for key, value in record.items() if key != "samples"}
    batch.update(
        run=run, tag=tag, step=info.ref.step, error=None, warnings=list(info.warnings)
    )

    def image_of(index: Any) -> str | None:
        """The image key of blob image `index`, None when the step has no such image."""
        if type(index) is int and 0 <= index < images:
            return plugin_data.image_key(run, tag, info.ref, index)
        return None

    batch["samples"] = [
        {
            **sample,
            "image": image_of(index),
            "label_mask_image": image_of(sample.get("label_mask")),
            "prediction_mask_image": image_of(sample.get("prediction_mask")),
        }
        for index, sample in enumerate(record.get("samples", []))
    ]
    return batch


def _appearance(
    series: plugin_data.Series,
    info: plugin_data.StepInfo,
    index: int,
    sample: dict[str, Any],
) -> dict[str, Any]:
    """One `Appearance` of docs/api.md."""
    return {
        "run": series.run,
        "tag": series.tag,
        "mode": plugin_data.mode_of_run(series.run, info),
        "step": info.ref.step,
        "epoch": info.epoch,
        "batch": sample.get("batch", info.batch),
        "index": index,
        **{field: sample.get(field) for field in plugin_data.HISTORY_FIELDS},
        "image": plugin_data.image_key(series.run, series.tag, info.ref, index),
    }
