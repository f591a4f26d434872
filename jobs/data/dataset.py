"""The busnet dataset format: Parquet shards + manifest.json in one published directory.

    <version>/manifest.json            counts, rejects, content hash, parameters, shard list
    <version>/data/part-00000.parquet  one row per image (columns: SCHEMA), bounded size

published by jobs.storage.publish_dir: <version> is <uri>/versions/v-.../, and <uri>/_COMPLETE,
written last, points to it (the previous version is kept until the next ingestion). A dataset from
before versions (the files directly in <uri>) still reads.

Readers go through this module so that an incomplete or missing dataset fails in one clear line.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from jobs import storage
from jobs.errors import BusnetError

FORMAT_VERSION = 2  # 2: fold_splits, each fold's own train/val/test (predefined folds)
MANIFEST = "manifest.json"
DATA_DIR = "data"
LABELS = ("benign", "malignant")  # label 0, label 1
SPLITS = ("train", "val", "test")
TEST_FOLD = -1  # the fold of rows that no fold validates on (drawn splits: the test rows)

SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("case_id", pa.string(), nullable=False),
        pa.field("label", pa.int8(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("mask", pa.binary(), nullable=True),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("fold", pa.int8(), nullable=False),
        # element K: the row's side in fold K (train|val|test, "" = unused in that fold)
        pa.field("fold_splits", pa.list_(pa.string()), nullable=False),
    ]
)


def shard_name(index: int) -> str:
    return f"{DATA_DIR}/part-{index:05d}.parquet"


def read_manifest(uri: str) -> dict:
    """The manifest of a complete dataset; BusnetError when missing, incomplete or unreadable."""
    return _current(uri)[1]


def shard_paths(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    """(filesystem, shard paths inside it) of a complete dataset, all of its current version.

    Pass both to `ray.data.read_parquet(paths, filesystem=fs)` or `pyarrow.parquet.read_table`.
    """
    folder, manifest = _current(uri)
    fs, root = storage.filesystem(folder)
    return fs, [f"{root}/{name}" for name in manifest["files"]]


def _current(uri: str) -> tuple[str, dict]:
    """(folder of the dataset's current version, its manifest): resolved once, so a reader never
    mixes the manifest of one publication with the shards of the next."""
    storage.check_bucket(uri)
    if not storage.is_complete(uri):
        if storage.exists(storage.join(uri, MANIFEST)) or storage.versions(uri):
            raise BusnetError(
                f"{uri}: dataset is incomplete (no {storage.COMPLETE_MARKER} marker; "
                "an ingestion was interrupted: run busnet ingest again)"
            )
        raise BusnetError(f"{uri}: no dataset here (no {MANIFEST}; create one with busnet ingest)")
    folder = storage.resolve(uri)
    try:
        manifest = json.loads(storage.read_bytes(storage.join(folder, MANIFEST)))
    except json.JSONDecodeError as exc:
        raise BusnetError(f"{uri}/{MANIFEST}: not valid JSON ({exc})") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BusnetError(
            f"{uri}/{MANIFEST}: format_version {manifest.get('format_version')!r}, this busnet reads {FORMAT_VERSION}"
        )
    return folder, manifest


def read_table(uri: str, columns: list[str] | None = None, filters=None) -> pa.Table:
    """The whole dataset (or some columns / rows) as one Arrow table, without Ray."""
    fs, paths = shard_paths(uri)
    try:
        return pq.read_table(paths, filesystem=fs, columns=columns, filters=filters, schema=SCHEMA)
    except OSError as exc:
        raise BusnetError(f"{uri}: cannot read the dataset's shards ({str(exc).splitlines()[0]})") from exc
