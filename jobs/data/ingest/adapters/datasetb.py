"""Dataset B (UDIAT, Yap et al. 2018): `original/000001.png`.., `GT/` same names, `DatasetB.xlsx`.

Table columns: `Image` (the number: 1 = 000001.png) and `Type` (Benign/Malignant); the same table
as `DatasetB.csv` works too. Each image is its own case.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from jobs.data.ingest.found import Candidate, Found, Reject, images_by_stem, parse_label, subfolder
from jobs.data.ingest.tables import TableError, column, find_table, read_rows

TABLES = ("DatasetB.xlsx", "DatasetB.csv")


def _number(text: str) -> int | None:
    """The image number of '7', '7.0', '000007' or '000007.png'."""
    for candidate in (text, Path(text).stem):
        try:
            return int(float(candidate))
        except ValueError:
            continue
    return None


def scan(root: Path, source: str) -> Iterator[Found]:
    originals = subfolder(root, "original", "Original", "imgs")
    table = find_table(root, TABLES) if root.is_dir() else None
    if originals is None or table is None:
        yield Reject(source, str(root), "unknown layout: expected original/, GT/ and DatasetB.xlsx (Dataset B layout)")
        return
    try:
        rows = read_rows(table)
        image_col, type_col = column(rows, "image", "imagename", "img"), column(rows, "type", "tumortype", "label")
    except TableError as exc:
        yield Reject(source, str(table), str(exc))
        return
    labels = {}
    for row in rows:
        number = _number(row[image_col])
        if number is None:
            yield Reject(source, f"{table}: {row[image_col]}", f"{image_col!r} is not an image number")
        else:
            labels[number] = row[type_col]
    masks = images_by_stem(subfolder(root, "GT", "gt") or root / "GT")
    found: set[int] = set()
    for stem, path in sorted(images_by_stem(originals).items()):
        number = _number(stem)
        label = parse_label(labels.get(number)) if number is not None else None
        if number is not None:
            found.add(number)
        if label is None:
            yield Reject(source, str(path), f"no label in {table.name} (Type={labels.get(number)!r})")
            continue
        mask = masks.get(stem)
        yield Candidate(source, f"{originals.name}/{path.name}", path, label, masks=(mask,) if mask else ())
    for number in sorted(set(labels) - found):
        yield Reject(source, f"{table}: {number}", f"listed, but no such image in {originals.name}/")
