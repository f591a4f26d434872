"""`busnet predict --checkpoint --data --out`: Ray Data batch inference into Parquet.

The rows must equal the model's own forward pass (`models.inference.predict` on the same decoded
images, no Ray), a run that fails half-way and is rerun must end with exactly one row per image, and
an --out that busnet did not write is refused untouched. The checkpoint is a seeded untrained tiny
hybrid: what is checked is that the numbers travel unchanged, not that they are good.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from jobs import cli
from jobs.errors import BusnetError
from models.calibration import expected_calibration_error

TEMPERATURE = 2.0  # the rows carry the calibrated probability, sigmoid(logit / T), the threshold's scale


def _checkpoint(directory: Path, seed: int = 0) -> str:
    import torch

    from models import build_model, save_checkpoint
    from models.preprocess import Preprocessing

    torch.manual_seed(seed)
    model = build_model("tiny", "hybrid").eval()
    save_checkpoint(
        model, directory, preprocessing=Preprocessing(size=model.input_size), threshold=0.45, temperature=TEMPERATURE
    )
    return str(directory)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return _checkpoint(tmp_path_factory.mktemp("predict-ckpt") / "ckpt")


def _output(out: Path) -> dict[str, dict]:
    rows = pads.dataset(sorted(out.glob("predictions/*.parquet")), format="parquet").to_table().to_pylist()
    by_id = {row["image_id"]: row for row in rows}
    assert len(by_id) == len(rows), "an image has more than one row"
    return by_id


def _expected(checkpoint: str, images: dict[str, bytes]) -> dict[str, dict]:
    """What the model itself says about each image: decode, preprocess, one forward pass, the mask rule."""
    import torch

    from models import load_checkpoint
    from models.inference import predict
    from models.preprocess import Preprocessing, decode_image, lesion_of, preprocess_image, restore_mask

    model, config = load_checkpoint(checkpoint)
    preprocessing = Preprocessing.from_dict(config["preprocessing"])
    expected = {}
    for image_id, data in images.items():
        image = decode_image(data)
        prediction = predict(model, preprocess_image(image, preprocessing)[None], "cpu")
        mask = restore_mask(prediction.mask_probs[0], *image.shape[:2])
        prob = float(torch.sigmoid(prediction.outputs["logits"][0] / TEMPERATURE))
        expected[image_id] = {"prob": prob, "mask": mask, **lesion_of(mask)}
    return expected


def _assert_equal(rows: dict[str, dict], expected: dict[str, dict], threshold: float) -> None:
    assert rows.keys() == expected.keys()
    for image_id, want in expected.items():
        row = rows[image_id]
        assert row["malignant_probability"] == pytest.approx(want["prob"], abs=1e-6), image_id
        assert row["label"] == ("malignant" if want["prob"] >= threshold else "benign")
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(row["mask_png"]))), want["mask"]), image_id
        assert (row["lesion_area_px"], row["lesion_bbox"]) == (want["area_px"], want["bbox"])
        assert (row["height"], row["width"]) == want["mask"].shape


def test_dataset_predictions_equal_the_models_forward_and_survive_a_failure(
    ray_local, synthetic_dataset, checkpoint, tmp_path, monkeypatch
):
    """A write fails (disk full) on the 3rd Parquet file, leaving a half-written staging file: the
    run stops with the error; the rerun resumes and ends with one row per image, equal to the model's."""
    from jobs.data.dataset import read_table
    from jobs.evaluate import batch

    table = read_table(synthetic_dataset, columns=["image_id", "image", "label"])
    images = dict(zip(table.column("image_id").to_pylist(), table.column("image").to_pylist()))
    out = tmp_path / "out"
    real_write, calls = batch._write_part, []

    def failing_write(uri: str, part) -> None:
        calls.append(uri)
        if len(calls) == 3:
            Path(uri).parent.joinpath(f".{Path(uri).name}.tmp").write_bytes(b"PAR1 half a file")
            raise BusnetError(f"{uri}: no space left on device")
        real_write(uri, part)

    monkeypatch.setattr(batch, "_write_part", failing_write)
    with pytest.raises(BusnetError, match="no space left"):
        batch.predict_archive(checkpoint, synthetic_dataset, str(out), batch_size=4, rows_per_part=4, n_bootstrap=0)
    assert len(_output(out)) == 8 and not (out / "_COMPLETE").exists()

    monkeypatch.setattr(batch, "_write_part", real_write)
    result = batch.predict_archive(checkpoint, synthetic_dataset, str(out), batch_size=4, n_bootstrap=10)
    assert (result["images"], result["predicted"], result["skipped"]) == (len(images), len(images) - 8, 8)
    rows = _output(out)
    _assert_equal(rows, _expected(checkpoint, images), threshold=0.45)
    labels = dict(zip(table.column("image_id").to_pylist(), table.column("label").to_pylist()))
    assert {i: r["true_label"] for i, r in rows.items()} == labels
    assert all(r["dsc"] is not None and 0.0 <= r["dsc"] <= 1.0 for r in rows.values())

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["n"] == len(images) and metrics["threshold"] == 0.45
    probs = np.array([rows[i]["malignant_probability"] for i in labels])
    truth = np.array(list(labels.values()))
    assert metrics["overall"]["confusion"]["tp"] == int(((probs >= 0.45) & (truth == 1)).sum())
    assert metrics["calibration"]["temperature"] == TEMPERATURE and metrics["calibration"]["calibrated"]
    ece = metrics["calibration"]["calibrated"]["ece"]["value"]
    assert ece == pytest.approx(expected_calibration_error(truth, probs))
    assert (out / "_COMPLETE").exists()

    again = batch.predict_archive(checkpoint, synthetic_dataset, str(out), n_bootstrap=0)
    assert again["predicted"] == 0 and _output(out) == rows


