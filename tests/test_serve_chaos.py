"""Faults on a live Serve app over 127.0.0.1: its replica process killed under load, and a soak of
good and hostile requests with the replica's memory watched from /proc.

One app for the module (a fresh tiny checkpoint, default image limits) on the session's Ray.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from jobs.runtime import free_port
from models import build_model, save_checkpoint

pytestmark = pytest.mark.slow
MAX_BYTES = 2_000_000
CLIENT_TIMEOUT_S = 90  # above Serve's request timeout (60 s): a client timeout means something hung


def encode(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


rng = np.random.default_rng(0)
GOOD = encode(rng.integers(0, 255, (90, 120), dtype=np.uint8))
LARGE_16BIT = encode(np.add.outer(np.arange(1100) * 20, np.arange(1500) * 13).astype(np.uint16))  # legal, costly
PNG = {"Content-Type": "image/png"}


def multipart(*parts: tuple[bytes, bytes]) -> tuple[bytes, dict]:
    body = b"".join(b'--B\r\nContent-Disposition: form-data; name="' + n + b'"\r\n\r\n' + d + b"\r\n" for n, d in parts)
    return body + b"--B--\r\n", {"Content-Type": "multipart/form-data; boundary=B"}


def _chunked(data: bytes):
    for start in range(0, len(data), 64_000):
        yield data[start : start + 64_000]


# (name, body, headers, expected status); bodies that are generators are made per request
REQUESTS = [
    ("good", GOOD, PNG, 200),
    ("good multipart", *multipart((b"file", GOOD)), 200),
    ("large 16-bit", LARGE_16BIT, PNG, 200),
    ("4 x 20000", encode(np.zeros((4, 20_000), np.uint8)), PNG, 413),
    ("1 x 2,000,000", encode(np.zeros((1, 2_000_000), np.uint8)), PNG, 413),
    ("bomb", encode(np.zeros((3000, 3000), np.uint8)), PNG, 413),
    ("truncated", GOOD[: len(GOOD) // 2], PNG, 400),
    ("text", b"I am not an image" * 50, PNG, 415),
    ("many parts", *multipart(*[(b"n", b"x")] * 30_000, (b"file", GOOD)), 400),  # 1.5 MB
    ("long part name", *multipart((b"\x1b[2J" + b"A" * 100_000, GOOD)), 400),
    ("chunked, too long", None, PNG, 413),
]


def send(session: requests.Session, url: str, case: tuple) -> int:
    name, body, headers, _ = case
    data = _chunked(b"\0" * (2 * MAX_BYTES)) if body is None else body
    return session.post(f"{url}/v1/predict", data=data, headers=headers, timeout=CLIENT_TIMEOUT_S).status_code


@pytest.fixture(scope="module")
def url(ray_local, tmp_path_factory):
    from serve.app import build_app
    from serve.launch import start_app, stop_app

    checkpoint = save_checkpoint(build_model("tiny"), tmp_path_factory.mktemp("chaos") / "ckpt")
    app = build_app(str(checkpoint), max_batch_size=8, batch_wait_ms=10, max_image_bytes=MAX_BYTES)
    yield start_app(app, port=free_port())
    stop_app()


def replica_pid() -> int | None:
    """The process id of the app's one live replica (Ray's state API), None while there is none."""
    import ray
    from ray.util.state import list_actors

    actors = list_actors(
        address=ray.get_runtime_context().gcs_address,  # this session's Ray, whatever else runs here
        filters=[("state", "=", "ALIVE")],
        detail=True,
        raise_on_missing_output=False,
    )
    pids = [actor.pid for actor in actors if actor.class_name.startswith("ServeReplica:busnet:")]
    assert len(pids) <= 1, pids
    return pids[0] if pids else None


def memory_mb(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of a process, in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for pid {pid}")


def wait_for(check, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s")


def test_killing_the_replica_under_load_fails_requests_for_a_while_then_they_all_succeed(url):
    pid = wait_for(replica_pid, 120)
    outcomes: list[tuple[float, float, int | str]] = []  # (sent, answered, status or error)
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    status = send(session, url, REQUESTS[0])
                except requests.RequestException as exc:  # recorded; a Timeout fails the test below
                    status = type(exc).__name__
                    time.sleep(0.05)
                outcomes.append((sent, time.monotonic(), status))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        wait_for(lambda: sum(status == 200 for *_, status in outcomes) >= 10, 120)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        new_pid = wait_for(lambda: (new := replica_pid()) not in (None, pid) and new, 300)
        wait_for(lambda: [s for sent, _, s in outcomes if sent > killed_at][-20:] == [200] * 20, 300)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=CLIENT_TIMEOUT_S + 10)
    assert not any(thread.is_alive() for thread in clients), "a client hangs"
    after = [(done - killed_at, done - sent, status) for sent, done, status in outcomes if done > killed_at]
    failures = [(round(t, 1), status) for t, _, status in after if status != 200]
    slowest = max(latency for _, latency, _ in after)
    print(f"replica {pid} killed, {new_pid} serves: {len(after)} answers since, slowest {slowest:.1f} s; {failures=}")
    assert not any("Timeout" in str(status) for *_, status in after), failures  # answered, not hung
    last_failure = max((t for t, _, status in after if status != 200), default=0.0)  # unrounded
    assert all(status == 200 for t, _, status in after if t > last_failure)  # one window, then all good


def test_soak_of_good_and_hostile_requests_keeps_the_replica_memory_flat(url):
    """2,000 requests, a quarter of them good: each gets its own status; RSS and its peak stay flat."""
    pid = wait_for(replica_pid, 300)

    def run(count: int) -> Counter:
        local = threading.local()

        def one(index: int) -> tuple[str, int]:
            local.session = getattr(local, "session", None) or requests.Session()
            case = REQUESTS[index % len(REQUESTS)]
            return case[0], send(local.session, url, case) - case[3]

        with ThreadPoolExecutor(8) as pool:
            return Counter(pool.map(one, range(count)))

    warm = run(2 * len(REQUESTS))
    base = memory_mb(pid, "VmRSS")
    results = run(2000)
    peak, end = memory_mb(pid, "VmHWM"), memory_mb(pid, "VmRSS")
    print(f"replica RSS {base:.0f} MB after warm-up, {end:.0f} MB after 2,000 requests, peak {peak:.0f} MB")
    unexpected = {key: n for key, n in (warm + results).items() if key[1] != 0}
    assert not unexpected, unexpected  # (case, status - expected status): every request got its own answer
    assert replica_pid() == pid  # the replica never died
    assert end - base < 200 and peak - base < 300, (base, end, peak)  # measured +18..71 MB
