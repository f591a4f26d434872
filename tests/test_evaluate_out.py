"""`busnet evaluate --out DIR` writes and records only its own files. Before: every file already in DIR
(a `.env` holding a secret) became an MLflow artifact of the run, and a second run into the same
DIR failed at its very end (its MLflow store, a folder, was logged as an artifact too)."""

from __future__ import annotations

import pytest
import torch

from jobs import tracking
from jobs.cli import main
from jobs.errors import BusnetError
from jobs.evaluate.run import evaluate
from tests.test_tracking import artifact_names, tracked_runs


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    from models import build_model, save_checkpoint
    from models.preprocess import Preprocessing

    torch.manual_seed(0)
    model = build_model("tiny", "hybrid").eval()
    directory = tmp_path_factory.mktemp("evaluate-out") / "ckpt"
    return str(save_checkpoint(model, directory, preprocessing=Preprocessing(size=model.input_size)))


def test_a_folder_holding_other_files_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / ".env").write_text("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI\n")
    with pytest.raises(BusnetError, match=r"holds \.env, which busnet evaluate did not write; refusing"):
        evaluate(str(tmp_path / "no-such-dataset"), str(tmp_path / "no-such-checkpoint"), str(out))
    assert [p.name for p in out.iterdir()] == [".env"]
    (out / "report.md").write_text("mine")  # evaluate's names do not make the folder evaluate's
    with pytest.raises(BusnetError, match=r"holds \.env, which"):
        evaluate("x", "y", str(out))
    (tmp_path / "file").write_text("x")
    with pytest.raises(BusnetError, match="is a file; give a folder"):
        evaluate("x", "y", str(tmp_path / "file"))


def test_two_runs_into_one_folder_record_only_what_each_wrote(ray_local, synthetic_dataset, checkpoint, tmp_path):
    out = tmp_path / "report"
    command = ["evaluate", "--data", synthetic_dataset, "--checkpoint", checkpoint, "--out", str(out)]
    for _ in range(2):
        assert main([*command, "--split", "val", "--bootstrap", "0"]) == 0
    client, runs = tracked_runs(out, "evaluate")
    written = {
        "metrics.json",
        "predictions.csv",
        "report.md",
        "roc.png",
        "confusion.png",
        "overlays.png",
        "reliability.png",
    }
    assert len(runs) == 2 and all(artifact_names(client, run) <= written for run in runs)
    assert "metrics.json" in artifact_names(client, runs[1])
    assert {p.name for p in out.iterdir()} <= written | {tracking.STORE_FOLDER}
