"""A procedural image-classification dataset, written as real PNG files.

Four shape classes drawn in random colours, sizes and places on noisy backgrounds,
with a known fraction of deliberately wrong labels (listed in `mislabelled.txt`), so the
gallery's "sort by loss" has something real to find.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "cross")
IMAGE_SIZE = 64


def draw_shape(shape: str, rng: np.random.Generator) -> Image.Image:
    background = rng.integers(0, 90, 3)
    noise = rng.integers(0, 40, (IMAGE_SIZE, IMAGE_SIZE, 3))
    pixels = np.clip(background + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    colour = tuple(int(c) for c in rng.integers(130, 256, 3))
    radius = int(rng.integers(12, 24))
    cx, cy = (int(v) for v in rng.integers(radius + 2, IMAGE_SIZE - radius - 2, 2))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon(
            [(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)],
            fill=colour,
        )
    else:
        width = max(3, radius // 3)
        draw.rectangle((cx - radius, cy - width, cx + radius, cy + width), fill=colour)
        draw.rectangle((cx - width, cy - radius, cx + width, cy + radius), fill=colour)
    return image


def make_dataset(
    directory: Path, per_class: int, wrong_fraction: float, seed: int = 0
) -> tuple[list[str], list[int], list[str]]:
    """Writes `directory/<class>/<class>_NNNN.png`; returns (paths, labels, mislabelled).

    The labels of `wrong_fraction` of the files are replaced by another class. The
    files stay in their true class folder, so a person can see which label is wrong.
    """
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for class_id, shape in enumerate(CLASSES):
        (directory / shape).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            path = directory / shape / f"{shape}_{index:04d}.png"
            if not path.exists():
                draw_shape(shape, rng).save(path)
            else:
                draw_shape(shape, rng)  # keep the random stream identical
            paths.append(str(path))
            labels.append(class_id)
    wrong = rng.choice(
        len(paths), size=round(len(paths) * wrong_fraction), replace=False
    )
    mislabelled = []
    for index in sorted(int(i) for i in wrong):
        labels[index] = int(
            (labels[index] + rng.integers(1, len(CLASSES))) % len(CLASSES)
        )
        mislabelled.append(paths[index])
    (directory / "mislabelled.txt").write_text("\n".join(mislabelled) + "\n")
    (directory / "labels.json").write_text(
        json.dumps(dict(zip(paths, labels, strict=True)))
    )
    return paths, labels, mislabelled


def read_folder(directory: Path) -> tuple[list[str], list[int], list[str]]:
    """A user's folder with one sub-folder per class -> (paths, labels, class names)."""
    class_names = sorted(p.name for p in directory.iterdir() if p.is_dir())
    if not class_names:
        raise SystemExit(
            f"{directory} has no sub-folders; expected one folder per class"
        )
    paths, labels = [], []
    suffixes = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
    for class_id, name in enumerate(class_names):
        for path in sorted((directory / name).iterdir()):
            if path.suffix.lower() in suffixes:
                paths.append(str(path))
                labels.append(class_id)
    if not paths:
        raise SystemExit(f"no images (png, jpg, bmp, gif) under {directory}")
    return paths, labels, class_names
