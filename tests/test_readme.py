"""README.md's journeys, run as written: each fenced block under "Submit a Ray job", "Tune", "Query the
endpoint" and "Deploy to Kubernetes" goes to bash unchanged, in a copy of the repository whose
`busnet-work/` holds what the demo leaves there (a dataset, its synthetic images, a published model),
from a plain environment: a new HOME, no RAY_ADDRESS, no RAY_AUTH_MODE, PATH without the venv until
the README's `. .venv/bin/activate`. Each block runs in its own session; what it started (a Ray head,
a server) is stopped by killing that session's processes, never with `ray stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import storage

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
README = (ROOT / "README.md").read_text()


def block(heading: str) -> str:
    """The first fenced block after `### heading` in README.md."""
    section = README.split(f"### {heading}\n", 1)[1]
    return re.search(r"```\n(.*?)```", section, re.S).group(1)


def test_readme_reads_in_five_minutes():
    assert len(README.splitlines()) <= 150
    for heading in ("Submit a Ray job", "Tune", "Query the endpoint", "Deploy to Kubernetes"):
        assert block(heading).strip()
    commands = re.search(r"## Two commands\n.*?```\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert commands == ["./setup.sh && .venv/bin/busnet demo", "./setup.sh --test && .venv/bin/python -m pytest -q"]
    assert (ROOT / ".ci/run").read_text().strip().endswith(commands[1])  # CI runs exactly the README's tests


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no owner
        try:
            sock.bind(("", port))  # every interface: Ray's agent listens on the node's IP too
        except OSError:
            return False
    return True


@pytest.fixture
def workdir(tmp_path, synthetic_dataset):
    """A copy of the repository's tracked files, with `busnet-work/` as the demo leaves it."""
    from models import build_model, save_checkpoint

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    copy = tmp_path / "busnet"
    for name in tracked.split():
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    work = copy / "busnet-work"
    shutil.copytree(synthetic_dataset, work / "dataset")
    raw = Path(synthetic_dataset).parent / "raw"  # the fixture's `busnet synth` output, in BUSI's layout
    shutil.copytree(raw, work / "synthetic")
    storage.publish_dir(save_checkpoint(build_model("tiny"), tmp_path / "model"), str(work / "runs" / "best"))
    return copy


def _environment(tmp_path: Path, token: bool) -> dict:
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    if token:  # what the demo's local Ray leaves behind
        (home / ".ray" / "auth_token").write_text(os.urandom(32).hex())
    temp = Path(f"/tmp/rr{os.getpid()}")  # Ray's socket paths have a length limit
    temp.mkdir(exist_ok=True)
    env = {
        "HOME": str(home),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "RAY_TMPDIR": str(temp),  # this test's Ray files apart from any other Ray on the machine
        "GLOO_SOCKET_IFNAME": "lo",
    }
    if "PYTHONPATH" in os.environ:  # a development tree run against another checkout's venv
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


RAY_START_PORTS = (6379, 8265, 10001, 52365)  # GCS, dashboard, client server, dashboard agent: Ray's defaults
AGENT_NOT_UP = "No available agent to submit job"  # Ray's answer while a new head's job agent starts


def _resubmitting(text: str) -> str:
    """The block with its `ray job submit` command (as written) run again, as README says to, while the
    new head answers that its job agent is not up yet (a loaded machine: 10 s of Ray's wait were not enough)."""
    head, submit = text.split("ray job submit", 1)
    return (
        f"{head}for attempt in $(seq 12); do\n"
        f'  if output=$(ray job submit{submit.rstrip()} 2>&1); then echo "$output"; break; fi\n'
        f'  echo "$output"; echo "$output" | grep -q "{AGENT_NOT_UP}" && [ "$attempt" -lt 12 ] || exit 1; sleep 10\n'
        "done\n"
    )


@contextlib.contextmanager
def journey(heading: str, cwd: Path, env: dict, timeout: int):
    """Run the README block (after `. .venv/bin/activate`) in its own session; yield the finished process."""
    text = block(heading)
    script = f"set -e\n. {VENV}/bin/activate\n{_resubmitting(text) if 'ray job submit' in text else text}"
    log = cwd.parent / f"{heading}.log"  # a file, not a pipe: a server the block leaves running keeps a pipe open
    with log.open("w") as sink:
        process = subprocess.Popen(
            ["bash", "-c", script], cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        process.wait(timeout=timeout)
        yield process.returncode, log.read_text()
    finally:
        _kill_session(process.pid)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def _kill_session(sid: int) -> None:
    """SIGTERM, then SIGKILL, every process of the session the block ran in (and only those)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        members = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.getsid(int(entry)) == sid:
                        members.append(int(entry))
        for pid in members:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        if not members:
            return
        time.sleep(3)


@pytest.mark.slow
def test_submit_a_ray_job_after_the_demo(workdir, tmp_path):
    """With ~/.ray/auth_token there (as after the demo), the README's recipe submits and the job trains."""
    for port in RAY_START_PORTS:
        if not _free(port):
            pytest.skip(f"port {port} is taken (another Ray?): the README's `ray start` uses Ray's default ports")
    with journey("Submit a Ray job", workdir, _environment(tmp_path, token=True), timeout=560) as (code, output):
        assert code == 0, output[-4000:]
    assert "Authentication required" not in output and "succeeded" in output
    assert "[busnet train] epoch 2/2" in output
    best = Path(storage.resolve(str(workdir / "busnet-work" / "jobs" / "job1" / "best")))
    assert json.loads((best / "metrics.json").read_text())["epoch"] in (1, 2)


@pytest.mark.slow
def test_tune_as_written(workdir, tmp_path):
    with journey("Tune", workdir, _environment(tmp_path, token=False), timeout=560) as (code, output):
        assert code == 0, output[-4000:]
    table = re.search(r"^\s*VERSION\s+CREATED.*\n(?:.*\n)*?\*", output, re.M)  # `models list`, the current marked
    assert table, output[-3000:]
    assert "tensorboard" not in output.lower() and "Trial status" not in output  # Tune's own output: --verbose
    assert (workdir / "busnet-work" / "tune" / "tune_results.csv").exists()


@pytest.mark.slow
def test_query_the_endpoint_as_written(workdir, tmp_path):
    if not _free(8000):
        pytest.skip("port 8000 on 127.0.0.1 is taken: the README's `busnet serve --port 8000` needs it")
    with journey("Query the endpoint", workdir, _environment(tmp_path, token=False), timeout=300) as (code, output):
        assert code == 0, output[-4000:]
    answer, _ = json.JSONDecoder().raw_decode(output[output.index('{"label"') :])  # curl ends no line
    assert answer["label"] in ("benign", "malignant") and 0 <= answer["malignant_probability"] <= 1
    assert answer["mask_png"] and set(answer["lesion"]) == {"area_px", "bbox"}


def test_deploy_to_kubernetes_as_far_as_it_runs_here(workdir, tmp_path):
    """The render runs here (the real kubectl); `kubectl apply` needs a cluster with KubeRay."""
    render, apply = block("Deploy to Kubernetes").strip().splitlines()
    assert render.startswith("kubectl kustomize ") and apply.startswith("kubectl apply ")
    env = {**_environment(tmp_path, token=False), "PATH": f"{VENV}/bin:/usr/bin:/bin"}
    done = subprocess.run(["bash", "-ec", render], cwd=workdir, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rendered = (workdir / "busnet-tune.yaml").read_text()
    assert "kind: RayJob" in rendered and "namespace: busnet-local" in rendered
    for path in re.findall(r"-[kf] (\S+)", apply):  # what the second line applies exists
        assert (workdir / path).exists(), path
