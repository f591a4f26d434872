"""Rows -> Parquet shards of bounded size, in two passes.

Splits are decided by case over all ingested rows, so they are known only after every image was
read. Pass 1 spools encoded rows into shards without the split/fold columns (memory stays at one
shard); pass 2 rewrites each shard with its split, fold and fold_splits columns in the dataset's schema.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.data.dataset import SCHEMA, shard_name

SPLIT_COLUMNS = ("split", "fold", "fold_splits")
# Parquet is read a row group at a time: with one row group per shard (pyarrow's default, up to a million
# rows) a reader's first rows waited for the whole shard, and Ray Data's size sampling read it all once
# more. Row groups of about 4 MB let decoding start after the first of them.
ROW_GROUP_BYTES = 4 * 1024 * 1024
SPOOL_SCHEMA = pa.schema([f for f in SCHEMA if f.name not in SPLIT_COLUMNS])
_ROW_OVERHEAD = 256  # bytes of ids, hash and sizes per row, roughly


class ShardWriter:
    """Appends rows; starts a new shard before one would exceed `max_bytes` (a lone huge row still fits)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.files: list[Path] = []
        self._rows: list[dict] = []
        self._bytes = 0

    def add(self, row: dict) -> None:
        size = len(row["image"]) + len(row["mask"] or b"") + _ROW_OVERHEAD
        if self._rows and self._bytes + size > self.max_bytes:
            self._flush()
        self._rows.append(row)
        self._bytes += size

    def close(self) -> list[Path]:
        if self._rows:
            self._flush()
        return self.files

    def _flush(self) -> None:
        path = self.directory / shard_name(len(self.files))
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self._rows, schema=SPOOL_SCHEMA), path)
        self.files.append(path)
        self._rows, self._bytes = [], 0


def _group_rows(table: pa.Table) -> int:
    """Rows per row group for about ROW_GROUP_BYTES each (at least one row)."""
    return max(1, table.num_rows * ROW_GROUP_BYTES // max(1, table.nbytes))


def add_splits(
    spool: ShardWriter,
    out_dir: Path,
    split: Sequence[str],
    fold: Sequence[int],
    sides: Sequence[Sequence[str]],
    drop: Collection[str] = (),
) -> list[str]:
    """Write each spooled shard again under `out_dir`, without the rows whose image id is in `drop`
    (spooled, then rejected by a later copy), with the other rows' split, fold and per-fold sides
    (`sides[k][row]`, rows counted without the dropped ones); the shard names."""
    per_row = [list(row_sides) for row_sides in zip(*sides)]
    names, start = [], 0
    for path in spool.files:
        table = pq.read_table(path, schema=SPOOL_SCHEMA)
        if drop:
            table = table.filter(pc.invert(pc.is_in(table["image_id"], pa.array(sorted(drop), pa.string()))))
        if not table.num_rows:
            path.unlink()
            continue
        rows = slice(start, start + table.num_rows)
        table = table.append_column(SCHEMA.field("split"), pa.array(split[rows], pa.string()))
        table = table.append_column(SCHEMA.field("fold"), pa.array(fold[rows], pa.int8()))
        table = table.append_column(SCHEMA.field("fold_splits"), pa.array(per_row[rows], pa.list_(pa.string())))
        name = shard_name(len(names))
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.select(SCHEMA.names).cast(SCHEMA), out_dir / name, row_group_size=_group_rows(table))
        path.unlink()
        names.append(name)
        start += table.num_rows
    return names
