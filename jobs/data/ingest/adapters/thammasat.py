"""Thammasat (onlinemedicalimages.com, scraped by BUSBench's notebook): `imgs/` + `Thammasat.csv`.

The same table shape as HMSS (`img url`, `img name`, `case id/cover img id` like `Case-2`, `tumor type`
benign/malignant, the four crop columns): jobs.data.ingest.adapters._crop_table.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from jobs.data.ingest.adapters._crop_table import scan_table
from jobs.data.ingest.found import Found

TABLES = ("Thammasat.csv", "Thammasat.xlsx")


def scan(root: Path, source: str) -> Iterator[Found]:
    return scan_table(root, source, TABLES)
