"""The browser viewer at `/`, in a real headless chromium (Debian's, installed by setup.sh; never a
downloaded browser) driven by Playwright, against the Serve app over HTTP on 127.0.0.1.

It uploads a real BUSI image with the keyboard, and checks that the numbers and the overlay the page
shows are the API's answer for the same bytes; that bad files get a clear message; and it saves a
screenshot: `<pytest basetemp>/artifacts/viewer.png` (CI: run pytest with `--basetemp DIR` and keep
`DIR/artifacts`).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import torch.nn.functional as F
from PIL import Image

from jobs.runtime import free_port
from models import build_model, save_checkpoint
from models.preprocess import Preprocessing, decode_image, decode_mask, preprocess_image, preprocess_mask
from tests.dicom_files import HEIGHT, WIDTH, gray12, multi_frame, noise

CHROMIUM = Path("/usr/bin/chromium")
# Headless, hermetic: nothing but 127.0.0.1 is reached, nothing of a user profile is used.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IMAGE = ("malignant", "malignant (2).png")  # 643x570: under 800 px, so the contour is one pixel wide
MAX_BYTES = 1_000_000
METRICS = {"epoch": 3, "val_auc": 0.8141, "val_sens": 0.75, "val_spec": 0.875, "val_dsc": 0.4321, "val_loss": 0.61}


@pytest.fixture(scope="module")
def image_path(busi_sample) -> Path:
    return busi_sample.joinpath(*IMAGE)


FIT_MAX_STEPS = 200


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, image_path, one_thread) -> str:
    """A tiny model fitted to this image's BUSI mask and label until its mask overlaps it with IoU > 0.5,
    so that its mask is a lesion-shaped region (an untrained head marks all pixels, none or scattered
    noise). It trains in eval mode: BatchNorm keeps the statistics it is served with."""
    torch.manual_seed(3)
    model = build_model("tiny").eval()
    x = torch.from_numpy(preprocess_image(decode_image(image_path.read_bytes()), Preprocessing(size=model.input_size)))
    truth = decode_mask(image_path.with_name(image_path.stem + "_mask.png").read_bytes())
    y = torch.from_numpy(preprocess_mask(truth, model.input_size))[None]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(FIT_MAX_STEPS):
        out = model(x[None])
        predicted = out["mask_logits"].detach() > 0
        if (predicted & (y > 0)).sum() > 0.5 * (predicted | (y > 0)).sum():  # IoU > 0.5: lesion-shaped
            break
        loss = F.binary_cross_entropy_with_logits(out["mask_logits"], y)
        loss = loss + F.binary_cross_entropy_with_logits(out["logits"].flatten(), torch.ones(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    root = tmp_path_factory.mktemp("viewer-ckpt")
    return str(save_checkpoint(model, root / "ckpt", threshold=0.45, metrics=METRICS))


@pytest.fixture(scope="module")
def url(ray_local, checkpoint) -> str:
    from serve.app import build_app
    from serve.launch import start_app, stop_app

    yield start_app(build_app(checkpoint, max_image_bytes=MAX_BYTES), port=free_port())
    stop_app()


@pytest.fixture(scope="module")
def page(url, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run setup.sh (it installs Debian's chromium)")
    profile = tmp_path_factory.mktemp("chromium-profile")  # a new, empty user-data-dir
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(60_000)
        # Intercept file choosers from the start: enabling it only inside expect_file_chooser races
        # with the key press on a loaded machine (the dialog opens uncaught and no event comes).
        page.on("filechooser", lambda chooser: None)
        page.goto(f"{url}/")
        yield page
        context.close()


def canvas_pixels(page, canvas_id: str) -> np.ndarray:
    """The canvas's RGBA pixels, read back through a lossless PNG."""
    data_url = page.eval_on_selector(f"#{canvas_id}", "canvas => canvas.toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGBA"))


def boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask or the image."""
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def tab_to(page, element_id: str, presses: int = 20) -> None:
    """Move the keyboard focus with Tab until `element_id` has it (fails if Tab never gets there)."""
    for _ in range(presses):
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
        page.keyboard.press("Tab")
    pytest.fail(f"Tab never reached #{element_id}")


def upload(page, path: Path) -> None:
    page.set_input_files("#file", str(path))


def error_text(page) -> str:
    page.wait_for_selector("#error:not([hidden])")
    return page.inner_text("#error")


def test_banner_and_model_description(page, url):
    assert "Research use only: not a medical device." in page.inner_text(".banner")
    assert page.eval_on_selector(".banner", "b => getComputedStyle(b).borderBottomStyle") == "solid"  # CSS loaded
    info = requests.get(f"{url}/v1/model", timeout=30).json()
    page.wait_for_selector("#model-facts:not([hidden])")
    assert page.inner_text("#model-name") == info["model"]["name"]
    assert page.inner_text("#model-version") == info["model"]["version"] != ""
    assert page.inner_text("#model-threshold") == "0.450"
    rows = page.query_selector_all("#metrics tbody tr")
    shown = {row.get_attribute("data-metric"): row.query_selector("td").inner_text() for row in rows}
    assert shown == {key: f"{value:.3f}" for key, value in METRICS.items() if key.startswith("val_")}
    assert page.inner_text("#metrics-caption") == "Validation metrics (checkpoint of epoch 3)"


def test_keyboard_upload_shows_the_api_answer(page, url, image_path, tmp_path_factory):
    data = image_path.read_bytes()
    tab_to(page, "choose")
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files(str(image_path))
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Analysed')")
    answer = requests.post(f"{url}/v1/predict", data=data, headers={"Content-Type": "image/png"}, timeout=60).json()

    assert page.inner_text("#label") == answer["label"]
    assert page.inner_text("#probability") == f"{answer['malignant_probability']:.3f}"
    assert page.inner_text("#threshold") == f"{answer['threshold']:.3f}" == "0.450"
    area, bbox = answer["lesion"]["area_px"], answer["lesion"]["bbox"]
    width, height = Image.open(image_path).size
    assert page.inner_text("#area") == f"{area} px ({100 * area / (width * height):.1f}% of the image)"
    assert page.inner_text("#bbox") == ", ".join(map(str, bbox))
    assert page.inner_text("#answered-by") == f"{answer['model']['name']} {answer['model']['version']}"
    rect = page.query_selector("#box")
    assert [float(rect.get_attribute(k)) for k in ("x", "y", "width", "height")] == [
        bbox[0],
        bbox[1],
        bbox[2] - bbox[0],
        bbox[3] - bbox[1],
    ]

    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"])))) > 127
    assert 0.01 < mask.mean() < 0.9  # a lesion, not all or nothing: the comparisons below mean something
    drawn_mask = canvas_pixels(page, "mask-layer")[..., 3] > 0
    assert drawn_mask.shape == mask.shape and np.array_equal(drawn_mask, mask)
    drawn_contour = canvas_pixels(page, "contour-layer")[..., 3] > 0
    assert np.array_equal(drawn_contour, boundary(mask))
    image = canvas_pixels(page, "image-layer")[..., :3]
    assert np.array_equal(image, np.asarray(Image.open(image_path).convert("RGB")))  # the image itself, unscaled

    tab_to(page, "opacity")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert page.eval_on_selector("#mask-layer", "c => c.style.opacity") == "0.3"
    assert page.inner_text("#opacity-value") == "30%"
    page.keyboard.press("ArrowRight")
    assert page.eval_on_selector("#mask-layer", "c => c.style.opacity") == "0.35"

    artifacts = tmp_path_factory.getbasetemp() / "artifacts"
    artifacts.mkdir(exist_ok=True)
    page.screenshot(path=str(artifacts / "viewer.png"), full_page=True)
    assert (artifacts / "viewer.png").stat().st_size > 10_000


def test_bad_files_get_clear_messages(page, url, image_path, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    upload(page, text)
    message = error_text(page)
    assert message.startswith("notes.txt: Unsupported file type") and "HTTP 415" in message

    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(image_path.read_bytes()[:2000])
    upload(page, truncated)
    page.wait_for_function("() => document.getElementById('error').textContent.startsWith('truncated.png')")
    message = page.inner_text("#error")
    assert "could not read this image" in message and "HTTP 400" in message

    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(MAX_BYTES))
    upload(page, big)
    page.wait_for_function("() => document.getElementById('error').textContent.startsWith('big.png')")
    assert "too large" in page.inner_text("#error") and "HTTP 413" in page.inner_text("#error")

    # The service goes away: the browser's own connection failure, not an HTTP status.
    page.route("**/v1/predict", lambda route: route.abort("connectionrefused"))
    try:
        upload(page, image_path)
        page.wait_for_function("() => document.getElementById('error').textContent.includes('Cannot reach')")
    finally:
        page.unroute("**/v1/predict")
    assert page.inner_text("#error").startswith(f"{image_path.name}: Cannot reach the busnet service")


# (file, frame field, the frame's pixels): a 12-bit single frame (so the 8-bit rendering is checked)
# and the second frame of a multi-frame file.
FRAMES = np.stack([noise(seed) for seed in (5, 6, 7)])
DICOMS = {"gray12": gray12(4), "multi": (multi_frame("MONOCHROME2", FRAMES), FRAMES[1])}


@pytest.mark.parametrize("name, frame, kind", [("scan.dcm", "", "gray12"), ("IMG0001", "2", "multi")])
def test_dicom_is_shown_with_the_service_s_decoding(page, tmp_path, name, frame, kind):
    """Sent as application/dicom by extension, or by the DICM preamble of an extension-less file (as
    PACS exports name them); the frame field becomes `?frame=N`, for v1/predict and v1/preview alike;
    the base layer is the frame's own pixels (uint16 over its full range -> 8 bit)."""
    data, pixels = DICOMS[kind]
    path = tmp_path / name
    path.write_bytes(data)
    page.fill("#frame", frame)
    with page.expect_request("**/v1/predict*") as predict, page.expect_request("**/v1/preview*") as preview:
        upload(page, path)
    query = f"?frame={frame}" if frame else ""
    for request, endpoint in ((predict.value, "predict"), (preview.value, "preview")):
        assert request.headers["content-type"] == "application/dicom"
        assert request.url.endswith(f"/v1/{endpoint}{query}")
    page.wait_for_function(f"() => document.getElementById('status').textContent === 'Analysed {name}.'")
    expected = (pixels // 257).astype(np.uint8) if pixels.dtype == np.uint16 else pixels
    assert expected.std() > 10  # noise, not a flat frame: the comparison means something
    drawn = canvas_pixels(page, "image-layer")
    assert drawn.shape[:2] == (HEIGHT, WIDTH)
    assert np.array_equal(drawn[..., :3], np.repeat(expected[..., None], 3, axis=2))
    assert canvas_pixels(page, "mask-layer").shape[:2] == (HEIGHT, WIDTH)
    assert "image as the service decoded it" in page.inner_text("#caption")


def test_preview_endpoint(url, image_path):
    """POST v1/preview: the decoded image as PNG, and predict's errors for bad bodies and frames."""
    data, single = DICOMS["multi"][0], DICOMS["gray12"][0]
    dicom = {"Content-Type": "application/dicom"}
    answer = requests.post(f"{url}/v1/preview?frame=3", data=data, headers=dicom, timeout=60)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(answer.content))), FRAMES[2])
    png = requests.post(f"{url}/v1/preview", files={"file": image_path.read_bytes()}, timeout=60)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))), decode_image(image_path.read_bytes()))
    for query, body, headers, status in [
        ("?frame=4", data, dicom, 400),  # the file has 3
        ("?frame=0", data, dicom, 400),
        ("", b"not an image", {"Content-Type": "text/plain"}, 415),
        ("", single[: len(single) // 2], dicom, 400),  # truncated pixel data
        ("", bytes(MAX_BYTES + 1), dicom, 413),
    ]:
        answer = requests.post(f"{url}/v1/preview{query}", data=body, headers=headers, timeout=60)
        assert answer.status_code == status, (query, answer.text)
        assert answer.json()["error"]
