"""`busnet synth` output: BUSI's layout plus `cases.csv` (columns `image`, `case_id`).

Images that cases.csv does not list are their own case.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from jobs.data.ingest.adapters._busi_layout import scan_busi
from jobs.data.ingest.found import Found, Reject
from jobs.data.ingest.tables import TableError, column, read_rows

CASES_FILE = "cases.csv"


def scan(root: Path, source: str) -> Iterator[Found]:
    cases: dict[str, str] = {}
    table = root / CASES_FILE
    if table.is_file():
        try:
            rows = read_rows(table)
            image, case = column(rows, "image"), column(rows, "caseid")
        except TableError as exc:
            yield Reject(source, str(table), str(exc))
            return
        cases = {row[image].replace("\\", "/"): row[case] for row in rows if row.get(case)}
    yield from scan_busi(root, source, cases)
