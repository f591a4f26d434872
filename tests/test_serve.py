"""The Ray Serve application over real HTTP on 127.0.0.1: answers, batching, bad input, the client,
and the model swap through user_config as `serve deploy` / KubeRay apply it.

One Serve instance for the module: the app from `build_app` (as `busnet serve` runs it) at `/`, and
for the swap test the app from serve/config.yaml (as a RayService runs it) at `/swap`.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import yaml
from PIL import Image

from jobs.cli import main
from jobs.runtime import free_port
from models import build_model, load_checkpoint, save_checkpoint
from models.preprocess import Preprocessing, decode_image, preprocess_image, restore_mask
from tests.dicom_files import KINDS, multi_frame, noise, texts_of, unsupported

CONFIG = Path(__file__).resolve().parents[1] / "serve" / "config.yaml"
MAX_BYTES = 1_000_000
MAX_PIXELS = 4_000_000


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


GOOD = encode(np.random.default_rng(0).integers(0, 255, (90, 120), dtype=np.uint8))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("serve-ckpt")
    torch.manual_seed(1)
    first = save_checkpoint(
        build_model("tiny"),
        root / "a",
        threshold=0.45,
        metrics={"val_auc": 0.61},
        lineage={"trial_id": "test-a", "dataset": {"uri": "/data/hospital/scans", "content_hash": "abc"}},
    )
    second = save_checkpoint(build_model("tiny", input_size=128), root / "b", threshold=0.5)
    return {"a": str(first), "b": str(second)}


@pytest.fixture(scope="module")
def url(ray_local, checkpoints) -> str:
    from serve.app import build_app
    from serve.launch import start_app, stop_app

    app = build_app(
        checkpoints["a"], max_batch_size=8, batch_wait_ms=30, max_image_bytes=MAX_BYTES, max_image_pixels=MAX_PIXELS
    )
    yield start_app(app, port=free_port())
    stop_app()


def post_raw(url: str, data: bytes, content_type: str | None = "image/png", **kw) -> requests.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.post(f"{url}/v1/predict", data=data, headers=headers, timeout=60, **kw)


@functools.cache
def loaded(checkpoint: str) -> tuple[torch.nn.Module, dict]:
    return load_checkpoint(checkpoint)  # once per checkpoint: ~2 s each on a busy 2-core machine


def expected_probability(checkpoint: str, data: bytes) -> tuple[float, np.ndarray]:
    """The model's own forward pass on the same preprocessed input, outside Serve."""
    model, config = loaded(checkpoint)
    image = decode_image(data)
    x = torch.from_numpy(preprocess_image(image, Preprocessing.from_dict(config["preprocessing"])))[None]
    with torch.no_grad():
        out = model(x)
    mask = restore_mask(torch.sigmoid(out["mask_logits"])[0, 0].numpy(), *image.shape[:2])
    return torch.sigmoid(out["logits"]).item(), mask


def check_answer(answer: dict, checkpoint: str, data: bytes) -> None:
    probability, mask = expected_probability(checkpoint, data)
    assert answer["malignant_probability"] == pytest.approx(probability, abs=1e-5)
    assert answer["label"] == ("malignant" if probability >= answer["threshold"] else "benign")
    served = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"]))))
    assert served.shape == mask.shape  # the input's own size
    assert np.mean(served != mask) < 1e-3  # equal up to pixels that sit on the threshold
    assert answer["lesion"]["area_px"] == int(np.count_nonzero(served))
    assert set(answer["model"]) >= {"name", "version", "sha256"} and "checkpoint" not in answer["model"]


