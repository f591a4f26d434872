"""Faults from outside the code: processes killed in the middle of a publish, a node lost mid-epoch.

Each fault is real (SIGKILL of a child process; a Ray node removed with its processes) and each
test checks what a user would: the previous publication still reads, and the next run completes.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import storage
from jobs.data.dataset import read_manifest, read_table
from jobs.data.ingest import ingest
from jobs.train.driver import VAL_METRICS
from jobs.train.state import STATE_FILE
from models import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def test_an_ingest_killed_while_publishing_leaves_the_previous_dataset_readable(synthetic_dataset, tmp_path):
    raw = Path(synthetic_dataset).parent / "raw"
    out = str(tmp_path / "dataset")
    before = ingest({"synthetic": raw}, out, seed=0, progress=False)
    command = ["ingest", "--source", f"synthetic={raw}", "--out", out, "--seed", "1"]
    code = f"from tests.faults import die_mid_publish; die_mid_publish(); from jobs.cli import main; main({command!r})"
    killed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]  # died half-way through writing the new version
    assert [done for _, done in storage.versions(out)] == [True, False]

    assert read_manifest(out)["content_hash"] == before["content_hash"]  # the previous dataset, whole
    assert read_table(out, columns=["image_id"]).num_rows == before["num_rows"]

    after = ingest({"synthetic": raw}, out, seed=1, progress=False)  # the next ingestion completes
    assert (
        after["content_hash"] != before["content_hash"] and read_manifest(out)["content_hash"] == after["content_hash"]
    )
    assert [done for _, done in storage.versions(out)] == [True, False, True]  # the half one waits for its lease


@pytest.mark.slow
def test_a_cluster_that_loses_a_node_mid_epoch_finishes_from_the_last_checkpoint(
    synthetic_dataset, s3_bucket, tmp_path
):
    """Head + two worker nodes (ray.cluster_utils.Cluster, in a child process: one Ray per process),
    one training worker per node, checkpoints on S3; a node holding a worker is removed in epoch 2.
    The run restarts once, from epoch 1's checkpoint, on what is left, and ends with every epoch of
    an uninterrupted run: each trained once, each with its full validation metrics, the best published."""
    markers = tmp_path / "markers"
    markers.mkdir()
    out = f"{s3_bucket}/runs"
    script = [sys.executable, str(REPO / "tests" / "cluster_node_loss.py"), synthetic_dataset, out, str(markers)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the script imports tests.faults
    done = subprocess.run(script, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    story = json.loads(done.stdout.strip().splitlines()[-1])
    nodes = story["worker_nodes"]
    assert len(set(nodes.values())) == 2 and story["removed"] in nodes.values()  # one worker per node, one lost
    assert story["removed"] != story["head"]

    last = json.loads(storage.read_bytes(f"{out}/run/epoch-0003/{STATE_FILE}"))["state"]
    assert last["starts"] == [1, 2] and last["epochs_run"] == [1, 2, 3]  # restarted once, from epoch 1
    for epoch in (1, 2, 3):
        metrics = json.loads(storage.read_bytes(f"{out}/run/epoch-{epoch:04d}/metrics.json"))
        assert metrics["epoch"] == epoch and all(math.isfinite(metrics[name]) for name in ("val_loss", "train_loss"))
        assert set(VAL_METRICS) <= metrics.keys()
    _, config = load_checkpoint(story["best_uri"])
    assert config["metrics"]["epoch"] == story["best_metrics"]["epoch"]
    assert config["metrics"]["val_loss"] == pytest.approx(story["best_metrics"]["val_loss"])
