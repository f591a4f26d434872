"""MLflow tracking (jobs.tracking): the store next to the run, what a run holds, nesting, failures, and
nothing at all without a session (`--no-track`, library calls) or for a remote OUT without a tracking URI.

Everything is read back through MLflow's own client from the SQLite store the runs were written to. The
end-to-end checks (a Ray Train run's per-epoch metrics, evaluate, cv and ablation trees, Tune's trials)
ride on the existing end-to-end tests through `tracked_runs`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import pytest

from jobs import storage, tracking


def tracked_runs(out: Path | str, command: str, tracking_uri: str | None = None) -> tuple:
    """(MLflow client, the runs of `busnet <command>` in the store next to `out`, oldest first)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri or tracking.store_uri(str(out)))
    experiment = client.get_experiment_by_name(f"busnet-{command}")
    if experiment is None:
        return client, []
    return client, client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def artifact_names(client, run) -> set[str]:
    return {item.path for item in client.list_artifacts(run.info.run_id)}


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """One run folder whose store both tests use (each its own experiment): a new SQLite store costs seconds."""
    return tmp_path_factory.mktemp("tracked")


def assert_tracked_training(client, run, run_folder: Path, epochs: int, best_uri: str, content_hash: str) -> None:
    """A training run as MLflow holds it: its config and dataset hash, every epoch's metrics equal to the
    epoch's checkpoint, the published checkpoint's URI, metrics and JSON files."""
    assert run.info.status == "FINISHED"
    assert run.data.params["dataset_hash"] == content_hash and float(run.data.params["lr"]) == 1e-3
    history = client.get_metric_history(run.info.run_id, "val_loss")
    stored = {e: json.loads((run_folder / f"epoch-{e:04d}" / "metrics.json").read_text()) for e in range(1, epochs + 1)}
    assert sorted((m.step, m.value) for m in history) == [(e, pytest.approx(stored[e]["val_loss"])) for e in stored]
    version = storage.resolve(best_uri)
    best = json.loads((Path(version) / "metrics.json").read_text())
    assert run.data.tags["checkpoint_uri"] == best_uri and run.data.tags["checkpoint_version"] == version
    assert run.data.tags["best_epoch"] == str(best["epoch"])
    assert run.data.metrics["best.val_loss"] == pytest.approx(best["val_loss"])
    assert artifact_names(client, run) == {"config.json", "metrics.json", "lineage.json"}


def test_runs_record_params_metrics_artifacts_nest_and_fail_in_the_store_next_to_out(out, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    params = {"lr": 1e-3, "loss": {"w1": 0.3}, "fold": None}
    with tracking.session("cv", str(out)), tracking.run("cv demo", params=params) as parent:
        for epoch, loss in ((1, 0.9), (2, 0.7)):
            parent.log_metrics({"val": {"loss": loss}, "note": "text", "bad": math.nan, "flag": True}, step=epoch)
        parent.log_artifacts(report)
        with pytest.raises(ValueError), tracking.run("fold-0") as child:
            child.set_tags({"checkpoint_uri": "runs/fold-0/best"})
            raise ValueError("the fold failed")
    assert (out / "mlruns" / "mlflow.db").is_file()

    client, runs = tracked_runs(out, "cv")
    assert [run.info.run_name for run in runs] == ["cv demo", "fold-0"]
    parent_run, child_run = runs
    assert parent_run.info.status == "FINISHED" and child_run.info.status == "FAILED"
    assert child_run.data.tags["mlflow.parentRunId"] == parent_run.info.run_id
    assert child_run.data.tags["checkpoint_uri"] == "runs/fold-0/best"
    assert parent_run.data.params == {"lr": "0.001", "loss.w1": "0.3"}  # None is not a value
    history = client.get_metric_history(parent_run.info.run_id, "val.loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.9), (2, 0.7)]
    assert set(parent_run.data.metrics) == {"val.loss"}  # text, NaN and booleans are not metrics
    assert artifact_names(client, parent_run) == {"report.md"}
    assert parent_run.info.artifact_uri.startswith((out / "mlruns" / "artifacts").as_uri())


def test_nothing_is_recorded_without_a_session_or_with_no_track(tmp_path):
    for context in (tracking.session("train", str(tmp_path), enabled=False), contextlib.nullcontext()):
        with context, tracking.run("run", params={"lr": 1}) as tracked:
            tracked.log_metrics({"val_loss": 1.0}, step=1)
            tracked.set_tags({"checkpoint_uri": "x"})
            assert tracked.run_id is None and tracked.epoch_callbacks() == [] and tracked.tune_callbacks() == []
    assert list(tmp_path.iterdir()) == []


def test_a_tracking_uri_wins_and_a_remote_out_needs_one(out, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracking.session("train", "s3://bucket/runs"), tracking.run("run") as tracked:
        assert tracked.run_id is None
    assert "not tracked in MLflow: s3://bucket/runs" in capsys.readouterr().err

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.store_uri(str(out)))
    for run_out in ("s3://bucket/runs", str(tmp_path)):
        with tracking.session("train", run_out), tracking.run(run_out, params={"epochs": 2}):
            pass
    _, runs = tracked_runs(out, "train")
    assert [(run.info.run_name, run.data.params) for run in runs] == [
        ("s3://bucket/runs", {"epochs": "2"}),
        (str(tmp_path), {"epochs": "2"}),
    ]
    assert list(tmp_path.iterdir()) == []  # not next to the run: in the tracking URI's store


def test_a_session_leaves_the_tracking_uri_as_it_found_it(tmp_path, monkeypatch):
    """Ray Tune's MLflow callback calls mlflow.set_tracking_uri, which exports MLFLOW_TRACKING_URI for the
    rest of the process: the next session there would track into the first one's store."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for user_uri in (None, tracking.store_uri(str(tmp_path / "server"))):
        if user_uri:
            monkeypatch.setenv("MLFLOW_TRACKING_URI", user_uri)
        with tracking.session("tune", str(tmp_path / "first")):
            mlflow.set_tracking_uri(tracking.store_uri(str(tmp_path / "first")))  # what the callback does
        assert os.environ.get("MLFLOW_TRACKING_URI") == user_uri
