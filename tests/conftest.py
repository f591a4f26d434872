"""Session-wide fixtures: one local Ray, one local S3 server (moto), scratch folders.

Ray starts once per test session and sees the S3 settings, because the moto server starts first and
its endpoint and fake credentials are exported before `ray.init`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.runtime import free_port

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_path(*parts: str) -> Path:
    """A file or folder of the project's shared/ (beside the clone, as in CI). Without shared/ (a plain
    clone) the test, or the module that asks at import, is skipped, and the run's summary says so once."""
    path = SHARED.joinpath(*parts)
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is missing (the project's shared/ folder)", allow_module_level=True)
    if not path.exists():
        pytest.fail(f"{path} is missing from the project's shared/ folder")
    return path


def pytest_terminal_summary(terminalreporter) -> None:
    if not SHARED.is_dir():
        terminalreporter.write_line(
            f"{SHARED} is missing: the tests that use the project's shared/ folder (real BUSI images, "
            "dataset metadata, CRD schemas) were skipped; CI runs them."
        )


@pytest.fixture(scope="session")
def busi_sample() -> Path:
    """The 20 real BUSI images (CC0) in BUSI's own layout."""
    return shared_path("data", "busi-sample")


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint on 127.0.0.1 (moto's ThreadedMotoServer); yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture
def closed_endpoint() -> Iterator[str]:
    """http://127.0.0.1:PORT of a socket bound but never listening: connecting is refused, and unlike
    a port picked and released, no other process can take it meanwhile (and answer)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def s3_bucket(s3_server, request) -> str:
    """A fresh, empty bucket on the local S3 server; yields `s3://name`."""
    import boto3

    name = "busnet-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40]
    name = name.rstrip("-") + f"-{free_port()}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture
def unreachable_endpoint(s3_server, closed_endpoint, monkeypatch) -> str:
    """AWS_ENDPOINT_URL set to a `closed_endpoint` for the whole test; yields that URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed_endpoint)
    return closed_endpoint


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """The one local Ray of the test session (4 logical CPUs on 127.0.0.1, its dashboard on 127.0.0.1),
    serving through the ingress `busnet serve` takes by default (HAProxy on Linux). That ingress's
    environment goes to Ray's processes only: this process's own is restored after the start, so the
    commands a test starts in a subprocess choose theirs (and their own HAProxy ports) as a user's would."""
    import ray

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from jobs.runtime import init_ray
    from serve.ingress import use_ingress

    before = dict(os.environ)
    use_ingress()
    init_ray(num_cpus=4, object_store_memory=500_000_000)
    os.environ.clear()
    os.environ.update(before)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> str:
    """Local URI of a small ingested synthetic dataset [ingest]: 40 images of 120-200 px with masks,
    16 cases, train/val/test by case (0.1 val, 0.2 test), 5 folds, seed 0."""
    from jobs.data.ingest import ingest
    from jobs.data.synth import generate

    root = tmp_path_factory.mktemp("synthetic-dataset")
    generate(root / "raw", 40, seed=0, min_size=120, max_size=200)
    ingest({"synthetic": root / "raw"}, str(root / "dataset"), val=0.1, test=0.2, folds=5, seed=0, progress=False)
    return str(root / "dataset")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread: on a shared 2-core machine more threads only contend."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
