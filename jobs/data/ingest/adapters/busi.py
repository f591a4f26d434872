"""BUSI (Al-Dhabyani et al. 2020): benign/ and malignant/ folders, `_mask` files; no patient ids.

Each image is its own case; several mask files of one image are one lesion (their union);
normal/ is skipped and counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from jobs.data.ingest.adapters._busi_layout import scan_busi
from jobs.data.ingest.found import Found


def scan(root: Path, source: str) -> Iterator[Found]:
    return scan_busi(root, source)
