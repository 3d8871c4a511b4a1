"""Limits a reader enforces on a record (docs/format.md, "Validation"), and the
writer keeps to.
"""

# The largest integer JavaScript (the gallery) reads exactly.
MAX_SAFE_INTEGER = 2**53 - 1
MAX_TEXT_CHARS = 4096  # any one string
MAX_RECORD_BYTES = 64 * 1024 * 1024  # element 0 of one step
MAX_SAMPLES = 100_000
MAX_CLASSES = 100_000
MAX_TOP_K = 1_000
MAX_FLAGS = 64
MAX_RAW_VALUES = 64  # as the writer keeps (the writer's raw values per sample)
MAX_DIMS = 8
MAX_IMAGE_SIDE = 65_536
MAX_COUNTERS = 64  # keys of `dropped`
MAX_STATUS_WARNINGS = 100
MAX_WALL_TIME = 1e11  # seconds since the epoch, year ~5100
MAX_HEADS = 64  # keys of `head_losses`
MAX_MASK_CLASSES = 256  # items of `mask_classes`
MAX_HEAD_NAME_CHARS = 256
MAX_BOXES = 1_000  # items of each list of a sample's `boxes`
MAX_WARNINGS = 20  # lines of `warnings` per record; then one "and N more"
