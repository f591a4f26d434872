"""Faults from outside the code: processes killed in the middle of a publish, a node lost mid-epoch.

Each fault is real (SIGKILL of a child process; a Ray node removed with its processes) and each
test checks what a user would: the previous publication still reads, and the next run completes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from jobs import storage
from jobs.data.dataset import read_manifest, read_table
from jobs.data.ingest import ingest

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
    assert [done for _, done in storage.versions(out)] == [True, True]  # the half version is gone
