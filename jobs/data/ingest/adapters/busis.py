"""BUSIS (Xian et al., 562 images): `Original/caseN.*`, `GT/caseN_GT.bmp`, `BUSIS562.csv`.

Table columns: `img name` (case0001), `Ground Truth Name` (optional; default `<img name>_GT`),
`tumor type` (B/M). The table may also be `BUSIS.xlsx`. No patient ids: each image is its own case.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from jobs.data.ingest.found import Candidate, Found, Reject, images_by_stem, parse_label, subfolder
from jobs.data.ingest.tables import TableError, column, find_table, read_rows

TABLES = ("BUSIS562.csv", "BUSIS.csv", "BUSIS562.xlsx", "BUSIS.xlsx")


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
    images = images_by_stem(originals)
    masks = images_by_stem(subfolder(root, "GT", "gt") or root / "GT")
    listed: set[str] = set()
    for row in rows:
        stem = Path(row[name_col]).stem
        path = images.get(stem)
        if path is None:
            yield Reject(source, f"{table}: {row[name_col]}", f"listed, but no such image in {originals.name}/")
            continue
        listed.add(stem)
        label = parse_label(row[type_col])
        if label is None:
            yield Reject(source, str(path), f"no label ({type_col}={row[type_col]!r} in {table.name})")
            continue
        mask = masks.get(Path(row.get(gt_col) or f"{stem}_GT").stem)
        yield Candidate(source, f"{originals.name}/{path.name}", path, label, masks=(mask,) if mask else ())
    for stem in sorted(set(images) - listed):
        yield Reject(source, str(images[stem]), f"no label: not listed in {table.name}")
