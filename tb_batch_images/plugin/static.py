"""The gallery's files (`frontend/`), served by name from a whitelist made at load time."""

from __future__ import annotations

import re
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # tb_batch_images/


# Static files served by their name: the frontend is a flat folder of these kinds.
STATIC_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def frontend_dir() -> Path:
    """The frontend folder: inside the package when installed, else the repo's."""
    installed = _PACKAGE_DIR / "frontend"
    return installed if installed.is_dir() else _PACKAGE_DIR.parent / "frontend"


def frontend_files(folder: Path) -> dict[str, Path]:
    """The whitelist of servable frontend files: name -> path, from one listing."""
    if not folder.is_dir():
        return {}
    return {
        path.name: path
        for path in folder.iterdir()
        if path.is_file()
        and path.suffix in STATIC_TYPES
        and STATIC_NAME.fullmatch(path.name)
    }
