"""The busnet dataset format: Parquet shards + manifest.json in one published directory.

    <version>/manifest.json            counts, rejects, content hash, parameters, shard list
    <version>/data/part-00000.parquet  one row per image (columns: SCHEMA), bounded size

published by jobs.storage.publish_dir: <version> is <uri>/versions/v-.../, and <uri>/_COMPLETE,
written last, points to it (the previous version is kept until the next ingestion). A dataset from
before versions (the files directly in <uri>) still reads.

Readers open a dataset once (`open_dataset`) and pass the handle on, so an incomplete or missing
dataset fails in one clear line and no stage re-reads the pointer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Dataset:
    """A dataset opened once: its current version resolved, its manifest read, its shards listed.

    Every stage of a command (checks, decoding, training, evaluation, lineage) takes this handle,
    so the content hash a run records is that of the very shards it read, even when a new version
    is published meanwhile. Picklable: Ray tasks receive it as it is.
    """

    uri: str  # as the user gave it
    version_uri: str  # the folder of the version `uri` pointed to when it was opened
    manifest: dict

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    @property
    def folds(self) -> int:
        return int(self.manifest.get("params", {}).get("folds") or 0)

    def shards(self) -> tuple[pafs.FileSystem, list[str]]:
        """(filesystem, shard paths inside it): for `ray.data.read_parquet` or `pyarrow.parquet.read_table`."""
        fs, root = storage.filesystem(self.version_uri)
        return fs, [f"{root}/{name}" for name in self.manifest["files"]]

    def read_table(self, columns: list[str] | None = None, filters=None) -> pa.Table:
        """The whole dataset (or some columns / rows) as one Arrow table, without Ray."""
        fs, paths = self.shards()
        try:
            return pq.read_table(paths, filesystem=fs, columns=columns, filters=filters, schema=SCHEMA)
        except OSError as exc:
            raise BusnetError(f"{self.uri}: cannot read the dataset's shards ({str(exc).splitlines()[0]})") from exc

    def project(self, columns: dict) -> pa.Table:
        """Computed columns ({name: pyarrow.compute expression}), made batch by batch: a large column
        (an image, a mask) is read only to compute from, never held whole (e.g. `pc.field("mask").is_valid()`)."""
        import pyarrow.dataset as pads

        fs, paths = self.shards()
        try:
            return pads.dataset(paths, filesystem=fs, format="parquet", schema=SCHEMA).to_table(columns=columns)
        except OSError as exc:
            raise BusnetError(f"{self.uri}: cannot read the dataset's shards ({str(exc).splitlines()[0]})") from exc


def open_dataset(uri: str) -> Dataset:
    """Resolve `uri`'s current version and read its manifest, once; BusnetError when the dataset is
    missing, incomplete or unreadable. Local paths become absolute (Ray workers may run elsewhere)."""
    uri = uri if storage.is_remote(uri) else str(storage.local_path(uri))
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
    return Dataset(uri, folder, manifest)


def read_manifest(uri: str) -> dict:
    """The manifest of a complete dataset (a one-off look; a stage that reads more opens the dataset once)."""
    return open_dataset(uri).manifest


def read_table(uri: str, columns: list[str] | None = None, filters=None) -> pa.Table:
    """The whole dataset (or some columns / rows) as one Arrow table: `open_dataset(uri).read_table(...)`."""
    return open_dataset(uri).read_table(columns, filters)
