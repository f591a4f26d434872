"""End to end: synthetic + real BUSI images ingested locally and into S3, read back through Ray Data."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs import storage
from jobs.data.dataset import TEST_FOLD, open_dataset, read_manifest, read_table
from jobs.data.ingest import ingest
from jobs.errors import BusnetError
from tests.ingest_layouts import decoded

SPLIT_MASKS = ("benign (3)", "malignant (2)")  # their real mask is stored as two files here


def _busi_with_split_masks(sample: Path, root: Path) -> Path:
    """The real BUSI sample, but two masks cut in halves: `_mask` (left) and `_mask_1` (right)."""
    shutil.copytree(sample, root, ignore=shutil.ignore_patterns("*.md"))
    for stem in SPLIT_MASKS:
        path = root / stem.split(" ")[0] / f"{stem}_mask.png"
        mask = np.asarray(Image.open(path).convert("L"))
        left, right = mask.copy(), mask.copy()
        left[:, mask.shape[1] // 2 :] = 0
        right[:, : mask.shape[1] // 2] = 0
        Image.fromarray(left).save(path)
        Image.fromarray(right).save(path.with_name(f"{stem}_mask_1.png"))
    return root


def _by(values_a, values_b) -> dict:
    seen = defaultdict(set)
    for a, b in zip(values_a, values_b):
        seen[a].add(b)
    return seen


@pytest.mark.parametrize("where", ["local", "s3"])
def test_synthetic_and_real_busi_read_back_through_ray_data(
    where, ray_local, synthetic_dataset, busi_sample, tmp_path, request
):
    out = str(tmp_path / "ds") if where == "local" else f"{request.getfixturevalue('s3_bucket')}/datasets/v1"
    synthetic_raw = Path(synthetic_dataset).parent / "raw"
    busi = _busi_with_split_masks(busi_sample, tmp_path / "busi")
    sources = {"synthetic": synthetic_raw, "busi": busi}
    manifest = ingest(sources, out, val=0.1, test=0.2, folds=3, seed=0, progress=False)

    fs, paths = open_dataset(out).shards()
    table = ray_local.data.read_parquet(paths, filesystem=fs).to_pandas()
    assert len(table) == manifest["num_rows"] == 60 and table.image_id.is_unique
    assert manifest["rejects"] == []
    busi_rows = table[table.source == "busi"].set_index("image_id")
    assert (busi_rows.label.value_counts().to_dict()) == {0: 14, 1: 6}
    for image_id, row in busi_rows.iterrows():
        original = busi_sample / image_id.removeprefix("busi/")
        assert row.image == original.read_bytes()  # stored as found
        assert row.sha256 == hashlib.sha256(row.image).hexdigest()
        assert (row.width, row.height) == Image.open(original).size
        real_mask = np.asarray(Image.open(original.with_name(f"{original.stem}_mask.png")).convert("L")) > 0
        assert np.array_equal(decoded(row["mask"]) > 0, real_mask), image_id  # union == the real mask
    synthetic = table[table.source == "synthetic"]
    assert len(synthetic) == 40 and synthetic["mask"].notna().all() and synthetic.case_id.nunique() < 40
    assert all(len(s) == 1 for s in _by(table.case_id, table.split).values())
    assert all(len(f) == 1 for f in _by(table.case_id, table.fold).values())
    assert set(table[table.split == "test"].fold) == {TEST_FOLD}
    assert set(table[table.split != "test"].fold) == {0, 1, 2}
    assert {s: len(g) for s, g in table.groupby("split")} == {
        s: c["images"] for s, c in manifest["counts"]["by_split"].items()
    }

    again = ingest(sources, out, val=0.1, test=0.2, folds=3, seed=0, progress=False)  # replaces, same content
    assert again["content_hash"] == manifest["content_hash"]
    assert read_table(out, columns=["image_id"]).num_rows == 60
    assert [p.rsplit("/", 1)[-1] for p in storage.list_files(storage.resolve(out))] == [
        "_COMPLETE",
        "part-00000.parquet",
        "manifest.json",
    ]
    other_seed = ingest(sources, out, val=0.1, test=0.2, folds=3, seed=1, progress=False)
    assert other_seed["content_hash"] != manifest["content_hash"]


def test_shards_are_bounded_and_do_not_change_the_content(synthetic_dataset, tmp_path):
    raw = Path(synthetic_dataset).parent / "raw"
    manifest = ingest({"synthetic": raw}, str(tmp_path / "ds"), shard_mb=0.05, progress=False)
    sizes = [(Path(storage.resolve(str(tmp_path / "ds"))) / name).stat().st_size for name in manifest["files"]]
    assert len(sizes) > 3 and max(sizes) < 0.05 * 2**20 + 30_000  # a shard overshoots by at most one image
    assert manifest["content_hash"] == read_manifest(synthetic_dataset)["content_hash"]


def test_a_reader_gets_its_first_rows_after_one_small_row_group(synthetic_dataset, monkeypatch, tmp_path):
    """Parquet is read a row group at a time: the first rows of a shard must not wait for all of it."""
    import pyarrow.parquet as pq

    from jobs.data.ingest import writer

    monkeypatch.setattr(writer, "ROW_GROUP_BYTES", 200_000)  # the fixture's 40 images make one 4 MB group
    raw = Path(synthetic_dataset).parent / "raw"
    manifest = ingest({"synthetic": raw}, str(tmp_path / "ds"), progress=False)
    (name,) = manifest["files"]
    metadata = pq.ParquetFile(Path(storage.resolve(str(tmp_path / "ds"))) / name).metadata
    groups = [metadata.row_group(i) for i in range(metadata.num_row_groups)]
    assert len(groups) > 3 and sum(group.num_rows for group in groups) == metadata.num_rows
    assert max(group.total_byte_size for group in groups) < 200_000 + 60_000  # at most one image over


def test_readers_refuse_incomplete_or_missing_datasets(synthetic_dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_dataset, copy)
    (copy / storage.COMPLETE_MARKER).unlink()
    with pytest.raises(BusnetError, match="incomplete"):
        read_manifest(str(copy))
    with pytest.raises(BusnetError, match="no dataset here"):
        read_manifest(str(tmp_path / "nothing"))


def test_missing_bucket_fails_before_any_work(s3_server, synthetic_dataset):
    raw = Path(synthetic_dataset).parent / "raw"
    with pytest.raises(BusnetError, match="bucket 'no-such-bucket-.*' does not exist"):
        ingest({"synthetic": raw}, f"s3://no-such-bucket-{uuid.uuid4().hex[:12]}/ds", progress=False)


def test_unreachable_endpoint_fails_before_any_work(unreachable_endpoint, synthetic_dataset):
    raw = Path(synthetic_dataset).parent / "raw"
    with pytest.raises(BusnetError, match=f"cannot reach the S3 endpoint {unreachable_endpoint}"):
        ingest({"synthetic": raw}, "s3://bucket/ds", progress=False)


def test_synthetic_dataset_fixture(synthetic_dataset):
    manifest = read_manifest(synthetic_dataset)
    counts = manifest["counts"]
    assert manifest["num_rows"] == 40 and counts["by_source"]["synthetic"]["with_mask"] == 40
    assert sorted(counts["by_fold"]) == ["0", "1", "2", "3", "4"]
    assert all(counts["by_split"][s]["benign"] and counts["by_split"][s]["malignant"] for s in ("train", "test"))
