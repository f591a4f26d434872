"""BUSBench (github:MIDA-Lab/busbench): its combined set, or its `Benchmark/Datasets/` tree.

Two layouts, told apart by BUS_Combined.csv:
    <root>/imgs/ + BUS_Combined.csv         (the `BUS_Combined/` folder, or a root holding it)
        3,641 images of five datasets; `img name`, `case id/cover img id`, `tumor type` 0/1; no masks
    <root>/HMSS/ BUSI/ BUSIS/ DatasetB/ Thammasat/     (`Benchmark/Datasets/`, any of them)
        each read by its own adapter; image ids and cases get the folder as prefix (`HMSS/imgs/2879.jpg`)
Either way the image's `img name` (file stem) is what the benchmark's fold files list.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from jobs.data.ingest.found import Candidate, Found, Reject, images_by_stem, parse_label
from jobs.data.ingest.tables import TableError, column, read_rows

COMBINED = "BUS_Combined"
TABLE = f"{COMBINED}.csv"
DATASETS = {"HMSS": "hmss", "BUSI": "busi", "BUSIS": "busis", "DatasetB": "datasetb", "Thammasat": "thammasat"}


def scan(root: Path, source: str) -> Iterator[Found]:
    combined = root / COMBINED if (root / COMBINED / TABLE).is_file() else root
    if (combined / TABLE).is_file():
        yield from _scan_combined(combined, source)
    elif any((root / folder).is_dir() for folder in DATASETS):
        yield from _scan_tree(root, source)
    else:
        yield Reject(
            source,
            str(root),
            f"unknown layout: expected imgs/ + {TABLE}, or Benchmark/Datasets/ with {', '.join(DATASETS)}",
        )


def _scan_combined(root: Path, source: str) -> Iterator[Found]:
    table = root / TABLE
    try:
        rows = read_rows(table)
        name_col, case_col = column(rows, "imgname"), column(rows, "caseidcoverimgid", "caseid")
        type_col = column(rows, "tumortype")
    except TableError as exc:
        yield Reject(source, str(table), str(exc))
        return
    found = images_by_stem(root / "imgs", source)
    yield from found.rejects
    images, listed = found.by_name, set(found.ambiguous)  # ambiguous: rejected above
    for row in rows:
        name = row[name_col]
        if name in found.ambiguous:
            continue
        path = images.get(name)
        if path is None:
            yield Reject(source, f"{table}: {name}", "listed, but no such image in imgs/")
            continue
        listed.add(name)
        label = parse_label(row[type_col])
        if label is None:
            yield Reject(source, str(path), f"no label ({type_col}={row[type_col]!r} in {TABLE})")
            continue
        yield Candidate(source, f"imgs/{path.name}", path, label, case=row[case_col] or None, name=name)
    for stem in sorted(set(images) - listed):
        yield Reject(source, str(images[stem]), f"no label: not listed in {TABLE}")


def _scan_tree(root: Path, source: str) -> Iterator[Found]:
    for folder, adapter in DATASETS.items():
        if not (root / folder).is_dir():
            continue
        scan_one = importlib.import_module(f"jobs.data.ingest.adapters.{adapter}").scan
        for item in scan_one(root / folder, source):
            if isinstance(item, Candidate):
                case = f"{folder}/{item.case}" if item.case else None
                yield replace(item, key=f"{folder}/{item.key}", case=case, name=item.listed_name)
            else:
                yield item
