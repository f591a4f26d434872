"""The datasets exactly as published: folders built from BUSBench's REAL metadata files, ingested.

Placeholder images only (tests/busbench_layouts.py), so the counts below are the real datasets':
HMSS 2,006 images in 478 cases (one mixing labels), BUSIS 562, Dataset B 163, the combined set
3,641 with the benchmark's five predefined folds.
"""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from jobs.data.dataset import read_table
from jobs.data.ingest import ingest
from jobs.data.ingest.cases import crossings
from jobs.data.pipeline import split_filter
from jobs.errors import BusnetError
from tests.busbench_layouts import (
    BLOCK,
    build_busis,
    build_combined,
    build_cropped,
    build_datasetb,
    crop_mode,
    fold_names,
    metadata,
    read_marker,
    table,
)
from tests.ingest_layouts import decoded

FAST = {"val": 0.1, "test": 0.2, "folds": 5, "progress": False}
MIXED_CASE = "33278-Afbeelding1"


@pytest.fixture(scope="module")
def hmss(tmp_path_factory):
    root = tmp_path_factory.mktemp("hmss")
    build_cropped(root / "raw", "HMSS.csv")
    return ingest({"hmss": root / "raw"}, str(root / "ds"), mixed_label_cases="keep", **FAST), str(root / "ds")


@pytest.fixture(scope="module")
def combined(tmp_path_factory):
    root = build_combined(tmp_path_factory.mktemp("combined") / "BUS_Combined")
    shutil.copytree(metadata("folds"), root.parent / "folds")
    return root


def test_hmss_real_table_2006_images_in_478_cases_crops_applied_once(hmss):
    manifest, uri = hmss
    rows = read_table(uri, columns=["image_id", "case_id", "label", "image", "height", "width"]).to_pylist()
    listed = table("HMSS.csv")
    assert (len(rows), manifest["counts"]["cases"]) == (2006, 478)
    assert manifest["integrity"]["cases"]["hmss"]["cases"] == 478
    assert max(int(n) for n in manifest["integrity"]["cases"]["hmss"]["images_per_case"]) == 15
    assert Counter(r["label"] for r in rows) == {1: 1160, 0: 846}
    modes = Counter(crop_mode(i) for i in range(len(listed)))
    source = manifest["counts"]["by_source"]["hmss"]
    assert (source["crop_applied"], source["crop_already"]) == (modes["raw"], modes["in_place"] + modes["crop_copy"])
    by_name = {r["image_id"].split("/")[-1].split(".")[0].removesuffix("_crop"): r for r in rows}
    for index, row in enumerate(listed):
        got = by_name[row["img name"]]
        assert (got["width"], got["height"]) == (int(row["crop col2"]), int(row["crop r2"]))  # the box, once
        assert got["case_id"] == f"hmss/{row['case id/cover img id']}"
        if index % 97 == 0:  # the stored pixels start at the box's corner: the marker is there
            assert read_marker(decoded(got["image"]), BLOCK) == index
    assert manifest["integrity"]["mixed_label_cases"] == [
        {"case_id": f"hmss/{MIXED_CASE}", "benign": 1, "malignant": 2, "policy": "keep"}
    ]


def test_mixed_label_case_rejected_by_default(tmp_path):
    rows = [r for r in table("HMSS.csv") if r["case id/cover img id"] in (MIXED_CASE, "3155", "2879")]
    build_cropped(tmp_path / "raw", "HMSS.csv", rows)
    manifest = ingest({"hmss": tmp_path / "raw"}, str(tmp_path / "ds"), val=0, test=0, folds=2, progress=False)
    assert manifest["num_rows"] == len(rows) - 3 and manifest["counts"]["cases"] == 2
    assert [m["case_id"] for m in manifest["integrity"]["mixed_label_cases"]] == [f"hmss/{MIXED_CASE}"]
    assert sum("mixes benign and malignant" in r["reason"] for r in manifest["rejects"]) == 3


@pytest.mark.parametrize("padded", [True, False])
def test_busis_562_with_padded_or_unpadded_names(tmp_path, padded):
    build_busis(tmp_path / "raw", padded)
    manifest = ingest({"busis": tmp_path / "raw"}, str(tmp_path / "ds"), **FAST)
    assert manifest["num_rows"] == 562 and manifest["rejects"] == []
    counts = manifest["counts"]["by_source"]["busis"]
    assert (counts["benign"], counts["malignant"], counts["with_mask"]) == (306, 256, 562)


def test_datasetb_163_from_the_published_xlsx(tmp_path):
    build_datasetb(tmp_path / "raw")
    manifest = ingest({"datasetb": tmp_path / "raw"}, str(tmp_path / "ds"), **FAST)
    assert manifest["num_rows"] == 163 and manifest["rejects"] == []
    ids = read_table(str(tmp_path / "ds"), columns=["image_id"]).column("image_id").to_pylist()
    assert "datasetb/imgs/000147.png" in ids and "datasetb/imgs/000295.png" in ids  # the gap in the ids


def test_thammasat_263_in_252_cases(tmp_path):
    build_cropped(tmp_path / "raw", "Thammasat.csv")
    manifest = ingest({"thammasat": tmp_path / "raw"}, str(tmp_path / "ds"), **FAST)
    assert (manifest["num_rows"], manifest["counts"]["cases"]) == (263, 252)
    assert (manifest["counts"]["benign"], manifest["counts"]["malignant"]) == (120, 143)


