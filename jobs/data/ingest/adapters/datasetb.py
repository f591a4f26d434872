"""Dataset B (UDIAT, Yap et al. 2018): `original/000001.png`.., `GT/` same names, `DatasetB.xlsx`.

Table columns: `Image` (the number: 1 = 000001.png) and `Type` (Benign/Malignant); the same table
as `DatasetB.csv` works too. Each image is its own case. Rows that give one image different labels
reject it (no row overwrites another).
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
    # image number -> {label (None: unreadable): (Type as written, table row)}; rows that agree are one
    labels: dict[int, dict[int | None, tuple[str, int]]] = {}
    for line, row in enumerate(rows, start=2):  # spreadsheet row numbers: the header is row 1
        number = _number(row[image_col])
        if number is None:
            yield Reject(source, f"{table}: {row[image_col]}", f"{image_col!r} is not an image number")
        else:
            labels.setdefault(number, {}).setdefault(parse_label(row[type_col]), (row[type_col], line))
    images = images_by_stem(originals, source)
    masks = images_by_stem(subfolder(root, "GT", "gt") or root / "GT", source)
    yield from images.rejects
    yield from masks.rejects
    found: set[int] = {n for n in map(_number, images.ambiguous) if n is not None}
    for stem, path in sorted(images.by_name.items()):
        number = _number(stem)
        if number is not None:
            found.add(number)
        written = labels.get(number, {}) if number is not None else {}
        if len(written) > 1:  # rows must not overwrite each other: neither label is trusted
            rows_said = ", ".join(f"row {line}: {text!r}" for text, line in written.values())
            yield Reject(source, str(path), f"conflicting rows in {table.name} ({rows_said})")
            continue
        label = next(iter(written), None)
        if label is None:
            text = next(iter(written.values()), (None,))[0]
            yield Reject(source, str(path), f"no label in {table.name} (Type={text!r})")
            continue
        if stem in masks.ambiguous:
            yield Reject(source, str(path), f"its mask in GT/ is ambiguous (several files named {stem})")
            continue
        mask = masks.by_name.get(stem)
        yield Candidate(source, f"{originals.name}/{path.name}", path, label, masks=(mask,) if mask else ())
    for stem in sorted(set(masks.by_name) - set(images.by_name) - images.ambiguous):
        yield Reject(source, str(masks.by_name[stem]), f"mask without its image in {originals.name}/")
    for number in sorted(set(labels) - found):
        yield Reject(source, f"{table}: {number}", f"listed, but no such image in {originals.name}/")
