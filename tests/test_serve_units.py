"""serve/ without Ray: request body rules, settings, the predictor path, the client, the Serve config file."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import yaml
from PIL import Image

from jobs.cli import main
from jobs.errors import BusnetError
from models import build_model, load_checkpoint, save_checkpoint
from models.preprocess import decode_image, preprocess_image
from serve.batcher import Batcher
from serve.body import BadRequest, read_image_bytes
from serve.client import decode_mask_png, overlay, predict_endpoint, summary
from serve.predictor import (
    PreparedImage,
    answer,
    answer_batch,
    forward,
    forward_batch,
    lesion_of,
    load_model,
    prepare,
    resolve_dtype,
)
from serve.public import excerpt, redact_paths
from serve.settings import DEFAULT_BATCH_WAIT_S, DEFAULT_MAX_BATCH_SIZE, REQUEST_TIMEOUT_S, ServeSettings

CONFIG = Path(__file__).resolve().parents[1] / "serve" / "config.yaml"


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


async def _chunks(data: bytes, size: int = 1000):
    for start in range(0, len(data), size):
        yield data[start : start + size]


def read(content_type, body: bytes, max_bytes: int = 10_000, declared: str | None = None) -> bytes:
    length = declared if declared is not None else str(len(body))
    return asyncio.run(read_image_bytes(content_type, length, _chunks(body), max_bytes))


def multipart(fields: dict[str, bytes]) -> tuple[str, bytes]:
    prepared = requests.Request(
        "POST", "http://x/", files={name: (f"{name}.png", data, "image/png") for name, data in fields.items()}
    ).prepare()
    return prepared.headers["Content-Type"], prepared.body


# ---------- request bodies ----------


def test_raw_image_body_is_returned_as_sent():
    assert read("image/png", b"\x89PNG-bytes") == b"\x89PNG-bytes"
    assert read("image/jpeg; charset=binary", b"abc") == b"abc"
    assert read("application/dicom", b"DICM-bytes") == b"DICM-bytes"  # models.preprocess decides


def test_multipart_file_field_is_extracted_byte_exact():
    payload = bytes(range(256)) * 20 + b"\r\n--\r\n\n"
    content_type, body = multipart({"other": b"x", "file": payload})
    assert read(content_type, body, max_bytes=100_000) == payload


@pytest.mark.parametrize(
    "content_type, body, declared, status, words",
    [
        ("text/plain", b"abc", None, 415, "unsupported content type 'text/plain'"),
        (None, b"abc", None, 415, "(none)"),
        ("application/octet-stream", b"abc", None, 415, "image/"),
        ("image/png", b"", None, 400, "empty"),
        ("image/png", b"x" * 20_001, None, 413, "exceeds the limit"),
        ("image/png", b"x" * 50, "20001", 413, "20001 bytes exceeds"),  # declared size alone is enough
        ("image/png", b"x" * 20_001, "", 413, "exceeds the limit"),  # no Content-Length: counted as it streams
        ("multipart/form-data; boundary=zzz", b"not multipart at all", None, 400, "malformed multipart"),
        ("multipart/form-data; boundary=zzz", b"", None, 400, "empty multipart"),
    ],
)
def test_bad_bodies_get_a_status_and_a_reason(content_type, body, declared, status, words):
    with pytest.raises(BadRequest) as info:
        read(content_type, body, max_bytes=20_000, declared=declared)
    assert info.value.status == status
    assert words in str(info.value)


def test_multipart_without_the_file_field_names_what_it_got():
    content_type, body = multipart({"image": b"abc"})
    with pytest.raises(BadRequest) as info:
        read(content_type, body)
    assert info.value.status == 400 and "no field 'file'" in str(info.value) and "image" in str(info.value)


def many_parts(count: int, name: bytes = b"n") -> bytes:
    part = b'--B\r\nContent-Disposition: form-data; name="' + name + b'"\r\n\r\nx\r\n'
    return part * count + b'--B\r\nContent-Disposition: form-data; name="file"\r\n\r\nIMG\r\n--B--\r\n'


def test_a_body_of_many_tiny_parts_is_refused_at_the_part_cap():
    """4 MB of tiny parts kept the old parser (email, on the event loop) busy for ~9 s."""
    body = many_parts(100_000)
    assert len(body) > 4_000_000
    with pytest.raises(BadRequest, match="more than 16 parts") as info:  # pinned: a test reading the cap
        read("multipart/form-data; boundary=B", body, max_bytes=len(body))  # from the code passed it x10
    assert info.value.status == 400
    assert read("multipart/form-data; boundary=B", many_parts(15)) == b"IMG"  # 15 + the image: 16 parts
    with pytest.raises(BadRequest, match="more than 16 parts"):
        read("multipart/form-data; boundary=B", many_parts(16))


def test_multipart_is_parsed_off_the_event_loop(monkeypatch):
    import serve.body

    threads = []
    parse = serve.body.multipart_field
    monkeypatch.setattr(
        serve.body, "multipart_field", lambda *a: threads.append(threading.current_thread()) or parse(*a)
    )
    content_type, body = multipart({"file": b"abc"})
    assert read(content_type, body) == b"abc"
    assert threads and threading.main_thread() not in threads  # asyncio.run's loop runs in the main thread


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("multipart/form-data; boundary=B", many_parts(1, b"\x1b[31m" + b"A" * 5000 + b"\x07")),
        ("image\x1b]/" + "x" * 5000, b"abc"),
    ],
)
def test_errors_quote_client_text_only_as_a_short_printable_excerpt(content_type, body):
    if b'name="file"' in body:
        body = body.replace(b'name="file"', b'name="nope"')
    with pytest.raises(BadRequest) as info:
        read(content_type, body)
    message = str(info.value)
    assert len(message) < 250 and "A" * 100 not in message and "x" * 100 not in message
    assert message.isprintable() and "\x1b" not in message and "\x07" not in message


# ---------- settings ----------


def test_settings_validate_by_name_and_value():
    settings = ServeSettings.from_user_config({"checkpoint": "s3://b/m", "max_batch_size": 4})
    assert settings.max_batch_size == 4 and settings.to_user_config()["checkpoint"] == "s3://b/m"
    with pytest.raises(ValueError, match="unknown user_config keys \\['max_batch'\\]"):
        ServeSettings.from_user_config({"checkpoint": "x", "max_batch": 4})
    with pytest.raises(ValueError, match="no checkpoint"):
        ServeSettings.from_user_config({})
    with pytest.raises(ValueError, match="max_batch_size"):
        ServeSettings.from_user_config({"checkpoint": "x", "max_batch_size": 0})


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("max_image_bytes", "20000000", "max_image_bytes must be an integer, got str"),
        ("max_batch_size", True, "must be an integer, got bool"),
        ("max_batch_size", 8.0, "must be an integer, got float"),
        ("max_batch_size", 100_000, "max_batch_size must be in"),
        ("batch_wait_timeout_s", "0.01", "must be a number, got str"),
        ("batch_wait_timeout_s", float("nan"), "must be in"),
        ("max_image_pixels", 10**12, "max_image_pixels must be in"),
        ("max_image_bytes", 10**10, "max_image_bytes must be in"),
        ("precision", "int8", "precision must be one of"),
        ("checkpoint", ["s3://a"], "checkpoint must be a string"),
    ],
)
def test_settings_check_types_and_upper_bounds(key, value, words):
    """A string `max_image_bytes` used to pass here and turn every request into a 500."""
    with pytest.raises(ValueError, match=words):
        ServeSettings.from_user_config({"checkpoint": "s3://b/m", key: value})


def test_public_text_has_no_paths_and_client_text_is_cut():
    assert redact_paths({"a": ["see /home/me/x.ckpt", "s3://bucket/runs/best"], "n": 3, "t": "tiny"}) == {
        "a": ["see <path>", "<path>"],
        "n": 3,
        "t": "tiny",
    }
    assert redact_paths("No such file: '/tmp/x/config.json'") == "No such file: '<path>'"
    assert excerpt("ab\ncd" + "z" * 100, 10) == repr("ab?cdzzzzz...")


def test_half_precision_needs_a_gpu():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="needs a GPU"):
        resolve_dtype("bf16", torch.device("cpu"))
    with pytest.raises(ValueError, match="precision must be"):
        resolve_dtype("int8", torch.device("cpu"))


# ---------- predictor ----------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("serve-units")
    torch.manual_seed(0)
    made = {
        "tiny64": build_model("tiny"),
        "tiny128": build_model("tiny", input_size=128),
        "swin": build_model("tiny", "swin"),
    }
    return {name: str(save_checkpoint(model, root / name, threshold=0.4)) for name, model in made.items()}


def test_lesion_area_and_box():
    mask = np.zeros((40, 30), np.uint8)
    mask[5:9, 10:20] = 255
    assert lesion_of(mask) == {"area_px": 40, "bbox": [10, 5, 20, 9]}
    assert lesion_of(np.zeros((4, 4), np.uint8)) == {"area_px": 0, "bbox": None}


def test_batch_answers_match_single_forward_and_keep_each_request_on_its_model(checkpoints):
    small = load_model(checkpoints["tiny64"], load_checkpoint, torch.device("cpu"))
    large = load_model(checkpoints["tiny128"], load_checkpoint, torch.device("cpu"))
    rng = np.random.default_rng(1)
    images = [
        png_bytes(rng.integers(0, 255, (70, 50), dtype=np.uint8)),
        png_bytes(rng.integers(0, 255, (33, 90, 3), dtype=np.uint8)),
    ]
    items = [(small, prepare(images[0], small)), (large, prepare(images[1], large)), (small, prepare(images[1], small))]
    answers = answer_batch(items)
    model, _ = load_checkpoint(checkpoints["tiny128"])
    x = torch.from_numpy(preprocess_image(decode_image(images[1]), large.preprocessing))[None]
    with torch.no_grad():
        expected = torch.sigmoid(model(x)["logits"]).item()
    assert answers[1]["malignant_probability"] == pytest.approx(expected, abs=1e-5)
    assert answers[1]["model"]["sha256"] == large.info["sha256"] != answers[0]["model"]["sha256"]
    for (_, image), got in zip(items, answers):
        mask = decode_mask_png(got["mask_png"])
        assert mask.shape == (image.height, image.width)
        assert got["lesion"]["area_px"] == int(mask.sum())
        assert got["threshold"] == 0.4
        assert got["label"] == ("malignant" if got["malignant_probability"] >= 0.4 else "benign")


def test_one_bad_item_fails_alone_and_its_batch_mates_get_their_answers(checkpoints):
    """The 1 x 2,000,000 image used to raise MemoryError inside the batch: a 500 for every request in it."""
    loaded = load_model(checkpoints["tiny64"], load_checkpoint, torch.device("cpu"))
    good = prepare(png_bytes(np.full((20, 30), 90, np.uint8)), loaded)
    thin = PreparedImage(good.tensor, 1, 2_000_000)  # what the old size checks let through
    broken = PreparedImage(np.zeros((3, 65, 65), np.float32), 20, 30)  # cannot be stacked with the others
    results = answer_batch([(loaded, good), (loaded, thin), (loaded, broken), (loaded, good)])
    assert isinstance(results[2], Exception)
    answers = [results[i] for i in (0, 1, 3)]
    assert answers[0] == answers[2] and decode_mask_png(answers[0]["mask_png"]).shape == (20, 30)
    assert decode_mask_png(answers[1]["mask_png"]).shape == (1, 2_000_000)


# ---------- the replica's batcher ----------


def test_batcher_runs_what_is_queued_in_its_worker_thread_and_answers_each_item():
    """Nothing is being decoded, so no batch waits its 60 s: six queued items run as 4 + 2."""
    batches, threads = [], set()

    def run(items: list[int]) -> list:
        batches.append(items)
        threads.add(threading.current_thread().name)
        return [ValueError(f"item {i}") if i == 3 else i * 10 for i in items]

    async def scenario() -> list:
        batcher = Batcher(run, max_batch_size=4, wait_s=60)
        submitted = asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
        return await asyncio.wait_for(submitted, 30)

    results = asyncio.run(scenario())
    assert batches == [[0, 1, 2, 3], [4, 5]] and len(threads) == 1 and threads.pop().startswith("batch")
    assert results[:3] == [0, 10, 20] and str(results[3]) == "item 3" and results[4:] == [40, 50]


def test_a_batch_waits_for_requests_being_decoded_and_not_for_one_that_failed():
    batches = []

    async def scenario() -> list:
        batcher = Batcher(lambda items: batches.append(items) or items, max_batch_size=8, wait_s=60)

        async def decoded(item: int, fails: bool = False) -> int:
            with batcher.expecting():
                await asyncio.sleep(0.05)
                if fails:
                    raise BadRequest(400, "bad image")
            return await batcher.submit(item)

        requests_ = asyncio.gather(batcher.submit(0), decoded(1), decoded(2, fails=True), return_exceptions=True)
        return await asyncio.wait_for(requests_, 30)

    results = asyncio.run(scenario())
    assert batches == [[0, 1]] and results[:2] == [0, 1] and isinstance(results[2], BadRequest)


def test_swin_variant_answers_without_a_mask(checkpoints):
    loaded = load_model(checkpoints["swin"], load_checkpoint, torch.device("cpu"))
    image = prepare(png_bytes(np.full((20, 30), 90, np.uint8)), loaded)
    (outputs,) = forward_batch([(loaded, image)])
    got = answer(loaded, outputs, image)
    assert got["mask_png"] is None and got["lesion"] == {"area_px": None, "bbox": None}
    assert 0 <= got["malignant_probability"] <= 1
    assert "model without segmentation" in summary(got)


def test_building_a_model_while_another_one_serves_breaks_no_forward_pass(checkpoints):
    """Model builds trace with torch.fx, which patches nn.Module.__call__ process-wide (see predictor)."""
    serving = load_model(checkpoints["tiny64"], load_checkpoint, torch.device("cpu"))
    batch = np.zeros((2, 3, 64, 64), np.float32)
    errors, done = [], threading.Event()

    def serve_forever() -> None:
        for _ in range(10_000):
            if done.is_set():
                return
            try:
                forward(serving, batch)
            except Exception as exc:  # noqa: BLE001 - the test reports whatever broke
                errors.append(repr(exc))

    thread = threading.Thread(target=serve_forever)
    thread.start()
    try:
        for _ in range(3):
            load_model(checkpoints["tiny128"], load_checkpoint, torch.device("cpu"))
    finally:
        done.set()
        thread.join(timeout=60)
    assert errors == []


def test_a_checkpoint_in_s3_is_fetched_then_loaded(checkpoints, s3_bucket):
    from jobs.storage import publish_dir

    uri = f"{s3_bucket}/models/tiny"
    publish_dir(checkpoints["tiny64"], uri)
    loaded = load_model(uri, load_checkpoint, torch.device("cpu"))
    assert loaded.uri == uri and "checkpoint" not in loaded.info  # callers see no storage locations
    assert loaded.info["sha256"] == load_checkpoint(checkpoints["tiny64"])[1]["weights_sha256"]


# ---------- client ----------


def test_overlay_draws_the_contour_on_a_16_bit_image():
    image = png_bytes(np.arange(60 * 80, dtype=np.uint16).reshape(60, 80) * 13)
    mask = np.zeros((60, 80), np.uint8)
    mask[10:40, 20:60] = 255
    fake = {
        "label": "benign",
        "malignant_probability": 0.2,
        "threshold": 0.5,
        "mask_png": base64.b64encode(png_bytes(mask)).decode(),
        "lesion": lesion_of(mask),
    }
    pixels = np.asarray(overlay(image, fake))
    red = (pixels[..., 0] == 255) & (pixels[..., 1] == 40)
    assert pixels.shape == (60, 80, 3)
    assert red[10, 30] and red[39, 30] and red[25, 20]  # on the edge
    assert not red[25, 40] and not red[50, 5]  # not inside, not outside
    assert "lesion 1200 px  bbox [20, 10, 60, 40]" in summary(fake)


def test_predict_endpoint_accepts_root_or_full_url():
    assert predict_endpoint("http://h:1/") == "http://h:1/v1/predict"
    assert predict_endpoint("http://h:1/v1/predict") == "http://h:1/v1/predict"


def test_predict_against_nothing_is_one_clear_line(tmp_path, capsys, closed_endpoint):
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes(np.zeros((8, 8), np.uint8)))
    assert main(["predict", "--url", closed_endpoint, str(image)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach" in err[0] and "busnet serve" in err[0]


def test_serve_refuses_a_bad_checkpoint_before_starting_anything(tmp_path, capsys):
    assert main(["serve", "--checkpoint", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot load checkpoint" in err[0] and "missing" in err[0]


# ---------- the Serve config file ----------


def test_config_file_is_a_valid_serve_config_whose_import_path_builds():
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    from serve.app import DEPLOYMENT_NAME

    raw = yaml.safe_load(CONFIG.read_text())
    config = ServeDeploySchema.model_validate(raw)
    (app,) = config.applications
    module_name, attribute = app.import_path.split(":")
    builder = getattr(__import__(module_name, fromlist=[attribute]), attribute)
    assert isinstance(builder(app.args), Application)
    (deployment,) = app.deployments
    assert deployment.name == DEPLOYMENT_NAME  # else the overrides would not apply
    settings = ServeSettings.from_user_config(deployment.user_config)
    # The RayService serves with what `busnet serve` and `busnet bench serve` default to.
    assert (settings.max_batch_size, settings.batch_wait_timeout_s) == (DEFAULT_MAX_BATCH_SIZE, DEFAULT_BATCH_WAIT_S)
    assert deployment.max_ongoing_requests == 2 * settings.max_batch_size  # as serve.app.build_app
    assert config.http_options.request_timeout_s == REQUEST_TIMEOUT_S  # as `busnet serve` (serve.launch)
    assert deployment.autoscaling_config["max_replicas"] >= deployment.autoscaling_config["min_replicas"]


def test_an_ingress_that_cannot_apply_is_refused_and_auto_takes_what_runs(monkeypatch, ray_local):
    from serve.ingress import use_ingress

    before = dict(os.environ)
    # This process runs Ray (ray_local): its ingress stays, whatever Serve runs with, and only the other is refused.
    running = use_ingress("auto")
    assert running in ("proxy", "haproxy") and use_ingress(running) == running
    other = "proxy" if running == "haproxy" else "haproxy"
    with pytest.raises(BusnetError, match=f"this process already runs Ray, which serves with {running}"):
        use_ingress(other)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "1")
    with pytest.raises(BusnetError, match="a cluster's ingress comes from its own environment, which serves with h"):
        use_ingress("proxy")
    assert use_ingress("auto") == "haproxy"
    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY")
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(BusnetError, match="--ingress 'nginx': choose one of auto, haproxy, proxy"):
        use_ingress("nginx")
    assert dict(os.environ) == before


def test_auto_ingress_takes_haproxy_before_ray_starts_and_a_folder_of_its_own(tmp_path):
    """In a fresh process (no Ray yet): `auto` sets HAProxy up with ports and files of its own, so a
    second busnet serve on the machine does not share Serve's fixed /tmp/haproxy-serve; without the
    binary `auto` falls back to the Python proxy and `haproxy` is refused in one line."""
    script = """