def test_an_output_of_another_job_or_not_of_busnet_is_refused_untouched(
    ray_local, synthetic_dataset, checkpoint, tmp_path, capsys
):
    from jobs.evaluate.batch import predict_archive

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code = cli.main(["predict", "--checkpoint", checkpoint, "--data", synthetic_dataset, "--out", str(foreign)])
    assert code == 1 and "not a busnet predict output" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    out = tmp_path / "out"
    predict_archive(checkpoint, synthetic_dataset, str(out), split="val", n_bootstrap=0)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    other = _checkpoint(tmp_path / "other", seed=1)
    with pytest.raises(BusnetError, match="another job .*weights_sha256"):
        predict_archive(other, synthetic_dataset, str(out), split="val")
    with pytest.raises(BusnetError, match="another job .*split"):
        predict_archive(checkpoint, synthetic_dataset, str(out), split="test")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_folder_of_real_images_is_predicted_without_labels(ray_local, busi_sample, checkpoint, tmp_path):
    from jobs.evaluate.batch import predict_archive

    folder = tmp_path / "scans"
    (folder / "b").mkdir(parents=True)
    picked = sorted(p for p in busi_sample.rglob("*).png"))[:3]
    for index, path in enumerate(picked):
        shutil.copy(path, folder / ("b" if index else "") / path.name)
    (folder / "README.txt").write_text("not an image: left out")
    out = tmp_path / "out"
    result = predict_archive(checkpoint, str(folder), str(out), batch_size=2)
    assert result["metrics"] is None and not (out / "metrics.json").exists()
    rows = _output(out)
    images = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*.png")}
    _assert_equal(rows, _expected(checkpoint, images), threshold=0.45)
    assert all(r["true_label"] is None and r["dsc"] is None and r["source"] == "images" for r in rows.values())


def test_batch_and_client_modes_do_not_mix(capsys):
    assert cli.main(["predict", "--checkpoint", "c", "--data", "d"]) == 1
    assert "batch mode needs --checkpoint, --data and --out" in capsys.readouterr().err
    assert cli.main(["predict", "--checkpoint", "c", "--data", "d", "--out", "o", "x.png"]) == 1
    assert "no IMAGE arguments" in capsys.readouterr().err
    assert cli.main(["predict"]) == 1
    assert "give IMAGE files" in capsys.readouterr().err


def test_bench_predict_times_both_pipelines_on_the_same_images(ray_local, synthetic_dataset, checkpoint, capsys):
    from jobs.data.dataset import read_table

    splits = read_table(synthetic_dataset, columns=["split"]).column("split").to_pylist()
    argv = ["bench", "predict", "--data", synthetic_dataset, "--checkpoint", checkpoint, "--split", "val"]
    assert cli.main([*argv, "--batch-size", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == splits.count("val") and result["device"] == "cpu"
    for key in ("batch_images_per_s", "bare_images_per_s", "speedup", "batch_seconds", "bare_seconds"):
        assert result[key] > 0, key
