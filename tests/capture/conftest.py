"""The capture suites hold on every Keras backend: each test here is `every_backend`."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/tests/capture/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.every_backend)
