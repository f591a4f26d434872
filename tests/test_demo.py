"""`busnet demo` end to end with a reduced budget: every artifact, and served answers = the model's own."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from jobs.cli import main
from tests.conftest import free_port

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end(ray_local, tmp_path, capsys):
    workdir = tmp_path / "work"
    code = main(["demo", "--workdir", str(workdir), "--images", "60", "--trials", "2", "--epochs", "2",
                 "--port", str(free_port())])
    assert code == 0, capsys.readouterr().err

    assert (workdir / "synthetic" / "cases.csv").is_file()
    manifest = json.loads((workdir / "dataset" / "manifest.json").read_text())
    assert manifest["num_rows"] == 60 and (workdir / "dataset" / "_COMPLETE").exists()
    best = workdir / "runs" / "best"
    for name in ("model.safetensors", "config.json", "metrics.json", "lineage.json", "_COMPLETE"):
        assert (best / name).is_file(), name
    assert (workdir / "runs" / "tune_results.csv").is_file()
    for name in ("metrics.json", "report.md", "predictions.csv", "roc.png", "confusion.png", "overlays.png"):
        assert (workdir / "report" / name).stat().st_size > 0, name
    metrics = json.loads((workdir / "report" / "metrics.json").read_text())
    assert json.loads((best / "config.json").read_text())["weights_sha256"] in json.dumps(metrics)

    predictions = json.loads((workdir / "predictions.json").read_text())
    assert len(predictions) >= 2
    assert {p["true_label"] for p in predictions} == {"benign", "malignant"}
    from models import load_checkpoint
    from models.preprocess import Preprocessing, decode_image, preprocess_image

    model, config = load_checkpoint(str(best))
    pre = Preprocessing.from_dict(config["preprocessing"])
    for answer in predictions:
        image = decode_image(open(answer["file"], "rb").read())
        with torch.no_grad():
            logit = model(torch.from_numpy(preprocess_image(image, pre))[None])["logits"][0]
        assert answer["malignant_probability"] == pytest.approx(torch.sigmoid(logit).item(), abs=1e-4)
        assert answer["threshold"] == pytest.approx(config["threshold"])
        assert (workdir / "overlays" / f"{answer['file'].rsplit('/', 1)[-1].rsplit('.', 1)[0]}.overlay.png").is_file()
        assert np.isfinite(answer["malignant_probability"])
    out = capsys.readouterr().out
    assert "=== [6/6] predict" in out and "done in" in out
