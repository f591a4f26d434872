"""DICOM in: the decoder (each photometric interpretation, single- and multi-frame, compressed, refused
input), `busnet ingest --source dicom=DIR`, and no patient data in a dataset, a log or a reject.
Predicting DICOM over HTTP is in tests/test_serve.py (it shares that module's Serve app).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs import storage
from jobs.cli import main
from jobs.data.dataset import read_table
from jobs.data.ingest.adapters.dicom import study_case
from models.dicom import DicomFile
from models.preprocess import ImageError, decode_image
from tests.dicom_files import KINDS, PHI, multi_frame, noise, texts_of, unsupported, with_uids
from tests.ingest_layouts import write_mask


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_photometric_interpretation_decodes_to_its_pixels(kind):
    write, tolerance = KINDS[kind]
    data, expected = write(3)
    image = decode_image(data)
    assert image.dtype == expected.dtype and image.shape == expected.shape
    assert np.abs(image.astype(np.int32) - expected).max() <= tolerance
    assert DicomFile(data).frames == 1


@pytest.mark.parametrize("photometric, channels", [("MONOCHROME2", 0), ("RGB", 3)])
def test_multi_frame_every_frame_and_a_chosen_one(photometric, channels):
    frames = np.stack([noise(seed, channels) for seed in (5, 6, 7)])
    data = multi_frame(photometric, frames)
    assert DicomFile(data).frames == 3
    for number in (1, 2, 3):
        assert np.array_equal(decode_image(data, frame=number), frames[number - 1])
    assert np.array_equal(decode_image(data), frames[0])  # no frame given: the first
    for number in (0, 4):
        with pytest.raises(ImageError, match=r"has 3 frames \(1-3\)") as error:
            decode_image(data, frame=number)
        assert error.value.status == 400


def test_refused_input_says_why_without_header_text():
    data, _ = KINDS["MONOCHROME2"][0](1)
    cases = {
        "unsupported syntax": (lambda: decode_image(unsupported(0)), 415, "MPEG-4 AVC/H.264"),
        "too many pixels": (lambda: decode_image(data, max_pixels=1000), 413, "64x48 is over the limit of 1,000"),
        "truncated": (lambda: decode_image(data[: len(data) // 2]), 400, "DICOM"),
        "a frame of a PNG": (lambda: decode_image(_png(noise(1)), frame=2), 400, "only a DICOM file"),
    }
    for name, (call, status, text) in cases.items():
        with pytest.raises(ImageError) as error:
            call()
        assert error.value.status == status and text in str(error.value), name
        assert not [t for t in texts_of(data) if t in str(error.value)], name


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def dicom_folder(tmp_path) -> dict:
    """Every kind as a single-frame file, two multi-frame clips, a study of two files, and bad files."""
    root = tmp_path / "export"
    files, table = {}, [["file", "sop_instance_uid", "frame", "label", "mask"]]
    for number, (kind, (write, _)) in enumerate(KINDS.items()):
        name = f"{'sub/' if number % 2 else ''}{kind.replace(' ', '_')}.dcm"
        files[name] = write(10 + number)[0]
        table.append([name if number % 3 else Path(name).name, "", "", "BM"[number % 2], ""])
    gray_clip = np.stack([noise(seed) for seed in (30, 31, 32)])
    files["clips/gray"] = multi_frame("MONOCHROME2", gray_clip)  # a DICOM file without a suffix
    table.append(["", str(DicomFile(files["clips/gray"]).sop_instance_uid), "", "malignant", ""])  # every frame
    rgb_clip = np.stack([noise(seed, 3) for seed in (40, 41, 42)])
    files["clips/rgb.dcm"] = multi_frame("RGB", rgb_clip)
    table.append(["clips/rgb.dcm", "", "2", "benign", "masks/rgb_2.png"])  # one frame, with its mask
    study = "1.2.826.0.1.3680043.8.498.4242"
    files["study/a.dcm"] = with_uids(KINDS["RGB"][0](50)[0], study, "1.2.826.0.1.3680043.8.498.4243")
    files["study/b.dcm"] = with_uids(KINDS["RGB"][0](51)[0], study, "1.2.826.0.1.3680043.8.498.4244")
    table += [["study/a.dcm", "", "", "benign", ""], ["study/b.dcm", "", "", "benign", ""]]
    files["bad/video.dcm"] = unsupported(60)
    table.append(["bad/video.dcm", "", "", "benign", ""])
    files["bad/unlisted.dcm"] = KINDS["MONOCHROME2"][0](61)[0]
    table.append(["bad/missing.dcm", "", "", "benign", ""])
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    write_mask(root / "masks" / "rgb_2.png", 64, 48, (10, 5, 30, 25))
    (root / "bad" / "notes.txt").write_text("not DICOM")
    with (root / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(table)
    return {"root": root, "files": files, "gray_clip": gray_clip, "rgb_clip": rgb_clip, "study": study}


def test_ingest_dicom_folder(dicom_folder, tmp_path, caplog, capfd):
    """Each kind and every frame becomes a row of its pixels, a study one case; bad files are rejects;
    no patient data reaches the dataset's files, its rows, the rejects, the output or the logs."""
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "ds"
    root, files = dicom_folder["root"], dicom_folder["files"]
    assert main(["ingest", "--source", f"dicom={root}", "--out", str(out), "--folds", "2", "--seed", "1"]) == 0
    rows = {r["image_id"]: r for r in read_table(str(out)).to_pylist()}
    singles = {f"dicom/{n}" for n in files if n.endswith(".dcm") and not n.startswith(("clips/", "bad/"))}
    clips = {"dicom/clips/gray#1", "dicom/clips/gray#2", "dicom/clips/gray#3", "dicom/clips/rgb.dcm#2"}
    assert set(rows) == singles | clips
    for image_id, row in rows.items():
        name, _, frame = image_id.removeprefix("dicom/").partition("#")
        expected = decode_image(files[name], frame=int(frame) if frame else None)
        assert np.array_equal(decode_image(row["image"]), expected), image_id
        uid = DicomFile(files[name]).study_uid
        assert row["case_id"] == f"dicom/{study_case(uid)}" and len(row["case_id"]) == 6 + 32
    for number, frame in enumerate(dicom_folder["gray_clip"], start=1):
        assert np.array_equal(decode_image(rows[f"dicom/clips/gray#{number}"]["image"]), frame)
    gray = [rows[f"dicom/clips/gray#{n}"] for n in (1, 2, 3)]
    assert len({(r["case_id"], r["split"], r["fold"]) for r in gray}) == 1 and {r["label"] for r in gray} == {1}
    rgb = rows["dicom/clips/rgb.dcm#2"]
    assert np.array_equal(decode_image(rgb["image"]), dicom_folder["rgb_clip"][1]) and rgb["label"] == 0
    assert np.count_nonzero(decode_image(rgb["mask"])) == 20 * 20
    study = [rows["dicom/study/a.dcm"], rows["dicom/study/b.dcm"]]
    assert study[0]["case_id"] == study[1]["case_id"] == f"dicom/{study_case(dicom_folder['study'])}"
    assert study[0]["split"] == study[1]["split"]

    manifest = json.loads((Path(storage.resolve(str(out))) / "manifest.json").read_text())
    reasons = {r["file"].removeprefix(f"{root}/"): r["reason"] for r in manifest["rejects"]}
    assert "unsupported DICOM transfer syntax: MPEG-4 AVC/H.264" in reasons["bad/video.dcm"]
    assert reasons["bad/unlisted.dcm"].startswith("no label: labels.csv has no row")
    assert reasons["bad/notes.txt"] == "not a DICOM file (no DICM preamble)"
    assert reasons[f"labels.csv:{len(KINDS) + 7}"] == "no DICOM file matches file bad/missing.dcm"
    assert len(reasons) == 4

    captured = capfd.readouterr()
    secrets = sorted({t for data in files.values() for t in texts_of(data)})
    assert len(secrets) > 3 * len(PHI)  # every file's UIDs, plus the shared patient data
    _assert_nothing_of(secrets, out, rows, captured.out + captured.err + caplog.text)


