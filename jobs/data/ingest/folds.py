"""Predefined folds (`busnet ingest --folds-from DIR`): BUSBench's `folderK/{train,valid,test}.csv`.

Each fold file lists images by `img name` (the source table's name, else the file stem); the fold's
sides are taken exactly as listed instead of drawing new ones. An image a fold does not list is
unused in that fold (""); fold files that put one image or one case on two sides are refused with
the offending ids, and names that match no ingested image are counted (rejected or absent images).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from jobs.data.ingest.tables import TableError, column, read_rows
from jobs.errors import BusnetError

SIDES = {"train": "train", "valid": "val", "test": "test"}  # file stem -> dataset split name
_FOLDER = re.compile(r"^fold(?:er)?_?(\d+)$", re.IGNORECASE)


def fold_dirs(root: Path) -> list[Path]:
    """folder1..folderK in numeric order (`folds/` itself or the folder holding it)."""
    root = root / "folds" if (root / "folds").is_dir() else root
    found = sorted(
        (int(m[1]), p) for p in (root.iterdir() if root.is_dir() else []) if (m := _FOLDER.match(p.name)) and p.is_dir()
    )
    if not found:
        raise BusnetError(f"--folds-from {root}: no folderK/ subfolders with train.csv, valid.csv, test.csv")
    return [p for _, p in found]


def _listed(path: Path) -> list[str]:
    if not path.is_file():
        raise BusnetError(f"{path}: missing (a fold needs {', '.join(f'{s}.csv' for s in SIDES)})")
    try:
        rows = read_rows(path)
        if not rows:
            return []
        name_col = column(rows, "imgname", "image", "imagename")
    except TableError as exc:
        raise BusnetError(f"{path}: {exc}") from exc
    return [row[name_col] for row in rows]


def read_folds(root: Path, meta: Sequence[dict]) -> tuple[list[list[str]], dict]:
    """(each row's side per fold, report); BusnetError for a fold that splits an image or a case."""
    index: dict[str, int] = {}
    for i, row in enumerate(meta):
        if row["name"] in index:
            raise BusnetError(
                f"--folds-from: image name {row['name']!r} is both {meta[index[row['name']]]['image_id']} "
                f"and {row['image_id']}; fold files name images by file stem, which must be unique"
            )
        index[row["name"]] = i
    sides: list[list[str]] = []
    report = {"from": str(root), "folds": [], "unmatched": {}}
    for folder in fold_dirs(root):
        side = [""] * len(meta)
        names_on: dict[str, set[str]] = defaultdict(set)
        unmatched = 0
        for stem, split in SIDES.items():
            for name in _listed(folder / f"{stem}.csv"):
                names_on[name].add(split)
                if name in index:
                    side[index[name]] = split
                else:
                    unmatched += 1
        _refuse_two_sides(folder, names_on, meta, index, side)
        sides.append(side)
        report["folds"].append(folder.name)
        report["unmatched"][folder.name] = unmatched
    if not any(s for side in sides for s in side):
        raise BusnetError(f"--folds-from {root}: the fold files name none of the ingested images")
    return sides, report


def _refuse_two_sides(
    folder: Path, names_on: dict[str, set[str]], meta: Sequence[dict], index: dict[str, int], side: list[str]
) -> None:
    twice = sorted(name for name, on in names_on.items() if len(on) > 1)
    if twice:
        raise BusnetError(f"{folder}: images listed on two sides: {', '.join(twice[:10])}")
    case_sides: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for i, s in enumerate(side):
        if s:
            case_sides[meta[i]["case_id"]][s].append(meta[i]["name"])
    split = {case: on for case, on in sorted(case_sides.items()) if len(on) > 1}
    if split:
        shown = "; ".join(
            case + " (" + ", ".join(f"{s}: {' '.join(sorted(names))}" for s, names in sorted(on.items())) + ")"
            for case, on in list(split.items())[:5]
        )
        raise BusnetError(f"{folder}: {len(split)} case(s) on two sides: {shown}")
