"""The logger's side of the data map: whether it is on, its messages and its writes.

`DataMapTracker.create` decides once per model (in `set_model`) whether the data map
can be on; the adapter calls `update` from inside the step (train mode only), with the
step's sample ids; the logger calls `write` at each epoch end. With the statistics on
and `watchlist=` > 0, the tracker also keeps the watchlist
(`tb_batch_images.capture.watchlist`): written, and set anew, at each epoch end.

The tracker talks to the rest of the logger only through what it is given: the
settings, a `warn` function, the adapter (for the picture's layout) and, when it
writes, the background writer and the logger's `batch_encoder`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import keras

from tb_batch_images import contract
from tb_batch_images.capture import keras_internals, losses, metadata_keys, watchlist
from tb_batch_images.capture.backends import Adapter, uses_xla
from tb_batch_images.capture.batch import CapturedBatch
from tb_batch_images.capture.sample_stats import SampleStats
from tb_batch_images.capture.selector import SampleSelector
from tb_batch_images.host import data_map
from tb_batch_images.host.writer import BackgroundWriter

_log = logging.getLogger("tb_batch_images")

Warn = Callable[[str, str], None]
# (batch, sequence, selector, selection) -> a function building its record's
# elements on the writer thread.
BatchEncoder = Callable[
    [CapturedBatch, int, SampleSelector, str], Callable[[], list[bytes]]
]


@dataclasses.dataclass(frozen=True)
class DataMapSettings:
    """The logger's arguments the data map depends on."""

    sample_stats: bool | None  # None: on where possible; True: warn where not
    num_samples: int | None  # as given (num_samples=)
    filenames: list[str] | None
    class_names: list[str] | None
    watchlist: int

    @property
    def sample_count(self) -> int | None:
        """How many sample ids there are: num_samples=, else len(filenames=)."""
        if self.num_samples is None and self.filenames is not None:
            return len(self.filenames)
        return self.num_samples


