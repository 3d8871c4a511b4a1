"""Tests of the gallery in headless Chromium, against a real tensorboard."""