def test_health_model_and_docs(url, checkpoints):
    health = requests.get(f"{url}/v1/health", timeout=30).json()
    assert health["status"] == "ok" and health["last_load_error"] is None
    info = requests.get(f"{url}/v1/model", timeout=30).json()
    assert info["model"]["sha256"] == load_checkpoint(checkpoints["a"])[1]["weights_sha256"]
    assert info["config"]["threshold"] == 0.45 and info["config"]["model"]["preset"] == "tiny"
    assert info["metrics"] == {"val_auc": 0.61} and info["lineage"]["trial_id"] == "test-a"
    assert info["lineage"]["dataset"] == {"uri": "<path>", "content_hash": "abc"}
    assert info["data"] == {"sources": {}, "content_hash": "abc", "splits": {}, "synthetic_only": False}
    for text in (json.dumps(health), json.dumps(info)):  # no local paths, no storage locations
        assert checkpoints["a"] not in text and "/data/hospital" not in text and "/tmp" not in text
        assert "checkpoint" not in text and "user_config" not in text
    assert info["serving"]["max_batch_size"] == 8 and info["serving"]["torch_threads"] >= 1
    assert info["serving"]["ingress"] == "haproxy"  # the session's Ray serves as `busnet serve` does by default
    assert requests.get(f"{url}/-/healthz", timeout=30).status_code == 200  # what KubeRay's probes ask
    spec = requests.get(f"{url}/openapi.json", timeout=30).json()
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"image/png", "application/dicom", "multipart/form-data"} <= set(body)
    assert [p["name"] for p in spec["paths"]["/v1/predict"]["post"]["parameters"]] == ["frame"]
    assert requests.get(f"{url}/docs", timeout=30).status_code == 404  # no CDN page: /openapi.json is the doc


def test_every_answer_carries_the_security_headers(url):
    """Before: no Content-Security-Policy, X-Frame-Options or nosniff on any page, the viewer's included."""
    answers = [
        requests.get(f"{url}/", timeout=30),
        requests.get(f"{url}/viewer/viewer.js", timeout=30),
        requests.get(f"{url}/v1/health", timeout=30),
        requests.get(f"{url}/nothing-here", timeout=30),
        post_raw(url, GOOD),
        post_raw(url, b"not an image"),
    ]
    for answer in answers:
        assert answer.headers["X-Frame-Options"] == "DENY" and answer.headers["X-Content-Type-Options"] == "nosniff"
        policy = answer.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy


def test_busnet_serve_sets_a_request_timeout(url):
    """start_app (busnet serve, the demo, bench) gives Serve's proxy the timeout serve/config.yaml has."""
    from ray.serve.context import _get_global_client

    from serve.settings import REQUEST_TIMEOUT_S

    assert _get_global_client().http_config.request_timeout_s == REQUEST_TIMEOUT_S


def test_real_busi_images_raw_and_multipart(url, checkpoints, busi_sample):
    images = sorted(busi_sample.glob("*/*).png"))[:2] + sorted(busi_sample.glob("malignant/*).png"))[:1]
    assert images
    for path in images:
        data = path.read_bytes()
        raw = post_raw(url, data)
        form = requests.post(f"{url}/v1/predict", files={"file": (path.name, data, "image/png")}, timeout=60)
        assert raw.status_code == form.status_code == 200, (raw.text, form.text)
        assert raw.json() == form.json()
        check_answer(raw.json(), checkpoints["a"], data)


@pytest.mark.parametrize(
    "name, data, content_type",
    [
        ("gray 16-bit PNG", encode((np.arange(50 * 70).reshape(50, 70) * 17 % 65535).astype(np.uint16)), "image/png"),
        (
            "RGB JPEG",
            encode(np.random.default_rng(2).integers(0, 255, (64, 80, 3), dtype=np.uint8), "JPEG"),
            "image/jpeg",
        ),
        (
            "RGBA PNG, tall",
            encode(np.random.default_rng(3).integers(0, 255, (130, 40, 4), dtype=np.uint8)),
            "image/png",
        ),
        ("gray BMP", encode(np.random.default_rng(4).integers(0, 255, (33, 47), dtype=np.uint8), "BMP"), "image/bmp"),
    ],
)
def test_synthetic_formats(url, checkpoints, name, data, content_type):
    response = post_raw(url, data, content_type)
    assert response.status_code == 200, response.text
    check_answer(response.json(), checkpoints["a"], data)


