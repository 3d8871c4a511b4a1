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
import time
from collections.abc import Callable
from typing import Any

import keras

from tb_batch_images import contract
from tb_batch_images.capture import (
    boxes,
    keras_internals,
    losses,
    metadata_keys,
    watchlist,
)
from tb_batch_images.capture.backends import Adapter, uses_xla
from tb_batch_images.capture.batch import CapturedBatch
from tb_batch_images.capture.sample_stats import SampleStats
from tb_batch_images.capture.selector import SampleSelector
from tb_batch_images.host import data_map
from tb_batch_images.host.writer import BackgroundWriter

_HEAD_FIX = (
    "; with several outputs, output= names the classification head the data map reads"
)

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
    bounding_box_format: str | None = None  # set: y holds boxes (detection)

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
        heads: Any = None,
        quiet: bool = False,
    ):
        """`model`: the model whose metrics the statistics join (with `stats`);
        `heads`: a model with several outputs, the statistics read `heads.chosen`."""
        self.settings = settings
        self.warn = warn
        self.stats = stats
        self.heads = heads
        self.reason = reason  # why it is off (said at the first training step)
        # A data map that does not apply (a detector) and was not asked for: the
        # reason goes to the status record and the Dataset view, not to a warning the
        # user can do nothing about.
        self.quiet = quiet
        self.off_reason: str | None = None  # why: the warning, the status record
        self.watchlist: watchlist.Watchlist | None = None
        self._model = model
        self._written: tuple[int, float] | None = None
        self._weighting: data_map.EpochWeighting | None = None
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
        if settings.bounding_box_format or boxes.model_box_format(model):
            return cls(
                settings,
                warn,
                None,
                "the model is an object detector (boxes in y); the data map reads "
                "one class per sample from a classification head. The boxes, their "
                "checks and each sample's loss (where the compiled loss gives one) "
                "are logged with the batches",
                quiet=settings.sample_stats is None,  # asked for: said
            )
        num_samples = settings.sample_count
        if not num_samples:
            return cls(
                settings,
                warn,
                None,
                "the number of sample ids is unknown: pass num_samples= (ids are "
                "0..num_samples-1) or filenames= (a list indexed by the ids) to "
                "BatchImageLogger",
            )
        if not keras_internals.can_attach_metrics(model):
            return cls(
                settings,
                warn,
                None,
                f"Keras {keras_internals.KERAS_VERSION} keeps the model's metrics "
                f"where the logger cannot add its accumulators",
            )
        heads = adapter.heads  # several outputs: the head the gallery logs
        try:
            head = losses.classifier_head(model, heads)
        except losses.HeadUnsupported as error:
            reason = f"{error}{_HEAD_FIX if heads is not None else ''}"
            return cls(settings, warn, None, reason)
        stats = _in_scope(
            model,
            lambda: SampleStats(
                num_samples, head.num_classes, head.activation, head.from_logits
            ),
        )
        tracker = cls(settings, warn, stats, None, model=model, heads=heads)
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
        heads = self.heads
        selector = SampleSelector(
            layout,
            samples=min(self.settings.watchlist, watchlist.CAPTURES_PER_STEP),
            selection="first",
            loss_fn=losses.per_sample_loss_fn(getattr(model, "loss", None)),
            heads=heads,
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
        self._weighting = None  # the suspect score's epochs: this fit's
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
        if self.quiet:
            self._say(self.reason)
            return
        if sample_ids is None:
            filenames = contract.FILENAME_KEY in metadata
            self._say(
                "the batches carry no integer x['sample_id']"
                + (" (x['filename'] strings alone cannot key it)" if filenames else "")
                + ": make x a dict {'image': ..., 'sample_id': index} (an integer "
                "per sample, indexing filenames=), e.g. with "
                "tb_batch_images.image_dataset_from_directory"
            )
            return
        if self.stats is None:
            self._say(self.reason)
            return
        if self.heads is not None:  # the logged head's label and output
            chosen = self.heads.chosen
            y, y_pred = self.heads.pick(y, chosen), self.heads.pick(y_pred, chosen)
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
        """Notes, in the step (at its first trace), why the data map is off and how
        to turn it on; `say_why` gives the warning on the host. The reason goes into
        the status record too, for the gallery's Dataset view."""
        if self.off_reason is None:
            self.off_reason = reason

    def say_why(self, logger_on: bool) -> None:
        """On the host after training steps: one warning saying why the data map is
        off (`sample_stats=False` silences it), unless the logger turned itself off
        for training (its own warning is then the one message: a second one about
        the data map would only repeat that nothing is logged)."""
        if self.off_reason is None or self._said:
            return
        self._said = True
        if self.settings.sample_stats is False or not logger_on or self.quiet:
            return
        self.warn(
            "sample_stats_off",
            f"the data map (per-sample statistics, the Dataset view) is off: "
            f"{self.off_reason}. sample_stats=False silences this.",
        )

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
        total = float(accumulators["count"].sum() + accumulators["dropped"])
        if final and self._written == (epoch, total):
            return  # the epoch end already wrote exactly this
        if total == 0:
            return
        self._written = (epoch, total)
        if self._weighting is None:
            self._weighting = data_map.EpochWeighting(self.stats.num_samples)
        self._weighting.add(accumulators)
        columns, dropped = data_map.derive(accumulators, self._weighting)
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
                    columns["suspect_score"], self.watchlist.size, columns["count"]
                )
                self.watchlist.watch(top, step=int(step))
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
