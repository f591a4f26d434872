"""Bad input: each kind is a reject with file and reason, ingestion goes on; --strict stops at it."""

from __future__ import annotations

import csv

import pytest

from jobs.cli import main
from jobs.data.ingest import ingest
from jobs.errors import BusnetError
from tests.ingest_layouts import rows, write_image, write_mask

FAST = {"val": 0.0, "test": 0.0, "folds": 2, "progress": False}


@pytest.fixture
def messy(tmp_path):
    """A BUSI folder and a BUSIS folder with one of each bad input, plus good images."""
    busi = tmp_path / "busi"
    for n in (1, 2, 3):
        write_image(busi / "benign" / f"benign ({n}).png", 30, 20, seed=n)
        write_mask(busi / "benign" / f"benign ({n})_mask.png", 30, 20, (1, 1, 5, 5))
    write_image(busi / "malignant" / "malignant (1).png", 30, 20, seed=10)
    truncated = (busi / "benign" / "benign (1).png").read_bytes()[:60]
    (busi / "malignant" / "malignant (2).png").write_bytes(truncated)  # corrupt
    write_image(busi / "malignant" / "malignant (3).png", 30, 20, seed=11)
    write_mask(busi / "malignant" / "malignant (3)_mask.png", 31, 20, (1, 1, 5, 5))  # wrong size
    (busi / "malignant" / "malignant (4).png").write_bytes(
        (busi / "malignant" / "malignant (1).png").read_bytes()
    )  # duplicate, same label
    (busi / "malignant" / "notes.txt").write_text("not an image")  # stray file
    (busi / "malignant" / "malignant (5).png").write_text("plain text")  # not an image

    busis = tmp_path / "busis"
    write_image(busis / "Original" / "case0001.png", 30, 20, seed=20)
    write_image(busis / "Original" / "case0002.png", 30, 20, seed=21)
    write_image(busis / "Original" / "case0003.png", 30, 20, seed=22)
    with (busis / "BUSIS562.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["img name", "tumor type"], ["case0001", "B"], ["case0002", "?"]])
    return {"busi": busi, "busis": busis, "hmss": tmp_path / "empty"}


EXPECTED = {  # file name -> part of the reason
    "malignant (2).png": "corrupt",
    "malignant (3).png": "malignant (3)_mask.png is 31x20, the image 30x20",
    "malignant (4).png": "duplicate image: same bytes as busi/malignant/malignant (1).png",
    "notes.txt": "not an image file",
    "malignant (5).png": "image: not a PNG, JPEG or BMP image",
    "case0002.png": "no label",
    "case0003.png": "no label: not listed in BUSIS562.csv",
    "empty": "unknown layout",
}


def test_each_bad_input_is_a_reject_and_the_rest_is_ingested(messy, tmp_path):
    (tmp_path / "empty").mkdir()
    manifest = ingest(messy, str(tmp_path / "ds"), **FAST)
    reasons = {r["file"].rsplit("/", 1)[-1]: r["reason"] for r in manifest["rejects"]}
    assert set(reasons) == set(EXPECTED), reasons
    for name, part in EXPECTED.items():
        assert part in reasons[name], (name, reasons[name])
    assert {r["source"] for r in manifest["rejects"]} == {"busi", "busis", "hmss"}
    assert sorted(rows(str(tmp_path / "ds"))) == [
        "busi/benign/benign (1).png",
        "busi/benign/benign (2).png",
        "busi/benign/benign (3).png",
        "busi/malignant/malignant (1).png",
        "busis/Original/case0001.png",
    ]
    assert manifest["counts"]["rejected"] == {"busi": 5, "busis": 2, "hmss": 1}


def test_strict_stops_at_the_first_bad_file_and_names_it(messy, tmp_path):
    with pytest.raises(BusnetError, match=r"notes\.txt: not an image file.*--strict"):
        ingest({"busi": messy["busi"]}, str(tmp_path / "ds"), strict=True, **FAST)
    raw = tmp_path / "corrupt"
    write_image(raw / "benign" / "benign (1).png", 30, 20, seed=1)
    write_image(raw / "malignant" / "malignant (1).png", 30, 20, seed=2)
    (raw / "malignant" / "malignant (2).png").write_bytes((raw / "benign" / "benign (1).png").read_bytes()[:60])
    with pytest.raises(BusnetError, match=r"malignant \(2\)\.png: image: corrupt.*--strict"):
        ingest({"busi": raw}, str(tmp_path / "ds"), strict=True, **FAST)
    assert not (tmp_path / "ds").exists()


def test_cli_strict_exits_non_zero_with_one_line(messy, tmp_path, capsys):
    code = main(["ingest", "--source", f"busis={messy['busis']}", "--out", str(tmp_path / "ds"), "--strict"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "case0002.png" in err and "no label" in err


def test_cli_summary_lists_rejects(messy, tmp_path, capsys):
    code = main(
        [
            "ingest",
            "--source",
            f"busi={messy['busi']}",
            "--out",
            str(tmp_path / "ds"),
            "--val",
            "0",
            "--test",
            "0",
            "--folds",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "5 rejected:" in out and "malignant (3).png" in out and "4 rows in 1 shard(s)" in out


@pytest.mark.parametrize(
    "sources, message",
    [
        ({"nosuch": "."}, "unknown source 'nosuch'; known sources: busbench, busi, busis"),
        ([("busi", "a"), ("busi", "b")], "source 'busi' given twice"),
        ({"busi": "s3://bucket/raw"}, "sources are read from local folders"),
        ({}, "no --source given"),
    ],
)
def test_bad_sources_fail_before_any_work(tmp_path, sources, message):
    with pytest.raises(BusnetError, match=message):
        ingest(sources, str(tmp_path / "ds"), **FAST)


def test_nothing_usable_is_an_error_not_an_empty_dataset(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(BusnetError, match="no images ingested .1 rejected.*unknown layout"):
        ingest({"busi": tmp_path / "raw"}, str(tmp_path / "ds"), **FAST)
    assert not (tmp_path / "ds").exists()


def test_bad_output_uri_is_refused_before_reading(messy, tmp_path):
    with pytest.raises(BusnetError, match="unsupported storage URI"):
        ingest({"busi": messy["busi"]}, "gs://bucket/ds", **FAST)


def test_bad_split_parameters_fail_before_reading(tmp_path):
    with pytest.raises(BusnetError, match="summing to less than 1"):
        ingest({"busi": tmp_path / "missing"}, str(tmp_path / "ds"), val=0.5, test=0.5, progress=False)
