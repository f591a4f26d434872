"""`busnet predict --data`: what an earlier run recorded is reused only for the same dataset content,
and an image that cannot be read (a hostile DICOM file too) is an error row, not the end of the run
(each failed before)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from jobs.errors import BusnetError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    import torch

    from models import build_model, save_checkpoint
    from models.preprocess import Preprocessing

    torch.manual_seed(0)
    model = build_model("tiny", "hybrid").eval()
    directory = tmp_path_factory.mktemp("hostile-ckpt") / "ckpt"
    save_checkpoint(model, directory, preprocessing=Preprocessing(size=model.input_size), threshold=0.5)
    return str(directory)


def _rows(out: Path) -> dict[str, dict]:
    rows = pads.dataset(sorted(out.glob("predictions/*.parquet")), format="parquet").to_table().to_pylist()
    return {row["image_id"]: row for row in rows}


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _ingest(table: Path, labels: dict[str, int], out: str) -> None:
    from jobs.data.ingest import ingest

    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows([["image", "label"], *[[name, label] for name, label in labels.items()]])
    ingest({"folder": table}, out, val=0.2, test=0.2, folds=2, seed=0, progress=False)


def test_a_dataset_reingested_at_the_same_uri_is_not_resumed(ray_local, synthetic_dataset, checkpoint, tmp_path):
    """Before: labels flipped and re-ingested at the same URI gave "0 predicted, 12 skipped" and a
    metrics.json of the old labels (accuracy 1.0 where the truth was 0)."""
    from jobs.data.dataset import read_table
    from jobs.evaluate.batch import predict_archive

    synthetic, raw = Path(synthetic_dataset).parent / "raw", tmp_path / "raw"
    names = sorted(p.relative_to(synthetic) for p in synthetic.rglob("benign (*).png"))[:6]
    names += sorted(p.relative_to(synthetic) for p in synthetic.rglob("malignant (*).png"))[:6]
    for name in names:
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(synthetic / name, raw / name)
    labels = {name.as_posix(): int(name.parts[0] == "malignant") for name in names}
    data, out = str(tmp_path / "dataset"), tmp_path / "out"
    _ingest(raw / "labels.csv", labels, data)
    first = predict_archive(checkpoint, data, str(out), n_bootstrap=0)
    assert first["predicted"] == 12 and first["errors"] == 0

    _ingest(raw / "labels.csv", {n: 1 - label for n, label in labels.items()}, data)
    with pytest.raises(BusnetError, match=r"holds predictions of another job \(data_content differ"):
        predict_archive(checkpoint, data, str(out), n_bootstrap=0)
    assert json.loads((out / "predict.json").read_text())["data_content"] is not None

    fresh = tmp_path / "fresh"
    predict_archive(checkpoint, data, str(fresh), n_bootstrap=0)
    truth = read_table(data, columns=["image_id", "label"]).to_pylist()
    assert {r["image_id"]: r["true_label"] for r in _rows(fresh).values()} == {
        r["image_id"]: r["label"] for r in truth
    }  # the labels of the dataset as it is now


def test_unreadable_images_of_a_folder_are_error_rows_and_the_run_goes_on(ray_local, checkpoint, tmp_path):
    """Before: the first unreadable or over-limit image stopped the whole run, and every rerun; `.dcm`
    files were not listed; `--format masks --overlay` stopped at the first image without a prediction.
    A DICOM file is predicted as the PNG of its pixels is; a hostile one is refused by models.dicom."""
    from jobs.commands.masks_out import write_masks
    from jobs.evaluate.batch import predict_archive
    from tests.dicom_files import gray8, texts_of, unsupported

    folder = tmp_path / "scans"
    (folder / "exam").mkdir(parents=True)
    dicom, good = gray8(0)
    (folder / "exam" / "IM0001.dcm").write_bytes(dicom)
    (folder / "video.dcm").write_bytes(unsupported(1))  # H.264: no decoder, refused before a pixel is read
    (folder / "a.png").write_bytes(_png(good))
    (folder / "b.png").write_bytes(_png(good[::-1]))
    (folder / "truncated.png").write_bytes(_png(good)[:200])
    (folder / "notes.png").write_bytes(b"not an image at all")
    (folder / "thin.png").write_bytes(_png(np.zeros((4, 2000), np.uint8)))
    out = tmp_path / "out"
    result = predict_archive(checkpoint, str(folder), str(out), batch_size=2)
    assert (result["images"], result["predicted"], result["errors"]) == (7, 7, 4)
    rows = _rows(out)
    assert {i: r["error"] for i, r in rows.items() if r["error"]} == {
        "notes.png": "not a PNG, JPEG or BMP image",
        "thin.png": "too thin: 2000x4 is more elongated than 8:1",
        "truncated.png": rows["truncated.png"]["error"],
        "video.dcm": rows["video.dcm"]["error"],
    }
    assert rows["truncated.png"]["error"].startswith("corrupt or truncated PNG image")
    assert rows["video.dcm"]["error"].startswith("unsupported DICOM transfer syntax")
    assert all(rows[i]["malignant_probability"] is not None and rows[i]["error"] is None for i in ("a.png", "b.png"))
    assert rows["thin.png"]["malignant_probability"] is None and rows["thin.png"]["label"] is None
    scan, same = rows["exam/IM0001.dcm"], rows["a.png"]
    assert scan["malignant_probability"] == pytest.approx(same["malignant_probability"], abs=1e-5)
    assert (scan["height"], scan["width"]) == good.shape and scan["mask_png"] == same["mask_png"]
    assert not any(text in json.dumps(rows, default=str) for text in texts_of(dicom))  # no patient data out
    files = write_masks(str(out), str(folder), overlay_dir=str(tmp_path / "overlays"))
    assert (files["masks"], files["overlays"]) == (3, 3)
    overlay = Image.open(tmp_path / "overlays" / "exam__IM0001.overlay.png")
    assert overlay.size == Image.open(out / "masks" / "exam__IM0001_mask.png").size == (good.shape[1], good.shape[0])
    again = predict_archive(checkpoint, str(folder), str(out))
    assert (again["predicted"], again["skipped"], again["errors"]) == (0, 7, 4)  # not retried, not fatal