def _assert_nothing_of(secrets: list[str], out: Path, rows: dict, output: str) -> None:
    """None of `secrets` in any file of the dataset (raw bytes, and the Parquet values decompressed),
    in any row value, or in the output and logs."""
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        texts = [raw]
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            texts += [repr(table.schema.metadata).encode(), repr(table.to_pylist()).encode()]
        for secret in secrets:
            assert not any(secret.encode() in text for text in texts), (secret, path.name)
    everything = repr(rows) + output
    assert not [s for s in secrets if s in everything]
    assert "4 rejected" in output  # the summary was captured


def test_table_rows_that_cannot_be_used_are_rejects_naming_row_and_reason(tmp_path):
    """Scanning only (no ingestion): each unusable row or file is a reject saying why, the rest candidates."""
    from jobs.data.ingest.adapters.dicom import scan
    from jobs.data.ingest.found import Candidate, Reject, Skipped

    clip = multi_frame("MONOCHROME2", np.stack([noise(seed) for seed in (90, 91)]))
    (tmp_path / "outside.dcm").write_bytes(KINDS["RGB"][0](93)[0])
    tmp_path = tmp_path / "export"
    tmp_path.mkdir()
    (tmp_path / "link.dcm").symlink_to(tmp_path.parent / "outside.dcm")
    (tmp_path / "clip.dcm").write_bytes(clip)
    (tmp_path / "one.dcm").write_bytes(KINDS["RGB"][0](92)[0])
    (tmp_path / "DICOMDIR").write_bytes(b"index")
    (tmp_path / ".DS_Store").write_bytes(b"finder")
    write_mask(tmp_path / "m.png", 64, 48, (1, 1, 9, 9))
    rows = [
        ["file", "sop_instance_uid", "frame", "label", "mask"],
        ["clip.dcm", "", "", "benign", "m.png"],  # a mask of which frame?
        ["clip.dcm", "", "3", "benign", ""],  # no frame 3
        ["clip.dcm", "", "x", "benign", ""],
        ["", DicomFile(clip).sop_instance_uid, "2", "malignant", "m.png"],  # by UID: frame 2 with its mask
        ["clip.dcm", "", "2", "benign", ""],  # frame 2 again
        ["one.dcm", "", "", "maybe", ""],
    ]
    with (tmp_path / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    found = list(scan(tmp_path / "labels.csv", "dicom"))
    candidates = [f for f in found if isinstance(f, Candidate)]
    assert [(c.key, c.frame, c.label, [m.name for m in c.masks]) for c in candidates] == [
        ("clip.dcm#2", 2, 1, ["m.png"])
    ]
    assert sorted(f.reason for f in found if isinstance(f, Skipped)) == ["DICOMDIR index", "hidden file"]
    reasons = sorted(f.reason for f in found if isinstance(f, Reject))
    assert reasons == [
        "a mask for a file of 2 frames needs the frame it outlines (column frame) (row 2)",
        "frame '3': the file has 2 frames (1-2) (row 3)",
        "frame 'x': the file has 2 frames (1-2) (row 4)",
        "frame 2 listed twice (rows 5 and 6)",
        "no label (label='maybe') (row 7)",
        f"resolves outside the source root {tmp_path} (symlink): not read",
    ]
