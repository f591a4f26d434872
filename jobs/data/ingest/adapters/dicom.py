"""DICOM files in any folder tree, labelled by a table: `--source dicom=DIR` (or `dicom=DIR/labels.csv`).

The table (CSV or .xlsx: DIR/labels.csv, the only table in DIR, or the one given) has a `label`
column and, per row, a key: `file` (path relative to the table's folder, or a bare file name when it
is unique) or `sop_instance_uid`. Optional: `frame` (a frame number of a multi-frame file, 1 = the
first, as DICOM numbers them; empty = every frame) and `mask` (PNG/JPEG/BMP path(s) relative to the
table, ';'-joined for a union, of the frame's size; a multi-frame file's mask needs its frame).
Every other file under the folder is a DICOM file (found by its DICM preamble, whatever its name) or
a reject; DICOMDIR indexes and hidden files are skipped.

Privacy: the dataset row keeps the frame's pixels (re-encoded as PNG, no header), the label and, as
case_id, a one-way hash of the StudyInstanceUID, so the frames and files of a study share a case and
a split. The hash is unsalted (sha256 with a fixed busnet prefix): the same study gets the same case
in every ingestion and every export, which keeps splits reproducible; someone who already holds a
StudyInstanceUID can confirm it is in the dataset, nobody can read one from it. The image id is the
file's path under DIR (`dicom/<path>`, `#<frame>` for a frame of a multi-frame file): name exports
without patient data. Rejects name the file and the reason, never a header value.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from jobs.data.ingest.found import Candidate, Found, Reject, Skipped, escapes, parse_label
from jobs.data.ingest.tables import TABLE_SUFFIXES, TableError, column, find_table, read_rows
from models.dicom import DicomFile, is_dicom
from models.image_error import ImageError

TABLE_NAMES = ("labels.csv", "labels.xlsx")
CASE_PREFIX = b"busnet/dicom/StudyInstanceUID\0"


def study_case(study_uid: str) -> str:
    """The case id of a study: 32 hex digits of sha256, one way (see the module's docstring)."""
    return hashlib.sha256(CASE_PREFIX + study_uid.encode()).hexdigest()[:32]


def scan(root: Path, source: str) -> Iterator[Found]:
    table = root if root.is_file() else find_table(root, TABLE_NAMES) if root.is_dir() else None
    if table is None or table.suffix.lower() not in TABLE_SUFFIXES:
        yield Reject(
            source,
            str(root),
            f"no labels table: put {TABLE_NAMES[0]} (columns file or sop_instance_uid, "
            "label[, frame, mask]) in the folder, or give the table as the source",
        )
        return
    try:
        rows = read_rows(table)
        label_col = column(rows, "label")
        file_col, uid_col = column(rows, "file", required=False), column(rows, "sopinstanceuid", required=False)
        frame_col, mask_col = column(rows, "frame", required=False), column(rows, "mask", required=False)
        if not (file_col or uid_col):
            raise TableError("no column 'file' or 'sop_instance_uid' to find each row's DICOM file")
    except TableError as exc:
        yield Reject(source, str(table), str(exc))
        return
    base = table.parent
    masks = {(base / m.strip()).resolve() for row in rows for m in row.get(mask_col or "", "").split(";") if m.strip()}
    files: dict[Path, DicomFile] = {}
    examined = [p for p in sorted(base.rglob("*")) if p.is_file() and p != table and p.resolve() not in masks]
    for path in examined:
        found = _examine(path, base, source)
        if isinstance(found, DicomFile):
            files[path] = found
        else:
            yield found
    by_file = _rows_by_file(rows, examined, files, base, file_col, uid_col)
    for number, row in enumerate(rows, start=2):  # spreadsheet numbers: the header is row 1
        if number not in by_file.matched:
            key = f"file {row[file_col]}" if file_col and row.get(file_col) else "this row's sop_instance_uid"
            yield Reject(source, f"{table}:{number}", f"no DICOM file matches {key}")
    for path, dicom in files.items():
        listed = by_file.rows.get(path)
        if not listed:
            yield Reject(
                source, str(path), f"no label: {table.name} has no row for this file (file or sop_instance_uid)"
            )
            continue
        yield from _frames(source, base, path, dicom, listed, label_col, frame_col, mask_col)


def _examine(path: Path, base: Path, source: str) -> DicomFile | Found:
    """A file under the folder: DicomFile for a usable DICOM image, else its Reject (or Skipped)."""
    if any(part.startswith(".") for part in path.relative_to(base).parts):
        return Skipped(source, str(path), "hidden file")
    if escapes(path, base):  # a symlink out of the folder: its header is not read either
        return Reject(source, str(path), f"resolves outside the source root {base} (symlink): not read")
    if path.name.upper() == "DICOMDIR":
        return Skipped(source, str(path), "DICOMDIR index")
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError as exc:
        return Reject(source, str(path), f"unreadable: {exc.strerror or exc}")
    if not is_dicom(head):
        return Reject(source, str(path), "not a DICOM file (no DICM preamble)")
    try:
        dicom = DicomFile(path)
    except ImageError as exc:
        return Reject(source, str(path), str(exc))
    if dicom.study_uid is None:
        return Reject(source, str(path), "no StudyInstanceUID: cannot keep its study in one split")
    return dicom


class _Matches:
    """Which table rows (by spreadsheet number) list which file."""

    def __init__(self) -> None:
        self.rows: dict[Path, list[tuple[int, dict]]] = defaultdict(list)
        self.matched: set[int] = set()


def _rows_by_file(
    rows: list[dict],
    examined: list[Path],
    files: dict[Path, DicomFile],
    base: Path,
    file_col: str | None,
    uid_col: str | None,
) -> _Matches:
    """Rows matched by path or unique file name among all files (a rejected file's row is no second
    reject), or by SOP Instance UID among the usable DICOM files."""
    by_path = {path.relative_to(base).as_posix(): path for path in examined}
    by_name: dict[str, list[Path]] = defaultdict(list)
    for path in examined:
        by_name[path.name].append(path)
    by_uid = {dicom.sop_instance_uid: path for path, dicom in files.items() if dicom.sop_instance_uid}
    matches = _Matches()
    for number, row in enumerate(rows, start=2):
        written = (row.get(file_col) or "").replace("\\", "/").strip().removeprefix("./") if file_col else ""
        uid = (row.get(uid_col) or "").strip() if uid_col else ""
        named = by_name.get(written, [])
        path = by_path.get(written) or (named[0] if len(named) == 1 else None) or by_uid.get(uid)
        if path is not None:
            matches.rows[path].append((number, row))
            matches.matched.add(number)
    return matches


def _frames(
    source: str,
    base: Path,
    path: Path,
    dicom: DicomFile,
    listed: list[tuple[int, dict]],
    label_col: str,
    frame_col: str | None,
    mask_col: str | None,
) -> Iterator[Found]:
    """The candidates of one file: each listed frame (or every frame) with its row's label and mask."""
    key, case = path.relative_to(base).as_posix(), study_case(dicom.study_uid)
    seen: dict[int, int] = {}
    for number, row in listed:
        label = parse_label(row[label_col])
        frame_text = (row.get(frame_col) or "").strip() if frame_col else ""
        masks = tuple(base / m.strip() for m in (row.get(mask_col) or "").split(";") if m.strip()) if mask_col else ()
        reason = _row_problem(row[label_col], label, frame_text, dicom.frames, masks)
        if reason:
            yield Reject(source, str(path), f"{reason} (row {number})")
            continue
        frames = [int(frame_text)] if frame_text else list(range(1, dicom.frames + 1))
        for frame in frames:
            if frame in seen:
                yield Reject(source, str(path), f"frame {frame} listed twice (rows {seen[frame]} and {number})")
                continue
            seen[frame] = number
            frame_key = key if dicom.frames == 1 else f"{key}#{frame}"
            yield Candidate(source, frame_key, path, label, case=case, masks=masks, frame=frame)


def _row_problem(text: str, label: int | None, frame_text: str, frames: int, masks: tuple[Path, ...]) -> str | None:
    if label is None:
        return f"no label (label={text!r})"
    if frame_text and not (frame_text.isdigit() and 1 <= int(frame_text) <= frames):
        return f"frame {frame_text!r}: the file has {frames} frame{'s' if frames > 1 else ''} (1-{frames})"
    if masks and frames > 1 and not frame_text:
        return f"a mask for a file of {frames} frames needs the frame it outlines (column frame)"
    missing = [str(m) for m in masks if not m.is_file()]
    if missing:
        return f"mask file not found: {missing[0]}"
    return None