def test_concurrent_requests_run_in_batches_and_each_gets_its_own_answer(url, checkpoints):
    """16 clients, 32 different images: batches of more than one form, and each answer equals the
    model's own forward pass on that image (nothing mixed up or changed by batching)."""
    rng = np.random.default_rng(5)
    images = [encode(rng.integers(0, 255, (60 + i, 90 - i), dtype=np.uint8)) for i in range(32)]
    before = requests.get(f"{url}/v1/model", timeout=30).json()["stats"]
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda data: post_raw(url, data), images))
    after = requests.get(f"{url}/v1/model", timeout=30).json()["stats"]
    assert [r.status_code for r in responses] == [200] * 32
    served, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert served == 32 and served / batches > 1
    assert max(int(size) for size in after["batch_sizes"]) > 1
    for data, response in zip(images, responses):
        check_answer(response.json(), checkpoints["a"], data)


def _chunked(data: bytes):
    for start in range(0, len(data), 64_000):
        yield data[start : start + 64_000]


BOMB = encode(np.zeros((2500, 2500), np.uint8))  # 6.25 MP in a few kB
THIN = encode(np.zeros((4, 20_000), np.uint8))  # 200 bytes; padded to its square it was 1.6 GB of floats
THREAD = encode(np.zeros((1, 2_000_000), np.uint8))  # under the pixel cap; it used to answer 500 to its batch
MANY_PARTS = (  # 0.9 MB of tiny parts, then the image: the old parser took ~2 s on the event loop
    b'--B\r\nContent-Disposition: form-data; name="n"\r\n\r\nx\r\n' * 18_000
    + b'--B\r\nContent-Disposition: form-data; name="file"\r\nContent-Type: image/png\r\n\r\n'
    + GOOD
    + b"\r\n--B--\r\n"
)
BAD_INPUTS = {
    "empty body": (lambda url: post_raw(url, b""), 400),
    "not an image": (lambda url: post_raw(url, b"hello, I am text" * 10), 415),
    "truncated PNG": (lambda url: post_raw(url, GOOD[: len(GOOD) // 2]), 400),
    "GIF": (lambda url: post_raw(url, encode(np.zeros((8, 8), np.uint8), "GIF"), "image/gif"), 415),
    "text/plain": (lambda url: post_raw(url, GOOD, "text/plain"), 415),
    "no content type": (lambda url: post_raw(url, GOOD, None), 415),
    "too many bytes": (lambda url: post_raw(url, b"\0" * (MAX_BYTES + 1)), 413),
    "too many bytes, chunked": (lambda url: post_raw(url, _chunked(b"\0" * (3 * MAX_BYTES))), 413),
    "too many pixels (bomb)": (lambda url: post_raw(url, BOMB), 413),
    "wrong multipart field": (
        lambda url: requests.post(f"{url}/v1/predict", files={"image": ("a.png", GOOD, "image/png")}, timeout=60),
        400,
    ),
    "malformed multipart": (lambda url: post_raw(url, b"--nope\r\n", "multipart/form-data; boundary=x"), 400),
    "long thin image (4 x 20000)": (lambda url: post_raw(url, THIN), 413),
    "1 x 2,000,000 image": (lambda url: post_raw(url, THREAD), 413),
    "many tiny multipart parts": (lambda url: post_raw(url, MANY_PARTS, "multipart/form-data; boundary=B"), 400),
    # each of these four was a 500 and an ERROR line (int('²') raised) or is now refused as strictly
    "frame=² (a digit to str.isdigit)": (lambda url: post_raw(url, GOOD, params={"frame": "²"}), 400),
    "a 5,000-digit frame": (lambda url: post_raw(url, GOOD, params={"frame": "9" * 5000}), 400),
    "an unknown query parameter": (lambda url: post_raw(url, GOOD, params={"frames": "1"}), 400),
    "frame twice": (lambda url: post_raw(url, GOOD, params=[("frame", "1"), ("frame", "2")]), 400),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_json_error_and_the_replica_keeps_serving(url, case):
    send, status = BAD_INPUTS[case]
    response = send(url)
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and body["error"] and "Traceback" not in response.text
    assert post_raw(url, GOOD).status_code == 200


def test_a_hostile_image_does_not_fail_its_batch_mates(url):
    """Send a 1 x 2,000,000 image among good ones at once: only it is refused."""
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda data: post_raw(url, data), [GOOD] * 3 + [THREAD] + [GOOD] * 4))
    assert [r.status_code for r in responses] == [200] * 3 + [413] + [200] * 4, [r.text[:200] for r in responses]


def test_predict_command_prints_lines_and_writes_overlays(url, busi_sample, tmp_path, capsys):
    images = sorted(busi_sample.glob("benign/*).png"))[:2]
    junk = tmp_path / "notes.png"
    junk.write_text("not an image")
    code = main(["predict", "--url", url, *map(str, images), str(junk), "--overlay", str(tmp_path / "ov")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 1 and len(lines) == 3
    for path, line in zip(images, lines):
        assert line.startswith(f"{path}: ") and "p(malignant)=" in line and " px" in line
        overlay = Image.open(tmp_path / "ov" / f"{path.stem}.overlay.png")
        assert overlay.size == Image.open(path).size and overlay.mode == "RGB"
    assert lines[2].startswith(f"{junk}: error: HTTP 415")
    assert main(["predict", "--url", url, str(images[0]), "--json"]) == 0
    assert '"malignant_probability"' in capsys.readouterr().out


@pytest.mark.parametrize("kind", list(KINDS))
def test_dicom_of_each_photometric_interpretation(url, checkpoints, kind):
    data = KINDS[kind][0](70)[0]
    response = post_raw(url, data, "application/dicom")
    assert response.status_code == 200, response.text
    check_answer(response.json(), checkpoints["a"], data)
    assert not [text for text in texts_of(data) if text in response.text]


def test_dicom_multi_frame_refusals_and_no_patient_data_out(url, checkpoints, ray_local):
    """A chosen frame (default the first) is predicted as its own image; bad frames and an undecodable
    transfer syntax are clear errors; no header text reaches an answer or the replica's log."""
    frames = np.stack([noise(seed, 3) for seed in (80, 81, 82)])
    data, video = multi_frame("RGB", frames), unsupported(83)
    answers = []
    for number in (None, 2, 3):
        response = post_raw(url, data, "application/dicom", params={"frame": number})
        assert response.status_code == 200, response.text
        check_answer(response.json(), checkpoints["a"], encode(frames[(number or 1) - 1]))
        answers.append(response.text)
    form = requests.post(
        f"{url}/v1/predict?frame=2", files={"file": ("clip.dcm", data, "application/dicom")}, timeout=60
    )
    assert form.json() == json.loads(answers[1])
    refused = {
        "frame=4": (post_raw(url, data, "application/dicom", params={"frame": 4}), 400, "has 3 frames (1-3)"),
        "frame=0": (post_raw(url, data, "application/dicom", params={"frame": 0}), 400, "expected a frame number"),
        "H.264": (post_raw(url, video, "application/dicom"), 415, "unsupported DICOM transfer syntax: MPEG-4 AVC"),
        "frame of a PNG": (post_raw(url, GOOD, params={"frame": 2}), 400, "only a DICOM file"),
    }
    for name, (response, status, text) in refused.items():
        assert response.status_code == status and text in response.json()["error"], (name, response.text)
        answers.append(response.text)
    secrets = sorted({*texts_of(data), *texts_of(video)})
    assert not [s for s in secrets if any(s in answer for answer in answers)]
    logs = Path(ray_local._private.worker._global_node.get_logs_dir_path()) / "serve"
    replica_log = lambda: "".join(p.read_text(errors="replace") for p in logs.glob("replica_*.log"))  # noqa: E731
    wait_for(lambda: "unsupported DICOM transfer syntax" in replica_log(), timeout_s=30)  # the logs are these
    assert not [s for s in secrets if s in replica_log()]


def swap_config(checkpoint: str, **user_config) -> dict:
    """serve/config.yaml as a RayService would apply it, sized for the test machine."""
    config = yaml.safe_load(CONFIG.read_text())
    app = config["applications"][0]
    app.update(name="busnet-swap", route_prefix="/swap")
    deployment = app["deployments"][0]
    deployment.pop("autoscaling_config")
    deployment.update(num_replicas=1, ray_actor_options={"num_cpus": 1})
    deployment["user_config"].update(checkpoint=checkpoint, **user_config)
    return config


def apply(config: dict) -> None:
    """What `serve deploy` and KubeRay do (the REST API calls the controller's apply_config)."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))


def wait_for(check, timeout_s: float = 300):
    """Poll `check` until it returns something truthy; a request that times out counts as not yet."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except requests.Timeout:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s")


def test_model_swap_through_user_config_drops_nothing(url, checkpoints, tmp_path):
    from ray import serve

    swap = f"{url}/swap"
    apply(swap_config(checkpoints["a"]))
    wait_for(lambda: requests.get(f"{swap}/v1/health", timeout=30).ok)
    sha = {k: load_checkpoint(v)[1]["weights_sha256"][:12] for k, v in checkpoints.items()}
    replica = requests.get(f"{swap}/v1/model", timeout=30).json()["serving"]["replica"]
    seen, stop = Counter(), threading.Event()

    def load() -> None:
        for _ in range(2000):
            if stop.is_set():
                return
            try:
                response = post_raw(swap, GOOD)
            except requests.RequestException as exc:  # counted: the assert below shows it
                seen[type(exc).__name__] += 1
                continue
            seen[response.json()["model"]["version"] if response.ok else response.status_code] += 1

    clients = [threading.Thread(target=load) for _ in range(3)]
    for client in clients:
        client.start()
    try:
        wait_for(lambda: seen[sha["a"]] >= 3)
        apply(swap_config(checkpoints["b"]))  # another input size, even
        wait_for(lambda: seen[sha["b"]] >= 3)
        broken = tmp_path / "broken"
        broken.mkdir()
        apply(swap_config(str(broken)))
        health = wait_for(lambda: load_error(swap, "broken") or load_error(swap, "<path>"))
        count_before = seen[sha["b"]]
        wait_for(lambda: seen[sha["b"]] >= count_before + 3)
        # a string where a number belongs (it used to make every request a 500), with a valid batch
        # size beside it: the whole config is refused, the batch size included
        apply(swap_config(checkpoints["b"], max_image_bytes="20000000", max_batch_size=2))
        typed = wait_for(lambda: load_error(swap, "max_image_bytes must be an integer"))
        count_before = seen[sha["b"]]
        wait_for(lambda: seen[sha["b"]] >= count_before + 3)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=60)
    assert set(seen) == {sha["a"], sha["b"]}, seen  # every request answered, by one model or the other
    assert health["model"]["version"] == sha["b"] and typed["model"]["version"] == sha["b"]
    assert str(broken) not in json.dumps(health) and set(health["last_load_error"]) == {"error", "at"}
    info = requests.get(f"{swap}/v1/model", timeout=30).json()
    assert info["serving"]["replica"] == replica  # swapped in place, not by restarting the replica
    assert info["serving"]["max_batch_size"] == 16 and info["serving"]["max_image_bytes"] == 20_000_000
    assert "max_image_bytes" in info["last_load_error"]["error"]
    serve.delete("busnet-swap")


def load_error(url: str, words: str) -> dict | None:
    """/v1/health when its last_load_error mentions `words`."""
    health = requests.get(f"{url}/v1/health", timeout=30).json()
    return health if words in ((health["last_load_error"] or {}).get("error") or "") else None
