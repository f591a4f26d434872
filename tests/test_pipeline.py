"""jobs.data.pipeline on a real local Ray: splits, folds, decoding, columns, errors; busnet bench data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import storage
from jobs.data.dataset import open_dataset, read_table
from jobs.data.pipeline import FILTER_COLUMNS, ROW_COLUMNS, read_rows, read_split
from jobs.errors import BusnetError
from models.preprocess import Preprocessing, decode_image, decode_mask, preprocess_image, preprocess_mask

PRE = Preprocessing(size=32)
OUTPUT_COLUMNS = {"image", "mask", "has_mask", "label", "image_id", "source", "height", "width"}


@pytest.fixture(scope="module")
def stored(synthetic_dataset) -> dict[str, dict]:
    """The fixture dataset as pyarrow reads it, keyed by image_id."""
    table = read_table(synthetic_dataset)
    return {row["image_id"]: row for row in table.to_pylist()}


def ids_where(stored: dict, predicate) -> set[str]:
    return {image_id for image_id, row in stored.items() if predicate(row)}


def test_each_split_has_its_rows_decoded_and_preprocessed(ray_local, synthetic_dataset, stored):
    seen = set()
    for split in ("train", "val", "test"):
        rows = read_split(open_dataset(synthetic_dataset), split, preprocessing=PRE).take_all()
        ids = [r["image_id"] for r in rows]
        assert len(ids) == len(set(ids))
        assert set(ids) == ids_where(stored, lambda r, split=split: r["split"] == split), split
        seen |= set(ids)
        for row in rows:
            assert set(row) == OUTPUT_COLUMNS
            raw = stored[row["image_id"]]
            assert row["image"].shape == (3, 32, 32) and row["image"].dtype == np.float32
            assert row["mask"].shape == (1, 32, 32) and row["mask"].dtype == np.float32
            assert set(np.unique(row["mask"])) <= {0.0, 1.0}
            assert row["label"] == float(raw["label"]) and row["source"] == raw["source"]
            assert (row["height"], row["width"]) == (raw["height"], raw["width"])
            assert row["has_mask"] == (raw["mask"] is not None)
    assert seen == set(stored)
    sample = rows[0]
    raw = stored[sample["image_id"]]
    np.testing.assert_array_equal(sample["image"], preprocess_image(decode_image(raw["image"]), PRE))
    np.testing.assert_array_equal(sample["mask"], preprocess_mask(decode_mask(raw["mask"]), 32))


def test_fold_train_and_val_partition_the_train_val_rows(ray_local, synthetic_dataset, stored):
    fold = 1
    train = {
        r["image_id"]
        for r in read_split(open_dataset(synthetic_dataset), "train", fold=fold, preprocessing=PRE)
        .select_columns(["image_id"])
        .take_all()
    }
    val = {
        r["image_id"]
        for r in read_split(open_dataset(synthetic_dataset), "val", fold=fold, preprocessing=PRE)
        .select_columns(["image_id"])
        .take_all()
    }
    cross_validated = ids_where(stored, lambda r: r["split"] in ("train", "val"))
    assert val == ids_where(stored, lambda r: r["split"] in ("train", "val") and r["fold"] == fold)
    assert train and val and not train & val
    assert train | val == cross_validated
    test_cases = {stored[i]["case_id"] for i in ids_where(stored, lambda r: r["split"] == "test")}
    assert not {stored[i]["case_id"] for i in train | val} & test_cases


def test_only_the_needed_columns_are_read(ray_local, synthetic_dataset):
    schema = read_rows(open_dataset(synthetic_dataset), "val").schema()
    assert set(schema.names) == set(ROW_COLUMNS + FILTER_COLUMNS)
    assert not {"case_id", "sha256"} & set(schema.names)


def test_numeric_columns_iterate_as_torch_batches(ray_local, synthetic_dataset, stored):
    import torch

    ds = read_split(open_dataset(synthetic_dataset), "val", preprocessing=PRE)
    ds = ds.select_columns(["image", "mask", "has_mask", "label"])
    batches = list(ds.iter_torch_batches(batch_size=3, device="cpu"))
    assert sum(len(b["label"]) for b in batches) == len(ids_where(stored, lambda r: r["split"] == "val"))
    first = batches[0]
    assert first["image"].dtype == torch.float32 and first["image"].shape[1:] == (3, 32, 32)
    assert first["mask"].shape[1:] == (1, 32, 32) and first["has_mask"].dtype == torch.bool
    assert first["label"].dtype == torch.float32


def test_reads_from_s3(ray_local, synthetic_dataset, s3_bucket, stored):
    uri = f"{s3_bucket}/datasets/synthetic"
    storage.publish_dir(storage.resolve(synthetic_dataset), uri)  # the files of its current version
    ids = {
        r["image_id"]
        for r in read_split(open_dataset(uri), "val", preprocessing=PRE).select_columns(["image_id"]).take_all()
    }
    assert ids == ids_where(stored, lambda r: r["split"] == "val")


def without_test_rows(dataset_uri: str, out: Path) -> str:
    """A complete copy of the dataset whose shards hold no test rows."""
    shutil.copytree(dataset_uri, out)
    for shard in sorted((Path(storage.resolve(str(out))) / "data").glob("*.parquet")):
        table = pq.read_table(shard)
        pq.write_table(table.filter(pc.field("split") != "test"), shard)
    return str(out)


def test_empty_split_unknown_fold_and_split_are_clear_errors(synthetic_dataset, tmp_path):
    no_test = without_test_rows(synthetic_dataset, tmp_path / "no-test")
    with pytest.raises(BusnetError, match=r"no-test: split 'test' is empty"):
        read_split(open_dataset(no_test), "test", preprocessing=PRE)
    with pytest.raises(BusnetError, match=r"no fold 9; the dataset's folds are \[0, 1, 2, 3, 4\]"):
        read_split(open_dataset(synthetic_dataset), "val", fold=9, preprocessing=PRE)
    with pytest.raises(BusnetError, match="unknown split 'dev'"):
        read_split(open_dataset(synthetic_dataset), "dev", preprocessing=PRE)
    with pytest.raises(BusnetError, match="no dataset here"):
        read_split(open_dataset(str(tmp_path / "nothing")), "train", preprocessing=PRE)


def test_bench_data_json(ray_local, synthetic_dataset, capsys):
    from jobs.cli import main

    assert main(["bench", "data", "--data", synthetic_dataset, "--size", "64", "--limit", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 8 and result["size"] == 64
    for key in ("ray_data_images_per_s", "ray_data_first_images_per_s", "plain_images_per_s", "speedup"):
        assert result[key] > 0, key
    # the start cost is part of the pass; 8 images make one batch, so no steady part
    for path in ("ray_data_first", "ray_data", "plain"):
        assert 0 < result[f"{path}_start_seconds"] <= result[f"{path}_seconds"]
        assert result[f"{path}_steady_images_per_s"] is None
