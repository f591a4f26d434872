"""Tiny raw dataset layouts for the ingestion tests: images and masks written with Pillow."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from jobs.data.dataset import read_table

Box = tuple[int, int, int, int]  # left, top, right, bottom


def write_image(
    path: Path, width: int, height: int, *, mode: str = "RGB", seed: int = 0, fmt: str | None = None
) -> Path:
    """A noisy image (distinct bytes per seed) in the given mode and format (from the suffix)."""
    rng = np.random.default_rng(seed)
    gray = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
    image = Image.fromarray(gray).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def write_mask(path: Path, width: int, height: int, box: Box, *, mode: str = "L") -> Path:
    """A mask with the box as lesion: 255 in every colour channel, alpha (if any) opaque everywhere."""
    lesion = np.zeros((height, width), dtype=np.uint8)
    left, top, right, bottom = box
    lesion[top:bottom, left:right] = 255
    image = Image.fromarray(lesion)
    if mode == "RGBA":
        image = Image.merge("RGBA", [image, image, image, Image.new("L", image.size, 255)])
    elif mode != "L":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def box_mask(width: int, height: int, *boxes: Box) -> np.ndarray:
    out = np.zeros((height, width), dtype=bool)
    for left, top, right, bottom in boxes:
        out[top:bottom, left:right] = True
    return out


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def rows(uri: str) -> dict[str, dict]:
    """The dataset's rows keyed by image id."""
    return {r["image_id"]: r for r in read_table(uri).to_pylist()}
