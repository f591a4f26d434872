"""BUSBench's dataset folders built from the REAL metadata in shared/ (placeholder images, made here).

Every placeholder carries its row number as 12 blocks of black/white (`write_marked`), so each is
unique (by bytes and by pixels) and a test can read back which image, and which part of it, was
stored. HMSS/Thammasat placeholders have the sizes their crop boxes imply: a third raw (the box plus
a margin, marker at the box's corner), a third cropped in place (the box's size), a third as
`<name>_crop.jpg` beside a raw file that must not be used. Other sources get tiny images.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import shared_path

BITS = 12
BLOCK = 8  # marker block side for the cropped sources (JPEG-safe); 1 pixel per bit elsewhere


def metadata(*parts: str) -> Path:
    return shared_path("data", "busbench-metadata", *parts)


def table(name: str) -> list[dict[str, str]]:
    with metadata(name).open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def write_marked(path: Path, width: int, height: int, index: int, at: tuple[int, int] = (0, 0), block: int = 1) -> None:
    """A gray image with `index` written as BITS blocks (255 = 1) from `at` = (left, top)."""
    pixels = np.full((height, width), 100, np.uint8)
    left, top = at
    for bit in range(BITS):
        x = left + bit * block
        pixels[top : top + block, x : x + block] = 255 if index >> bit & 1 else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def read_marker(pixels: np.ndarray, block: int = 1) -> int:
    """The index written by write_marked at the image's top-left corner."""
    gray = pixels if pixels.ndim == 2 else pixels[..., 0]
    bits = [gray[:block, b * block : (b + 1) * block].mean() > 128 for b in range(BITS)]
    return sum(1 << b for b, on in enumerate(bits) if on)


def crop_mode(index: int) -> str:
    return ("raw", "in_place", "crop_copy")[index % 3]


def build_cropped(root: Path, table_name: str, rows: list[dict[str, str]] | None = None) -> Path:
    """HMSS or Thammasat: imgs/ with placeholders for the table's rows, and the table (real, or those rows)."""
    rows = table(table_name) if rows is None else rows
    for index, row in enumerate(rows):
        top, height, left, width = (int(float(row[f"crop {c}"])) for c in ("r1", "r2", "col1", "col2"))
        name, images = row["img name"], root / "imgs"
        if crop_mode(index) == "raw":
            write_marked(images / f"{name}.jpg", left + width + 5, top + height + 3, index, (left, top), BLOCK)
        elif crop_mode(index) == "in_place":
            write_marked(images / f"{name}.jpg", width, height, index, block=BLOCK)
        else:
            write_marked(images / f"{name}_crop.jpg", width, height, index, block=BLOCK)
            write_marked(images / f"{name}.jpg", 16, 16, index)  # a raw file the box does not fit: must be unused
    _write_table(root / table_name, table_name, rows)
    return root


def _write_table(target: Path, name: str, rows: list[dict[str, str]]) -> None:
    if rows == table(name):
        shutil.copyfile(metadata(name), target)
        return
    with metadata(name).open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle))
    with target.open("w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def build_busis(root: Path, padded: bool) -> Path:
    """BUSIS: `Original/case0001.png` (padded) or `imgs/case1.png`, GT masks alike, and the real BUSIS562.csv."""
    images = "Original" if padded else "imgs"  # both folder names occur in public code
    for index, row in enumerate(table("BUSIS562.csv")):
        number = int(row["img name"][4:])
        stem = f"case{number:04d}" if padded else f"case{number}"
        write_marked(root / images / f"{stem}.png", 16, 12, index)
        mask = np.zeros((12, 16), np.uint8)
        mask[4:8, 2 : 3 + index % 10] = 255
        (root / "GT").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(root / "GT" / f"{stem}_GT.bmp")
    shutil.copyfile(metadata("BUSIS562.csv"), root / "BUSIS562.csv")
    return root


def build_datasetb(root: Path, first_index: int = 0) -> Path:
    """Dataset B: imgs/000001.png.. for the ids of the real DatasetB.xlsx (sheet Hoja1), and the xlsx;
    `first_index` keeps its placeholders apart from another dataset's of the same size."""
    import openpyxl

    book = openpyxl.load_workbook(metadata("DatasetB.xlsx"), read_only=True)
    ids = [row[0] for row in book["Hoja1"].iter_rows(min_row=2, values_only=True) if row[0]]
    book.close()
    for index, image_id in enumerate(ids, start=first_index):
        write_marked(root / "imgs" / f"{image_id}.png", 16, 12, index)
    shutil.copyfile(metadata("DatasetB.xlsx"), root / "DatasetB.xlsx")
    return root


def build_combined(root: Path, rows: list[dict[str, str]] | None = None) -> Path:
    """BUS_Combined/: imgs/<img name>.png for the table's rows, and BUS_Combined.csv (real, or those rows)."""
    rows = table("BUS_Combined.csv") if rows is None else rows
    for index, row in enumerate(rows):
        write_marked(root / "imgs" / f"{row['img name']}.png", 16, 4, index)
    _write_table(root / "BUS_Combined.csv", "BUS_Combined.csv", rows)
    return root


def fold_names(fold_dir: Path) -> dict[str, set[str]]:
    """{side: img names} of one folderK (sides named as the dataset names them: train, val, test)."""
    sides = {"train": "train", "valid": "val", "test": "test"}
    out = {}
    for stem, side in sides.items():
        with (fold_dir / f"{stem}.csv").open(newline="", encoding="utf-8-sig") as handle:
            out[side] = {row["img name"] for row in csv.DictReader(handle)}
    return out
