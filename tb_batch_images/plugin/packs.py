"""The pack files of format version 3, read lazily from the run's folder.

TensorBoard lists the runs and their index entries; a step's record and pictures are
read here, in one read of its pack file through `tf.io.gfile` (TensorBoard's own
`tensorboard.compat.tf`: TensorFlow's when installed, else TensorBoard's stub, which
reads the local disk, s3 and fsspec paths), and kept in a byte-bounded cache. Nothing
here calls the data provider.

Safety (docs/format.md, "Reading a pack"): the run is one the data provider listed;
its folder is `<--logdir>/<run>`; the file name comes from `contract.pack_relpath`
(a validated step and writer id, never text from a request or the data); on the local
disk the file's real path must lie inside the run's real `plugins/batch_images`
folder (a symlink out of it is refused) and be a regular file of the length its entry
says. A pack that is missing, truncated, damaged or refused raises `PackError`: the
caller shows its pictures as lost, never fails the page.
"""

from __future__ import annotations

import os
import threading
from concurrent import futures
from typing import Any

from tensorboard.compat import tf

from tb_batch_images import contract
from tb_batch_images.contract import IndexEntry, PackError
from tb_batch_images.plugin.cache import ByteBoundedLru

# Packs kept in memory (a 10,000-step run of 16 pictures of 64 px is ~200 KB a step).
DEFAULT_PACK_CACHE_BYTES = 64 * 1024 * 1024

NO_LOGDIR = (
    "the pictures of format version 3 logs are read from the run's folder, which "
    "TensorBoard gives plugins only with --logdir (this one was started with "
    "--logdir_spec): restart it with --logdir to see them"
)


class PackFiles:
    """Reads the pack files of the runs under one `--logdir`.

    Args:
        logdir: TensorBoard's `context.logdir` (empty with `--logdir_spec`).
        cache_bytes: memory budget for packs read.
    """

    def __init__(self, logdir: str, cache_bytes: int = DEFAULT_PACK_CACHE_BYTES):
        logdir = logdir or ""
        if logdir.startswith("file://"):
            logdir = logdir[len("file://") :]
        self._remote = contract.is_remote(logdir)
        # Both loaders expand `~` themselves; the plugin must too (local paths only).
        self._logdir = logdir if self._remote else os.path.expanduser(logdir)
        self._cache = ByteBoundedLru(cache_bytes)
        self._lock = threading.Lock()
        self._reading: dict[Any, futures.Future] = {}

    def unavailable(self) -> str | None:
        """Why packs cannot be read at all (no --logdir), else None."""
        return None if self._logdir else NO_LOGDIR

    def elements(self, run: str, entry: IndexEntry) -> list[bytes]:
        """The elements of a step's pack (record, pictures, masks); PackError if lost.

        Concurrent requests for one pack (a step's tiles load at once) read it once.
        """
        key = (run, entry.step, entry.writer, entry.pack_crc32)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        with self._lock:
            pending = self._reading.get(key)
            if pending is None:
                pending = self._reading[key] = futures.Future()
                owner = True
            else:
                owner = False
        if not owner:
            return pending.result()
        try:
            elements = self._read(run, entry)
        except BaseException as error:
            pending.set_exception(error)
            raise
        else:
            self._cache.put(key, elements, entry.pack_bytes + 64 * len(elements))
            pending.set_result(elements)
            return elements
        finally:
            with self._lock:
                self._reading.pop(key, None)

    def _read(self, run: str, entry: IndexEntry) -> list[bytes]:
        if not self._logdir:
            raise PackError(NO_LOGDIR)
        if self._remote:
            run_dir = self._logdir.rstrip("/") + "/" + run
        else:
            run_dir = os.path.join(self._logdir, run)
        return contract.read_pack(run_dir, entry, _read_file)


def _read_file(path: str, limit: int) -> bytes:
    """At most `limit` bytes of a file, in one read, through `tf.io.gfile`."""
    with tf.io.gfile.GFile(path, "rb") as file:
        return file.read(limit)
