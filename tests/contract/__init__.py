"""Tests of tb_batch_images.contract."""
