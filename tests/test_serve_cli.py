"""`busnet serve` as a real process (joined to the test session's Ray, or on its own Ray behind HAProxy) and
`busnet bench serve`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from jobs.cli import main
from jobs.runtime import free_port
from models import build_model, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def busnet_serve(checkpoint: Path, env: dict[str, str], stderr: Path, *options: str) -> Iterator[str]:
    """`busnet serve` as a process until it prints its URL; yields the URL, then stops it with Ctrl-C
    (SIGINT) and asserts it exited cleanly."""
    port = free_port()
    command = [sys.executable, "-m", "jobs.cli", "serve", "--checkpoint", str(checkpoint), "--port", str(port)]
    with stderr.open("w") as stderr_file:
        process = subprocess.Popen([*command, *options], stdout=subprocess.PIPE, stderr=stderr_file, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while not any(line.startswith(f"busnet serve: {url}/v1/predict") for line in lines):
            if process.poll() is not None:
                pytest.fail(f"busnet serve exited with {process.returncode}: {stderr.read_text()[-3000:]}")
            assert time.monotonic() < deadline, "busnet serve printed no URL within 300 s"
            time.sleep(0.5)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()  # never leave a Ray (and its HAProxy) behind a failed test
            process.wait()
            raise
        reader.join(timeout=10)
    assert process.returncode == 0, stderr.read_text()[-2000:]


def test_busnet_serve_runs_until_interrupted(ray_local, tmp_path, busi_sample):
    from ray import serve

    checkpoint = save_checkpoint(build_model("tiny"), tmp_path / "ckpt")
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    stderr = tmp_path / "serve.err"
    with busnet_serve(checkpoint, env, stderr, "--max-batch-size", "4") as url:
        image = sorted(busi_sample.glob("malignant/*).png"))[0]
        answer = requests.post(
            f"{url}/v1/predict", data=image.read_bytes(), headers={"Content-Type": "image/png"}, timeout=60
        ).json()
        assert answer["model"]["sha256"] == load_checkpoint(checkpoint)[1]["weights_sha256"]
        assert np.asarray(answer["lesion"]["bbox"] or [0, 0, 1, 1]).shape == (4,)
    assert "stopping" in stderr.read_text()
    assert "busnet" not in serve.status().applications  # its app is gone from the cluster
    serve.shutdown()  # it joined our Ray, so Serve itself stays up: stop it for the next test


def test_bench_serve_json(ray_local, capsys):
    code = main(
        [
            "bench",
            "serve",
            "--concurrency",
            "1,6",
            "--requests",
            "18",
            "--duration",
            "20",  # a level's limit (18 requests take ~2 s at concurrency 1); each bare baseline gets a quarter
            "--max-batch-size",
            "6",
            "--batch-wait-ms",
            "20",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # Ray may log lines before it
    bare = report["bare"]
    assert bare["forward"]["images_per_s"] > 0 and bare["pipeline_batched"]["batch_size"] == 6
    assert bare["pipeline_single"]["p50_ms"] > 0 and bare["pipeline_batched"]["images_per_s"] > 0
    assert [level["concurrency"] for level in report["levels"]] == [1, 6]
    for level in report["levels"]:
        assert level["errors"] == 0 and 0 < level["requests"] <= 18
        assert level["p50_ms"] <= level["p99_ms"] and level["vs_bare_pipeline"] > 0
    assert report["best_vs_bare_pipeline"] == max(level["vs_bare_pipeline"] for level in report["levels"])
    assert report["c1_p50_over_bare_ms"] == report["levels"][0]["p50_ms"] - bare["pipeline_single"]["p50_ms"]
    assert report["levels"][0]["mean_batch_size"] == pytest.approx(1.0)
    assert report["levels"][1]["mean_batch_size"] >= 1.0


# Refused inside the replica, so the proxy in front must pass each status and JSON body through unchanged
# (tests/test_serve.py sends every bad input through the default ingress, HAProxy).
HOSTILE_BEHIND_PROXY = [
    "empty body",
    "not an image",
    "truncated PNG",
    "long thin image (4 x 20000)",
    "malformed multipart",
    "many tiny multipart parts",
]


def test_busnet_serve_behind_the_python_proxy_answers_batches_and_refuses_bad_input(tmp_path, busi_sample):
    """`busnet serve --ingress proxy`, the ingress that is not the default, with its own local Ray (Serve
    reads the mode when Ray starts)."""
    from serve.settings import DEFAULT_MAX_IMAGE_BYTES
    from tests.test_serve import BAD_INPUTS, GOOD, post_raw

    checkpoint = save_checkpoint(build_model("tiny"), tmp_path / "ckpt")
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    options = ("--ingress", "proxy", "--max-batch-size", "8", "--batch-wait-ms", "50")
    with busnet_serve(checkpoint, env, tmp_path / "serve.err", *options) as url:
        images = [path.read_bytes() for path in sorted(busi_sample.glob("*/*).png"))[:8]]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda data: post_raw(url, data), images))
        assert [answer.status_code for answer in answers] == [200] * 8, [a.text[:200] for a in answers]
        sha = load_checkpoint(checkpoint)[1]["weights_sha256"]
        assert all(answer.json()["model"]["sha256"] == sha for answer in answers)
        info = requests.get(f"{url}/v1/model", timeout=30).json()
        assert info["serving"]["ingress"] == "proxy"
        assert info["stats"]["requests"] == 8 and info["stats"]["batches"] < 8  # some of them ran together
        for case in HOSTILE_BEHIND_PROXY:
            send, status = BAD_INPUTS[case]
            response = send(url)
            assert response.status_code == status and list(response.json()) == ["error"], (case, response.text)
        oversized = post_raw(url, b"\0" * (DEFAULT_MAX_IMAGE_BYTES + 1))
        assert oversized.status_code == 413 and list(oversized.json()) == ["error"]
        assert post_raw(url, GOOD).status_code == 200
    with pytest.raises(requests.ConnectionError):  # the proxy went with the Ray it ran under
        requests.get(f"{url}/v1/health", timeout=5)
