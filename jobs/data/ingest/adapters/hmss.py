"""HMSS (ultrasoundcases.info, via BUSBench's download notebook): `imgs/` + `HMSS.csv`; no masks.

Table columns (header spellings are matched loosely: case and punctuation ignored):
`image name` (file in imgs/, extension optional), `case id` (several images per case; optional:
without it each image is its own case), `tumor type` (benign/malignant, B/M, 0/1), and optional
`crop box` = "left, top, right, bottom" in pixels (brackets allowed), applied before storing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from jobs.data.ingest.found import Candidate, Found, Reject, images_by_stem, parse_label, subfolder
from jobs.data.ingest.tables import TableError, column, find_table, read_rows

TABLES = ("HMSS.csv", "HMSS.xlsx")


def parse_box(text: str) -> tuple[int, int, int, int] | None:
    """'[10, 20, 310, 220]' -> (10, 20, 310, 220); '' -> None; ValueError if not 4 numbers."""
    numbers = re.findall(r"-?\d+(?:\.\d+)?", text)
    if not numbers:
        return None
    if len(numbers) != 4:
        raise ValueError(f"crop box {text!r} is not 4 numbers (left, top, right, bottom)")
    left, top, right, bottom = (int(round(float(n))) for n in numbers)
    return left, top, right, bottom


def scan(root: Path, source: str) -> Iterator[Found]:
    images_dir = subfolder(root, "imgs", "images")
    table = find_table(root, TABLES) if root.is_dir() else None
    if images_dir is None or table is None:
        yield Reject(source, str(root), "unknown layout: expected imgs/ and HMSS.csv (HMSS layout)")
        return
    try:
        rows = read_rows(table)
        name_col = column(rows, "imagename", "image", "img", "imgname", "filename", "file")
        case_col = column(rows, "caseid", "case", "patientid", "patient", required=False)
        type_col = column(rows, "tumortype", "type", "label", "class", "diagnosis")
        box_col = column(rows, "cropbox", "crop", "bbox", "box", required=False)
    except TableError as exc:
        yield Reject(source, str(table), str(exc))
        return
    images = images_by_stem(images_dir)
    listed: set[str] = set()
    for row in rows:
        name = row[name_col]
        path = images_dir / name if (images_dir / name).is_file() else images.get(Path(name).stem)
        if path is None:
            yield Reject(source, f"{table}: {name}", f"listed, but no such image in {images_dir.name}/")
            continue
        listed.add(path.stem)
        label = parse_label(row[type_col])
        if label is None:
            yield Reject(source, str(path), f"no label ({type_col}={row[type_col]!r} in {table.name})")
            continue
        try:
            box = parse_box(row.get(box_col) or "") if box_col else None
        except ValueError as exc:
            yield Reject(source, str(path), str(exc))
            continue
        case = row.get(case_col) if case_col else None
        yield Candidate(source, f"{images_dir.name}/{path.name}", path, label, case=case or None, crop=box)
    for stem in sorted(set(images) - listed):
        yield Reject(source, str(images[stem]), f"no label: not listed in {table.name}")
