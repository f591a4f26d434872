"""The scraped-dataset layout BUSBench publishes for HMSS and Thammasat: `imgs/` + one CSV.

    <root>/imgs/<img name>.jpg       the raw download, or already cropped in place
    <root>/imgs/<img name>_crop.jpg  (optional) the cropped copy the benchmark's notebook writes
    <root>/<TABLE>.csv               `img name`, `case id/cover img id`, `tumor type`,
                                     `crop r1, crop r2, crop col1, crop col2` (top, height, left, width)
The crop is applied once (jobs.data.ingest.encode decides by image size vs box): a `_crop` copy is
preferred over the raw file (then Skipped, counted). Several images share a case (`case id/cover
img id`). No masks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from jobs.data.ingest.found import Candidate, Found, Reject, Skipped, images_by_stem, parse_label, subfolder
from jobs.data.ingest.tables import TableError, column, find_table, read_rows

CROP_SUFFIX = "_crop"
_BOX_COLUMNS = ("cropr1", "cropr2", "cropcol1", "cropcol2")


def crop_box(row: dict[str, str]) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) from BUSBench's (r1 top, r2 height, col1 left, col2 width); None if blank."""
    cells = [row.get(name, "") for name in _BOX_COLUMNS]
    if not any(cells):
        return None
    top, height, left, width = (int(round(float(cell))) for cell in cells)
    if height <= 0 or width <= 0:
        raise ValueError(f"crop r2 {height} / col2 {width}: an empty crop box")
    return left, top, left + width, top + height


def scan_table(root: Path, source: str, tables: tuple[str, ...]) -> Iterator[Found]:
    images_dir = subfolder(root, "imgs", "images")
    table = find_table(root, tables) if root.is_dir() else None
    if images_dir is None or table is None:
        yield Reject(source, str(root), f"unknown layout: expected imgs/ and {tables[0]} ({source} layout)")
        return
    try:
        rows = read_rows(table)
        name_col, case_col = column(rows, "imgname"), column(rows, "caseidcoverimgid", "caseid")
        type_col = column(rows, "tumortype")
        for name in _BOX_COLUMNS:
            column(rows, name)
    except TableError as exc:
        yield Reject(source, str(table), str(exc))
        return
    found = images_by_stem(images_dir, source)
    yield from found.rejects
    images, used = found.by_name, set(found.ambiguous)  # ambiguous: rejected above
    for row in rows:
        name = Path(row[name_col]).stem
        copy = name + CROP_SUFFIX
        stem = copy if copy in images or copy in found.ambiguous else name
        if stem == copy and name in images:  # the raw file beside a _crop copy is not another image
            yield Skipped(source, str(images[name]), f"raw image beside its {CROP_SUFFIX} copy")
        used.update((name, copy))
        if stem in found.ambiguous:
            continue  # its files are rejected above
        path = images.get(stem)
        if path is None:
            yield Reject(source, f"{table}: {name}", f"listed, but no such image in {images_dir.name}/")
            continue
        label = parse_label(row[type_col])
        if label is None:
            yield Reject(source, str(path), f"no label ({type_col}={row[type_col]!r} in {table.name})")
            continue
        try:
            box = crop_box(row)
        except ValueError as exc:
            yield Reject(source, str(path), f"crop columns in {table.name}: {exc}")
            continue
        key = f"{images_dir.name}/{path.name}"
        yield Candidate(source, key, path, label, case=row[case_col] or None, crop=box, name=name)
    for stem in sorted(set(images) - used):
        yield Reject(source, str(images[stem]), f"no label: not listed in {table.name}")
