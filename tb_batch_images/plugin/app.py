"""The `batch_images` TensorBoard plugin: a table of HTTP routes over the logged batches.

TensorBoard finds `BatchImagesLoader` through the `tensorboard_plugins` entry point
(`setup.py`) and mounts the routes of `BatchImagesPlugin.get_plugin_apps` under
`/data/plugin/batch_images`. The routes are documented in `docs/api.md`; each handler
parses its parameters (`requests`), asks the store (`store`, `sample_stats`), which
lists through `context.data_provider` and reads format version 3 pictures from the
run's pack files (`packs`), and answers JSON (`answers`) or bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from tensorboard import errors
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tb_batch_images import contract
from tb_batch_images.plugin import (
    answers,
    composition,
    image_keys,
    sample_stats,
    static,
    store,
)
from tb_batch_images.plugin.requests import (
    MAX_PAGE,
    choice,
    context,
    integer,
    integer_list,
    optional,
    required,
    tag_of,
)
from tb_batch_images.plugin.store import BatchImagesData

_STATIC_PREFIX = f"/data/plugin/{contract.PLUGIN_NAME}/static/"


# An image key names immutable content (see `image_keys.image_key`).
_IMMUTABLE = "private, max-age=31536000, immutable"


_ONE_YEAR = 31536000


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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

    plugin_name = contract.PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext):
        self._data = BatchImagesData(context.data_provider, context.logdir or "")
        self._composition = composition.CompositionData(self._data)
        self._provider = context.data_provider
        self._frontend = static.frontend_files(static.frontend_dir())

    def get_plugin_apps(self) -> dict[str, Callable[..., Any]]:
        return {
            "/runs": self._serve_runs,
            "/steps": self._serve_steps,
            "/samples": self._serve_samples,
            "/image": self._serve_image,
            "/history": self._serve_history,
            "/sample_stats": self._serve_sample_stats,
            "/sample_stats_runs": self._serve_sample_stats_runs,
            "/suspects.csv": self._serve_suspects_csv,
            "/sample": self._serve_sample,
            "/sample_pictures": self._serve_sample_pictures,
            "/loss_curve": self._serve_loss_curve,
            "/composition": self._serve_composition,
            "/index.js": self._serve_index,
            "/static/*": self._serve_static,
        }

    def is_active(self) -> bool:
        return False  # TensorBoard asks the data provider (`data_plugin_names`).

    def data_plugin_names(self) -> tuple[str, ...]:
        return (contract.PLUGIN_NAME,)

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(
            es_module_path="/index.js", tab_name="Batch Images"
        )

    # -- data routes ------------------------------------------------------------
    @_route
    def _serve_runs(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = context(request)
        return _json(request, {"runs": self._data.runs(ctx, experiment)})

    @_route
    def _serve_steps(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = context(request)
        run, tag = required(request, "run"), tag_of(request)
        offset = integer(request, "offset", default=0, minimum=0)
        limit = integer(request, "limit", default=1000, minimum=1, maximum=MAX_PAGE)
        order = choice(request, "order", ("oldest", "newest"))
        fields = choice(request, "fields", ("summary", "step"))
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
        else:  # version 3: from the index entries; older: the records
            page = self._data.step_summaries(ctx, run, tag, refs)
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
        ctx, experiment = context(request)
        run, tag, step = (
            required(request, "run"),
            tag_of(request),
            integer(request, "step"),
        )
        ref = self._data.step_ref(ctx, experiment, run, tag, step)
        info = self._data.step_info(ctx, run, tag, ref)
        return _json(request, answers.batch(run, tag, info))

    @_route
    def _serve_image(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = context(request)
        try:
            run, tag, step, wall_time, index = image_keys.parse_image_key(
                required(request, "key")
            )
        except ValueError:
            raise errors.InvalidArgumentError("parameter 'key' is malformed") from None
        ref = self._data.step_ref(ctx, experiment, run, tag, step, wall_time)
        mime_type = self._data.step_info(ctx, run, tag, ref).mime_type
        data = self._data.read_image(ctx, run, ref, index)
        if data.startswith(_PNG_SIGNATURE):
            mime_type = "image/png"  # masks are PNG whatever the pictures' format
        response = http_util.Respond(request, data, mime_type, expires=_ONE_YEAR)
        response.headers["Cache-Control"] = _IMMUTABLE
        return response

    @_route
    def _serve_sample_stats_runs(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = context(request)
        runs = sample_stats.runs_with_stats(self._provider, ctx, experiment)
        with_stats = {run["run"] for run in runs}
        off = [
            {"run": run, "reason": record["data_map_off"]}
            for run, record in sorted(self._data.statuses(ctx, experiment).items())
            if record.get("data_map_off") and run not in with_stats
        ]
        return _json(request, {"runs": runs, "off": off})

    @_route
    def _serve_sample_stats(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = context(request)
        step = integer(request, "step") if request.args.get("step") else None
        answer = sample_stats.sample_stats(
            self._provider, ctx, experiment, required(request, "run"), step
        )
        return _json(request, answer)

    @_route
    def _serve_suspects_csv(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = context(request)
        step = integer(request, "step") if request.args.get("step") else None
        text, filename = sample_stats.suspects_csv(
            self._provider, ctx, experiment, required(request, "run"), step
        )
        response = http_util.Respond(request, text, "text/csv; charset=utf-8")
        response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    @_route
    def _serve_sample(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = context(request)
        run = required(request, "run")
        sample_id = integer(request, "sample_id", minimum=0)
        answer = sample_stats.sample_detail(self._data, ctx, experiment, run, sample_id)
        return _json(request, answer)

    @_route
    def _serve_sample_pictures(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = context(request)
        run = required(request, "run")
        ids = integer_list(request, "ids", maximum_items=sample_stats.MAX_PICTURE_IDS)
        answer = sample_stats.sample_pictures(self._data, ctx, experiment, run, ids)
        return _json(request, answer)

    @_route
    def _serve_history(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = context(request)
        filename = optional(request, "filename")
        sample_id = None
        if request.args.get("sample_id"):
            sample_id = integer(request, "sample_id")
        if (filename is None) == (sample_id is None):
            raise errors.InvalidArgumentError(
                "give exactly one of the parameters 'filename' and 'sample_id'"
            )
        runs_text = optional(request, "runs")
        limit = integer(request, "limit", default=1000, minimum=1, maximum=MAX_PAGE)
        found = self._data.history(
            ctx,
            experiment,
            filename=filename,
            sample_id=sample_id,
            runs=runs_text.split(",") if runs_text is not None else None,
        )
        appearances = [
            answers.appearance(
                series, info, index, sample, mode=store.mode_of_run(series.run, info)
            )
            for series, info, index, sample in found[:limit]
        ]
        return _json(
            request,
            {"appearances": appearances, "total": len(found), "limit": limit},
        )

    @_route
    def _serve_loss_curve(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = context(request)
        run = required(request, "run")
        start = integer(request, "start") if request.args.get("start") else None
        end = integer(request, "end") if request.args.get("end") else None
        buckets = integer(
            request,
            "buckets",
            default=composition.DEFAULT_BUCKETS,
            minimum=1,
            maximum=composition.MAX_BUCKETS,
        )
        curve = self._composition.curve(ctx, experiment, run)
        try:
            series = self._data.batch_series(ctx, experiment, run, contract.BATCHES_TAG)
            logged = [ref.step for ref in series.steps]
        except errors.NotFoundError:
            logged = []
        answer = composition.loss_curve(curve, logged, start, end, buckets)
        return _json(request, {"run": run, **answer})

    @_route
    def _serve_composition(self, request: wrappers.Request) -> wrappers.Response:
        ctx, experiment = context(request)
        run, step = required(request, "run"), integer(request, "step")
        answer = self._composition.step(ctx, experiment, run, step)
        try:
            series = self._data.batch_series(ctx, experiment, run, contract.BATCHES_TAG)
            answer["logged"] = series.find(step) is not None
        except errors.NotFoundError:
            answer["logged"] = False
        return _json(request, answer)

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
        return http_util.Respond(
            request, path.read_bytes(), static.STATIC_TYPES[path.suffix]
        )


class BatchImagesLoader(base_plugin.TBLoader):
    """Loads the plugin and keeps every logged step by default.

    TensorBoard keeps only 10 steps of a plugin's blob sequences unless told otherwise;
    `fix_flags` makes `--samples_per_plugin batch_images=0` (keep all) the default for
    both loaders, while a value the user gives still wins.
    """

    def fix_flags(self, flags: Any) -> None:
        samples = getattr(flags, "samples_per_plugin", None)
        if isinstance(samples, dict):
            flags.samples_per_plugin = {contract.PLUGIN_NAME: 0, **samples}

    def load(self, context: base_plugin.TBContext) -> BatchImagesPlugin:
        return BatchImagesPlugin(context)


# -- answers ---------------------------------------------------------------------
def _json(request: wrappers.Request, payload: Any) -> wrappers.Response:
    return http_util.Respond(request, payload, "application/json")
