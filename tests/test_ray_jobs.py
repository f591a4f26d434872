"""`ray job submit --working-dir . -- busnet train ...` against a Ray head this test starts itself.

The head gets its own free ports and its own --temp-dir, runs in its own session, and is stopped by
signalling only its `ray start --block` process (which drains and stops the processes it started);
whatever of that session survives is killed by id. Nothing else on the machine is touched: never
`ray stop`, which would take down every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from jobs import storage
from jobs.runtime import free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PORT_FLAGS = (
    "port",
    "dashboard-port",
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "node-manager-port",
    "object-manager-port",
)


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    members.append(int(entry))
            except OSError:
                pass
    return members


def _start_head(temp_dir: str, env: dict) -> tuple[subprocess.Popen, str]:
    """`ray start --head --block` in its own session; returns once the node has registered."""
    ports = {flag: free_port() for flag in PORT_FLAGS}
    command = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--dashboard-host",
        "127.0.0.1",
        "--num-cpus",
        "4",
        "--object-store-memory",
        "300000000",
        "--temp-dir",
        temp_dir,
        *(f"--{flag}={port}" for flag, port in ports.items()),
    ]
    log_path = Path(temp_dir) / "head.log"
    with open(log_path, "w") as log:
        head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while "Ray runtime started" not in log_path.read_text():
        if head.poll() is not None or time.monotonic() > deadline:
            _stop_head(head)
            raise RuntimeError(f"the Ray head did not come up: {log_path.read_text()[-1500:]}")
        time.sleep(1)
    return head, f"http://127.0.0.1:{ports['dashboard-port']}"


def _stop_head(head: subprocess.Popen) -> None:
    """SIGTERM to `ray start --block` (it starts stopping its processes), then SIGKILL what is left of
    its session: only processes this test started. The job is over by then, so nothing is lost by not
    waiting out Ray's graceful drain (about 30 s, a whole test's worth of the suite)."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=5)
    for pid in _session_members(head.pid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def ray_head():
    """A Ray head on 127.0.0.1 with free ports and its own temp dir; yields (dashboard URL, env)."""
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "GLOO_SOCKET_IFNAME": "lo",
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("RAY_ADDRESS", None)
    for attempt in range(2):  # on a saturated machine the raylet can miss Ray's 30 s registration window
        temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a length limit
        try:
            head, url = _start_head(temp_dir, env)
            break
        except RuntimeError:
            shutil.rmtree(temp_dir, ignore_errors=True)
            if attempt == 1:
                raise
    try:
        yield url, env
    finally:
        _stop_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_busnet_train_as_a_ray_job(ray_head, synthetic_dataset, tmp_path):
    url, env = ray_head
    out = tmp_path / "runs"
    runtime_env = json.dumps({"excludes": ["tests/", "k8s/", "*.egg-info"]})  # .venv is in .gitignore
    job = subprocess.run(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            url,
            "--working-dir",
            ".",
            "--runtime-env-json",
            runtime_env,
            "--",
            "busnet",
            "train",
            "--data",
            synthetic_dataset,
            "--out",
            str(out),
            "--name",
            "job",
            "--epochs",
            "1",
            "--lr",
            "1e-3",
            "--input-size",
            "64",
            "--cpus-per-worker",
            "0.5",
            "--select",
            "val_loss",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout
    assert "[busnet train] epoch 1/1" in job.stdout  # the job's log streams the training progress
    assert "Reporting training result" not in job.stdout  # Ray Train's INFO dump of each report (no --verbose)
    best = Path(storage.resolve(str(out / "job" / "best")))
    assert (best / "_COMPLETE").exists() and (best / "model.safetensors").exists()
    assert json.loads((best / "metrics.json").read_text())["epoch"] == 1