import json, os
from serve import ingress
chosen = ingress.use_ingress("auto")
env = {k: v for k, v in os.environ.items() if k.startswith("RAY_SERVE_")}
ingress._missing_haproxy_binary = lambda: "no HAProxy binary (test)"
os.environ.pop("RAY_SERVE_ENABLE_HA_PROXY")
fallback = ingress.use_ingress("auto")
try:
    ingress.use_ingress("haproxy")
    refused = None
except Exception as error:
    refused = str(error)
print(json.dumps({"chosen": chosen, "env": env, "fallback": fallback, "refused": refused}))
"""
    root = Path(__file__).resolve().parents[1]
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=root)
        for _ in "ab"
    ]
    reports = [json.loads(run.stdout.strip().splitlines()[-1]) for run in runs]
    for report in reports:
        assert report["chosen"] == "haproxy" and report["env"]["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert report["fallback"] == "proxy" and report["refused"] == "--ingress haproxy: no HAProxy binary (test)"
        config = Path(report["env"]["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"])
        assert config.parent.name.startswith("busnet-") and not config.parent.exists()  # gone at exit
        longest = len(report["env"]["RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"]) + len("/") + 56  # Serve adds a node id
        assert longest <= 97  # HAProxy's limit for a socket path
    first, second = (report["env"] for report in reports)
    for name in ("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_STATS_PORT"):
        assert first[name] != second[name], name
