"""HMSS (ultrasoundcases.info, scraped by BUSBench's notebook): `imgs/` + `HMSS.csv`, as published.

The real table: UTF-8 with BOM, a trailing empty column, `img name`, `case id/cover img id` (478 cases
for 2,006 images), the four crop columns and `tumor type` Benign/Malignant. Layout and crop rule:
jobs.data.ingest.adapters._crop_table.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from jobs.data.ingest.adapters._crop_table import scan_table
from jobs.data.ingest.found import Found

TABLES = ("HMSS.csv", "HMSS.xlsx")


def scan(root: Path, source: str) -> Iterator[Found]:
    return scan_table(root, source, TABLES)
