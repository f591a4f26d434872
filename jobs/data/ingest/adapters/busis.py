"""BUSIS (Xian et al., 562 images): `Original/caseN.*`, `GT/caseN_GT.bmp`, `BUSIS562.csv`.

Table columns: `img name` (case0001), `Ground Truth Name` (optional; default `<img name>_GT`),
`tumor type` (B/M). The table may also be `BUSIS.xlsx`. No patient ids: each image is its own case.
Files are matched to the table on the case number: releases name them `case0001.png` or `case1.png`
(and `case0001_GT.bmp` or `case1_GT.bmp`); the images folder may be `Original/` or BUSBench's `imgs/`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from jobs.data.ingest.found import Candidate, Found, Reject, images_by_stem, parse_label, subfolder
from jobs.data.ingest.tables import TableError, column, find_table, read_rows

TABLES = ("BUSIS562.csv", "BUSIS.csv", "BUSIS562.xlsx", "BUSIS.xlsx")
_NUMBERED = re.compile(r"^(?P<prefix>[a-z]*?)0*(?P<number>\d+)(?P<suffix>_gt)?$", re.IGNORECASE)


def number_key(stem: str) -> str:
    """'case0001' and 'case1' -> 'case1'; 'case0001_GT' -> 'case1_gt': padding is not part of the name."""
    match = _NUMBERED.match(stem)
    if not match:
        return stem.lower()
    return f"{match['prefix'].lower()}{int(match['number'])}{(match['suffix'] or '').lower()}"


def scan(root: Path, source: str) -> Iterator[Found]:
    originals = subfolder(root, "Original", "original", "imgs")
    table = find_table(root, TABLES) if root.is_dir() else None
    if originals is None or table is None:
        yield Reject(source, str(root), "unknown layout: expected Original/, GT/ and BUSIS562.csv (BUSIS layout)")
        return
    try:
        rows = read_rows(table)
        name_col = column(rows, "imgname", "image", "imagename")
        gt_col = column(rows, "groundtruthname", "gtname", "gt", required=False)
        type_col = column(rows, "tumortype", "type", "label")
    except TableError as exc:
        yield Reject(source, str(table), str(exc))
        return
    found = images_by_stem(originals, source, key=number_key)
    masks = images_by_stem(subfolder(root, "GT", "gt") or root / "GT", source, key=number_key)
    yield from found.rejects
    yield from masks.rejects
    images = found.by_name
    listed: set[str] = set(found.ambiguous)  # their files are rejected above
    for row in rows:
        stem = Path(row[name_col]).stem
        if number_key(stem) in found.ambiguous:
            continue
        path = images.get(number_key(stem))
        if path is None:
            yield Reject(source, f"{table}: {row[name_col]}", f"listed, but no such image in {originals.name}/")
            continue
        listed.add(number_key(stem))
        label = parse_label(row[type_col])
        if label is None:
            yield Reject(source, str(path), f"no label ({type_col}={row[type_col]!r} in {table.name})")
            continue
        mask_key = number_key(Path(row.get(gt_col) or f"{stem}_GT").stem)
        if mask_key in masks.ambiguous:
            yield Reject(source, str(path), f"its mask in GT/ is ambiguous (several files named {mask_key})")
            continue
        mask = masks.by_name.get(mask_key)
        key = f"{originals.name}/{path.name}"
        yield Candidate(source, key, path, label, masks=(mask,) if mask else (), name=stem)
    for key in sorted(set(images) - listed):
        yield Reject(source, str(images[key]), f"no label: not listed in {table.name}")
