"""The offline demo: `python -m demo` (or `make demo`)."""
