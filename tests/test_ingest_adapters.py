"""Each source adapter on a small layout made here: ids, labels, cases, masks, formats.

HMSS, Thammasat and BUSBench's layouts are built from their real metadata in test_ingest_busbench.py.
"""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest

from jobs.data.ingest import ingest
from jobs.data.ingest.adapters import names
from tests.ingest_layouts import box_mask, decoded, rows, write_image, write_mask

PNG = b"\x89PNG"
FAST = {"val": 0.0, "test": 0.0, "folds": 2, "progress": False}


def _csv(path, header, *lines):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(lines)
    return path


def test_registry_lists_one_adapter_per_module():
    assert names() == ["busbench", "busi", "busis", "datasetb", "dicom", "folder", "hmss", "synthetic", "thammasat"]


def test_busi_union_of_masks_any_channel_count_and_normal_skipped(tmp_path):
    raw = tmp_path / "Dataset_BUSI_with_GT"
    b1 = write_image(raw / "benign" / "benign (1).png", 40, 30, seed=1)
    write_mask(raw / "benign" / "benign (1)_mask.png", 40, 30, (2, 2, 10, 10), mode="RGBA")
    write_mask(raw / "benign" / "benign (1)_mask_1.png", 40, 30, (20, 15, 30, 25))
    write_image(raw / "benign" / "benign (2).png", 24, 20, mode="L", seed=2)
    write_mask(raw / "benign" / "benign (2)_mask.png", 24, 20, (0, 0, 4, 4), mode="LA")
    write_image(raw / "malignant" / "malignant (1).png", 32, 32, seed=3)
    write_mask(raw / "malignant" / "malignant (1)_mask.png", 32, 32, (5, 5, 9, 20), mode="RGB")
    write_image(raw / "normal" / "normal (1).png", 20, 20, seed=4)
    write_mask(raw / "normal" / "normal (1)_mask.png", 20, 20, (0, 0, 0, 0))

    manifest = ingest({"busi": tmp_path}, str(tmp_path / "ds"), **FAST)  # the parent folder works too
    got = rows(str(tmp_path / "ds"))
    assert sorted(got) == [
        "busi/benign/benign (1).png",
        "busi/benign/benign (2).png",
        "busi/malignant/malignant (1).png",
    ]
    first = got["busi/benign/benign (1).png"]
    assert (first["label"], first["case_id"], first["height"], first["width"]) == (
        0,
        "busi/benign/benign (1).png",
        30,
        40,
    )
    assert first["image"] == b1.read_bytes() and first["sha256"] == hashlib.sha256(b1.read_bytes()).hexdigest()
    assert np.array_equal(decoded(first["mask"]), box_mask(40, 30, (2, 2, 10, 10), (20, 15, 30, 25)) * 255)
    assert np.array_equal(decoded(got["busi/benign/benign (2).png"]["mask"]) > 0, box_mask(24, 20, (0, 0, 4, 4)))
    assert np.array_equal(decoded(got["busi/malignant/malignant (1).png"]["mask"]) > 0, box_mask(32, 32, (5, 5, 9, 20)))
    assert got["busi/malignant/malignant (1).png"]["label"] == 1
    assert manifest["counts"]["skipped"] == {"busi": {"normal/ (no lesion)": 1}}
    assert manifest["rejects"] == []


def test_busis_bmp_images_and_masks(tmp_path):
    write_image(tmp_path / "Original" / "case0001.bmp", 30, 20, seed=1)
    write_image(tmp_path / "Original" / "case0002.png", 30, 20, seed=2)
    write_mask(tmp_path / "GT" / "case0001_GT.bmp", 30, 20, (1, 1, 5, 5))
    write_mask(tmp_path / "GT" / "case0002_GT.bmp", 30, 20, (10, 10, 20, 15), mode="1")
    _csv(
        tmp_path / "BUSIS562.csv",
        ["img name", "Ground Truth Name", "tumor type"],
        ["case0001", "case0001_GT", "B"],
        ["case0002", "case0002_GT.bmp", "M"],
    )

    ingest({"busis": tmp_path}, str(tmp_path / "ds"), **FAST)
    got = rows(str(tmp_path / "ds"))
    one, two = got["busis/Original/case0001.bmp"], got["busis/Original/case0002.png"]
    assert (one["label"], two["label"]) == (0, 1)
    assert one["image"].startswith(PNG)  # BMP is stored re-encoded as PNG, pixels unchanged
    assert np.array_equal(decoded(one["image"]), decoded((tmp_path / "Original" / "case0001.bmp").read_bytes()))
    assert np.array_equal(decoded(one["mask"]) > 0, box_mask(30, 20, (1, 1, 5, 5)))
    assert np.array_equal(decoded(two["mask"]) > 0, box_mask(30, 20, (10, 10, 20, 15)))


@pytest.mark.parametrize("table", ["xlsx", "csv"])
def test_datasetb_labels_from_xlsx_or_csv(tmp_path, table):
    for number in (1, 2, 3):
        write_image(tmp_path / "original" / f"{number:06d}.png", 25, 20, mode="L", seed=number)
        write_mask(tmp_path / "GT" / f"{number:06d}.png", 25, 20, (number, number, 10, 10))
    lines = [["Image", "Type"], [1, "Benign"], [2, "Malignant"], [3, "benign"]]
    if table == "xlsx":
        import openpyxl

        book = openpyxl.Workbook()
        for line in lines:
            book.active.append(line)
        book.save(tmp_path / "DatasetB.xlsx")
    else:
        _csv(tmp_path / "DatasetB.csv", *lines)

    ingest({"datasetb": tmp_path}, str(tmp_path / "ds"), **FAST)
    got = rows(str(tmp_path / "ds"))
    assert {k: r["label"] for k, r in got.items()} == {
        "datasetb/original/000001.png": 0,
        "datasetb/original/000002.png": 1,
        "datasetb/original/000003.png": 0,
    }
    assert np.array_equal(decoded(got["datasetb/original/000002.png"]["mask"]) > 0, box_mask(25, 20, (2, 2, 10, 10)))


def test_folder_csv_with_several_masks_and_cases(tmp_path):
    data = tmp_path / "hospital"
    write_image(data / "img" / "x.png", 30, 30, seed=1)
    write_image(data / "img" / "y.png", 30, 30, seed=2)
    write_image(data / "img" / "z.png", 30, 30, seed=3)
    write_mask(data / "gt" / "x1.png", 30, 30, (0, 0, 5, 5))
    write_mask(data / "gt" / "x2.png", 30, 30, (20, 20, 30, 30))
    table = _csv(
        data / "list.csv",
        ["image", "mask", "label", "case_id"],
        ["img/x.png", "gt/x1.png;gt/x2.png", "malignant", "P-7"],
        ["img/y.png", "", "0", "P-7"],
        ["img/z.png", "", "B", ""],
    )

    ingest({"folder": table}, str(tmp_path / "ds"), mixed_label_cases="keep", **FAST)  # P-7 mixes labels
    got = rows(str(tmp_path / "ds"))
    x = got["folder/img/x.png"]
    assert np.array_equal(decoded(x["mask"]) > 0, box_mask(30, 30, (0, 0, 5, 5), (20, 20, 30, 30)))
    assert got["folder/img/y.png"]["mask"] is None
    assert x["case_id"] == got["folder/img/y.png"]["case_id"] == "folder/P-7"
    assert got["folder/img/z.png"]["case_id"] == "folder/img/z.png"
    assert [got[k]["label"] for k in sorted(got)] == [1, 0, 0]
