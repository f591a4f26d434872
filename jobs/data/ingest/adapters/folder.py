"""Any images: a CSV (or .xlsx) table that lists them; `--source folder=/data/hospital.csv`.

Columns (exact names, any order): `image` (path), `label` (benign/malignant, B/M or 0/1),
`mask` (optional: path, or several paths joined by ';' whose union is the lesion; empty = no mask),
`case_id` (optional: patient/case id; empty = the image is its own case). Paths are relative to
the table's folder and must stay inside it: an absolute path or a `..` part is rejected with the
reason, and (jobs.data.ingest.run) so is a symlink that leads out of the folder. The image id is
`folder/<image path as written>`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from jobs.data.ingest.found import Candidate, Found, Reject, is_image, parse_label
from jobs.data.ingest.tables import TABLE_SUFFIXES, TableError, column, read_rows


def scan(root: Path, source: str) -> Iterator[Found]:
    if not (root.is_file() and root.suffix.lower() in TABLE_SUFFIXES):
        yield Reject(
            source,
            str(root),
            "unknown layout: the folder source is a .csv or .xlsx table with columns image, label[, mask, case_id]",
        )
        return
    try:
        rows = read_rows(root)
        image_col, label_col = column(rows, "image"), column(rows, "label")
        mask_col, case_col = column(rows, "mask", required=False), column(rows, "caseid", required=False)
    except TableError as exc:
        yield Reject(source, str(root), str(exc))
        return
    base = root.parent
    for number, row in enumerate(rows, start=2):  # spreadsheet row numbers: the header is row 1
        written = row[image_col].replace("\\", "/")
        where = f"{root}:{number}"
        if not written:
            yield Reject(source, where, "no image path")
            continue
        outside = _leaves_folder(written)
        if outside:
            yield Reject(source, f"{where}: {written}", f"image path {outside}")
            continue
        path = base / written
        if not is_image(path):
            yield Reject(source, str(path), "no such image file" if not path.exists() else "not an image file")
            continue
        label = parse_label(row[label_col])
        if label is None:
            yield Reject(source, str(path), f"no label (label={row[label_col]!r} at {where})")
            continue
        mask_text = row.get(mask_col, "") if mask_col else ""
        mask_paths = [m.strip().replace("\\", "/") for m in mask_text.split(";") if m.strip()]
        outside = next((f"{m!r}: {why}" for m in mask_paths if (why := _leaves_folder(m))), None)
        if outside:
            yield Reject(source, str(path), f"mask path {outside}")
            continue
        masks = tuple(base / m for m in mask_paths)
        missing = [str(m) for m in masks if not m.is_file()]
        if missing:
            yield Reject(source, str(path), f"mask file not found: {missing[0]}")
            continue
        case = row.get(case_col) if case_col else None
        yield Candidate(source, written, path, label, case=case or None, masks=masks)


def _leaves_folder(written: str) -> str | None:
    """Why a path from the table would be read from outside the table's folder, or None."""
    if PurePosixPath(written).is_absolute() or PureWindowsPath(written).drive:
        return "is absolute: paths are relative to the table's folder and stay inside it"
    if ".." in PurePosixPath(written).parts:
        return "has a '..' part: paths must stay inside the table's folder"
    return None