def test_combined_with_predefined_folds_is_the_benchmarks_membership(combined, tmp_path):
    manifest = ingest(
        {"busbench": combined.parent},
        str(tmp_path / "ds"),
        folds_from=str(combined.parent / "folds"),
        mixed_label_cases="keep",
        progress=False,
    )
    assert (manifest["num_rows"], manifest["counts"]["cases"]) == (3641, 2102)
    data = read_table(str(tmp_path / "ds"), columns=["image_id", "split", "fold_splits"])
    names = [i.split("/")[-1].removesuffix(".png") for i in data.column("image_id").to_pylist()]
    sides = data.column("fold_splits").to_pylist()
    for k in range(5):
        expected = fold_names(metadata("folds", f"folder{k + 1}"))
        got = {side: {n for n, s in zip(names, sides) if s[k] == side} for side in expected}
        assert got == expected, f"fold {k}"
    assert sum(1 for s in sides if s[4] == "") == 9  # folder5 lists 3,632 of the 3,641 images
    assert data.column("split").to_pylist() == [s[0] for s in sides]
    assert manifest["integrity"]["folds"]["unmatched"] == {f"folder{k}": 0 for k in range(1, 6)}
    # `busnet train --fold 2` reads with this filter: folder3's own train and valid, not drawn ones
    for split, side in (("train", "train"), ("val", "val"), ("test", "test")):
        chosen = read_table(str(tmp_path / "ds"), columns=["image_id"], filters=split_filter(split, 2).to_pyarrow())
        got = {i.split("/")[-1].removesuffix(".png") for i in chosen.column("image_id").to_pylist()}
        assert got == fold_names(metadata("folds", "folder3"))[side]


def test_fold_file_that_splits_a_case_is_refused(tmp_path):
    rows = [r for r in table("BUS_Combined.csv") if r["case id/cover img id"] in ("3155", "3694", "2879")]
    root = build_combined(tmp_path / "BUS_Combined", rows)
    folds = tmp_path / "folds" / "folder1"
    folds.mkdir(parents=True)
    first, *rest = [r["img name"] for r in rows if r["case id/cover img id"] == "3155"]
    others = [r["img name"] for r in rows if r["case id/cover img id"] != "3155"]
    for stem, names in {"train": [first, *others], "valid": [], "test": rest}.items():
        lines = "".join(f"{i},{n},0\n" for i, n in enumerate(names))
        (folds / f"{stem}.csv").write_text(",img name,tumor types\n" + lines)
    refused = rf"folder1: 1 case\(s\) on two sides: busbench/3155 \(test: .*train: {first}\)"
    with pytest.raises(BusnetError, match=refused):
        ingest({"busbench": root}, str(tmp_path / "ds"), folds_from=str(tmp_path / "folds"), progress=False)


def test_pixel_identical_images_are_one_image(tmp_path):
    """The same pixels in other bytes are a duplicate: neither can end up on the other side of a split."""
    rows = [r for r in table("BUS_Combined.csv") if r["img name"] in ("2879", "3155", "3694")]
    root = build_combined(tmp_path / "BUS_Combined", rows)
    from PIL import Image

    Image.open(root / "imgs" / "2879.png").save(root / "imgs" / "3155.png", compress_level=0)
    manifest = ingest({"busbench": root}, str(tmp_path / "ds"), val=0, test=0, folds=2, progress=False)
    assert [r["reason"] for r in manifest["rejects"]] == ["duplicate image: same pixels as busbench/imgs/2879.png"]


def test_crossing_check_names_cases_and_identical_images_on_two_sides():
    meta = [
        {"image_id": "a/1", "case_id": "a/p1", "pixels_sha256": "x"},
        {"image_id": "a/2", "case_id": "a/p1", "pixels_sha256": "y"},
        {"image_id": "a/3", "case_id": "a/p2", "pixels_sha256": "x"},
        {"image_id": "a/4", "case_id": "a/p3", "pixels_sha256": "z"},
    ]
    assert crossings(meta, {"split": ["train", "train", "train", "test"]}) == {}
    assert crossings(meta, {"fold 0": ["train", "test", "val", ""]}) == {
        "fold 0: case": ["a/p1"],
        "fold 0: image": ["a/1"],
    }
    assert crossings(meta, {"fold 1": ["train", "train", "", "test"]}) == {}  # "" is unused, not a side


def test_benchmark_datasets_tree_reads_each_folder_with_its_adapter(tmp_path, busi_sample):
    """`Benchmark/Datasets/` as BUSBench's notes lay it out: one folder per dataset, each in its own layout."""
    tree = tmp_path / "Benchmark" / "Datasets"
    build_busis(tree / "BUSIS", padded=False)
    build_datasetb(tree / "DatasetB", first_index=1000)  # BUSIS's placeholders have the same size
    build_cropped(tree / "Thammasat", "Thammasat.csv")
    shutil.copytree(busi_sample, tree / "BUSI", ignore=shutil.ignore_patterns("*.md"))
    manifest = ingest({"busbench": tree}, str(tmp_path / "ds"), **FAST)
    busi = len(list((tree / "BUSI").glob("*/*).png")))
    assert manifest["num_rows"] == 562 + 163 + 263 + busi and manifest["rejects"] == []
    assert manifest["counts"]["cases"] == 562 + 163 + 252 + busi
    ids = read_table(str(tmp_path / "ds"), columns=["image_id", "case_id"]).to_pydict()
    folders = Counter(image_id.split("/")[1] for image_id in ids["image_id"])
    assert folders == {"BUSIS": 562, "DatasetB": 163, "Thammasat": 263, "BUSI": busi}
    assert all(case.split("/")[1] in folders for case in ids["case_id"])  # cases never shared across datasets
