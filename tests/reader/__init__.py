"""Tests of the readers: read_batches, read_sample_stats and the TensorBoard plugin."""