class DataMapTracker:
    """The data map of one model: its statistics (or why they are off), its watchlist."""

    def __init__(
        self,
        settings: DataMapSettings,
        warn: Warn,
        stats: SampleStats | None,
        reason: str | None,
        model: keras.Model | None = None,
    ):
        """`model`: the model whose metrics the statistics join (with `stats`)."""
        self.settings = settings
        self.warn = warn
        self.stats = stats
        self.reason = reason  # why it is off, said once if samples carry ids
        self.watchlist: watchlist.Watchlist | None = None
        self._model = model
        self._written: tuple[int, float] | None = None
        self._said = False
        self._watchlist_records = 0
        self._attached: list[keras.metrics.Metric] = []  # to take off the model
        self._epoch_base = 0  # global step at the start of the running epoch
        if model is not None and stats is not None:
            self._attach(stats)

    @classmethod
    def create(
        cls, model: keras.Model, settings: DataMapSettings, adapter: Adapter, warn: Warn
    ) -> DataMapTracker | None:
        if settings.sample_stats is False:
            return None
        num_samples = settings.sample_count
        if not num_samples:
            return cls(
                settings,
                warn,
                None,
                "the number of samples is unknown: pass num_samples= (or "
                "filenames=) to BatchImageLogger",
            )
        if not keras_internals.can_attach_metrics(model):
            return cls(
                settings,
                warn,
                None,
                f"Keras {keras_internals.KERAS_VERSION} keeps the model's metrics "
                f"where the logger cannot add its accumulators",
            )
        try:
            head = losses.classifier_head(model)
        except losses.HeadUnsupported as error:
            return cls(settings, warn, None, str(error))
        stats = _in_scope(
            model,
            lambda: SampleStats(
                num_samples, head.num_classes, head.activation, head.from_logits
            ),
        )
        tracker = cls(settings, warn, stats, None, model=model)
        if settings.watchlist:
            tracker.add_watchlist(adapter)
        return tracker

    def _attach(self, metric: keras.metrics.Metric) -> None:
        """Its variables join Keras's metrics state for the fit."""
        keras_internals.attach_metric(self._model, metric)
        self._attached.append(metric)

    def add_watchlist(self, adapter: Adapter) -> None:
        """Adds the watchlist (`watchlist=` > 0), or says why it stays off."""
        model = self._model
        backend = keras.backend.backend()
        if backend == "tensorflow" and adapter.num_replicas() > 1:
            # Each replica would fill its own copy of the buffers.
            self.warn(
                "watchlist_off",
                "the watchlist is off under a tf.distribute strategy with several "
                "replicas (the data map stays on)",
            )
            return
        if backend == "jax" and not _one_process():
            # Only process 0 sets the list at epoch end: the processes' copies of
            # the replicated buffers would differ (and the next step hang).
            self.warn(
                "watchlist_off",
                "the watchlist is off when JAX trains in several processes (the "
                "data map stays on)",
            )
            return
        try:
            layout = watchlist.input_layout(model, adapter)
        except watchlist.WatchlistUnavailable as error:
            self.warn("watchlist_off", f"the watchlist is off: {error}")
            return
        selector = SampleSelector(
            layout,
            samples=min(self.settings.watchlist, watchlist.CAPTURES_PER_STEP),
            selection="first",
            loss_fn=losses.per_sample_loss_fn(getattr(model, "loss", None)),
        )
        if backend == "tensorflow":  # XLA cannot antialias a resize
            selector.antialias = not uses_xla(model)
        self.watchlist = _in_scope(
            model, lambda: watchlist.Watchlist(selector, size=self.settings.watchlist)
        )
        self._attach(self.watchlist)

    def uninstall(self) -> None:
        if self._model is not None:
            for metric in self._attached:
                keras_internals.detach_metric(self._model, metric)
        self._attached = []
        self._model = None

    def begin_fit(self, step: int) -> None:
        self._written = None
        if self.stats is not None:
            self.stats.clear()
        self._epoch_base = int(step)
        if self.watchlist is not None:
            self.watchlist.watch([], step=self._epoch_base)

    # -- in the step ----------------------------------------------------------------
    def update(
        self,
        metadata: dict,
        y: Any,
        y_pred: Any,
        x: Any = None,
        image: Any = None,
    ) -> None:
        """Adds one training batch (inside the step). `x`: the model's input;
        `image`: the image source layer's output of this forward pass, if any."""
        sample_ids = metadata.get(contract.SAMPLE_ID_KEY)
        if sample_ids is None:
            self._say(
                "the batches carry no x['sample_id'] (an integer index into "
                "filenames=, from image_dataset_from_directory or your own map)"
            )
            return
        if self.stats is None:
            self._say(self.reason)
            return
        self.stats.update_state(sample_ids, y, y_pred)
        if self.watchlist is not None:
            layout = self.watchlist.selector.layout
            if layout.image_source is None and x is not None:
                image = metadata_keys.picture_in(x, layout)
            if image is not None:
                image = keras.ops.stop_gradient(image)
                try:
                    self.watchlist.update_state(sample_ids, image, y, y_pred)
                except Exception as error:  # at trace time: training goes on
                    self.warn(
                        "watchlist_off",
                        f"the watchlist is off: it failed inside the step "
                        f"({type(error).__name__}: {str(error).splitlines()[0]})",
                    )
                    self.watchlist = None

    def _say(self, reason: str) -> None:
        """One message per fit, at trace time, saying why the data map is off.

        A warning when the user asked for it (`sample_stats=True`); otherwise a log
        message, so that loggers used without ids stay quiet.
        """
        if self._said:
            return
        self._said = True
        message = f"the data map (per-sample statistics) is off: {reason}"
        settings = self.settings
        if settings.sample_stats is True or settings.num_samples is not None:
            self.warn("sample_stats_off", message)
        else:
            _log.info("%s (sample_stats=False silences this)", message)

    # -- on the host ------------------------------------------------------------------
    def write(
        self,
        epoch: int,
        step: int,
        writer: BackgroundWriter | None,
        batch_encoder: BatchEncoder,
        final: bool = False,
    ) -> None:
        """Reads the accumulators and hands one sample-stats value to the writer."""
        if self.stats is None or writer is None:
            return
        accumulators = self.stats.read()
        total = float(accumulators["counts"].sum())
        if final and self._written == (epoch, total):
            return  # the epoch end already wrote exactly this
        if total == 0:
            return
        self._written = (epoch, total)
        columns, dropped = data_map.derive(accumulators)
        if dropped:
            self.warn(
                "sample_ids_out_of_range",
                f"{dropped} samples had a sample_id outside [0, {self.stats.num_samples}) "
                f"(num_samples=) or a label outside the classes; they are not counted",
            )
        header = {
            "epoch": int(epoch),
            "step": int(step),
            "final": bool(final),
            "num_samples": self.stats.num_samples,
            "num_classes": self.stats.num_classes,
            "head": self.stats.activation,
            "from_logits": self.stats.from_logits,
            "dropped": dropped,
            "class_names": self.settings.class_names,
        }
        writer.submit_summary(
            "train",
            contract.SAMPLE_STATS_TAG,
            contract.SERIES_SAMPLE_STATS,
            int(step),
            contract.encode_sample_stats(columns, header, self.settings.filenames),
        )
        if self.watchlist is not None:
            self._write_watchlist(epoch, step, writer, batch_encoder)
            if not final:  # the next epoch watches this epoch's top suspects
                top = contract.rank_suspects(
                    columns["suspect_score"], self.watchlist.size
                )
                seen = columns["count"][top] > 0
                self.watchlist.watch(top[seen], step=int(step))
        self._epoch_base = int(step)

    def _write_watchlist(
        self,
        epoch: int,
        step: int,
        writer: BackgroundWriter,
        batch_encoder: BatchEncoder,
    ) -> None:
        """Hands this epoch's watchlist captures to the writer, as one record."""
        selector = self.watchlist.selector
        arrays = self.watchlist.read()
        if arrays is None:
            return
        batch = watchlist.captured_batch(
            arrays, epoch, step, self._epoch_base, selector, time.time()
        )
        sequence = self._watchlist_records
        self._watchlist_records += 1
        writer.submit_summary(  # built on the writer thread: encoding takes time
            "train",
            contract.WATCHLIST_TAG,
            contract.SERIES_WATCHLIST,
            int(step),
            batch_encoder(batch, sequence, selector, "watchlist"),
        )


def _in_scope(model: keras.Model, make: Any) -> Any:
    """Variables made under the model's tf.distribute strategy, where there is one."""
    if keras.backend.backend() == "tensorflow":
        with model.distribute_strategy.scope():
            return make()
    return make()


def _one_process() -> bool:
    import jax

    return jax.process_count() == 1
