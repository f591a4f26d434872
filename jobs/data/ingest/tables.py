"""Label tables as shipped (CSV or Excel), read into rows keyed by normalised column names."""

from __future__ import annotations

import csv
import re
from pathlib import Path

TABLE_SUFFIXES = (".csv", ".xlsx")


class TableError(ValueError):
    """A table that cannot be used (unreadable, or a needed column is missing)."""


def normalise(name: object) -> str:
    """'Ground Truth Name' -> 'groundtruthname': header spellings vary between releases."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a .csv or .xlsx file (first sheet), keys normalised, values stripped strings."""
    try:
        if path.suffix.lower() == ".xlsx":
            import openpyxl

            book = openpyxl.load_workbook(path, read_only=True, data_only=True)
            try:
                values = [list(r) for r in book.worksheets[0].iter_rows(values_only=True)]
            finally:
                book.close()
        else:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                values = list(csv.reader(handle))
    except Exception as exc:  # openpyxl and csv raise many types for a broken file
        raise TableError(f"unreadable table: {type(exc).__name__}: {exc}") from exc
    if not values:
        raise TableError("empty table")
    header = [normalise(h) for h in values[0]]
    rows = []
    for raw in values[1:]:
        cells = ["" if v is None else _text(v) for v in raw]
        if any(cells):
            rows.append(dict(zip(header, cells)))
    return rows


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def column(rows: list[dict[str, str]], *names: str, required: bool = True) -> str | None:
    """The first of `names` (normalised spellings) that the table has."""
    present = set(rows[0]) if rows else set()
    for name in names:
        if name in present:
            return name
    if required:
        raise TableError(f"no column {names[0]!r} (accepted spellings: {', '.join(names)})")
    return None


def find_table(root: Path, preferred: tuple[str, ...]) -> Path | None:
    """The label table in `root`: one of the preferred names, else the only CSV/XLSX there."""
    for name in preferred:
        if (root / name).is_file():
            return root / name
    tables = sorted(p for p in root.iterdir() if p.suffix.lower() in TABLE_SUFFIXES and p.is_file())
    return tables[0] if len(tables) == 1 else None
