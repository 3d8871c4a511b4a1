"""The contract between writer and readers: the on-disk format of docs/format.md.

- `names`: plugin name, tags, series kinds, versions, metadata keys, flags, mask
  types, tasks;
- `limits`: what a reader accepts (and the writer keeps to);
- `records`: summary metadata and the JSON record of a step, encoded and decoded;
- `schema`: the validator every reader runs on a record;
- `packs`: format version 3's index entries and pack files (paths, encode, check);
- `sample_stats`: the per-epoch sample-statistics value and the suspect ranking;
- `composition`: every training step's loss, trigger and sample ids, in blocks.

Neither Keras nor TensorFlow is imported here (`.importlinter` holds it to that):
the TensorBoard plugin and `read_batches` depend on this package alone.
"""

from tb_batch_images.contract import limits, names
from tb_batch_images.contract.composition import (
    CompositionBlock,
    decode_composition,
    encode_composition,
)
from tb_batch_images.contract.names import *  # noqa: F403
from tb_batch_images.contract.packs import (
    IndexEntry,
    PackError,
    check_index_entry,
    check_pack,
    decode_pack,
    encode_index_entry,
    encode_pack,
    index_metadata,
    index_tag,
    is_remote,
    pack_relpath,
    read_pack,
    replay,
    replay_index,
)
from tb_batch_images.contract.records import (
    decode_record,
    encode_record,
    image_mime_type,
    parse_plugin_content,
    summary_metadata,
)
from tb_batch_images.contract.sample_stats import (
    SUSPECT_FIELDS,
    SampleStatsEpoch,
    decode_sample_stats,
    encode_sample_stats,
    rank_suspects,
    suspects_csv,
)
from tb_batch_images.contract.schema import (
    Checked,
    check_batch_record,
    check_status_record,
)

__all__ = [
    "SUSPECT_FIELDS",
    "Checked",
    "CompositionBlock",
    "decode_composition",
    "encode_composition",
    "IndexEntry",
    "PackError",
    "SampleStatsEpoch",
    "check_batch_record",
    "check_index_entry",
    "check_pack",
    "check_status_record",
    "decode_pack",
    "decode_record",
    "decode_sample_stats",
    "encode_index_entry",
    "encode_pack",
    "encode_record",
    "encode_sample_stats",
    "image_mime_type",
    "index_metadata",
    "index_tag",
    "is_remote",
    "limits",
    "names",
    "pack_relpath",
    "parse_plugin_content",
    "rank_suspects",
    "read_pack",
    "replay",
    "replay_index",
    "summary_metadata",
    "suspects_csv",
]
