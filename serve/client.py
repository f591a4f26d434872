"""HTTP client of the busnet service: send images, summarise answers, draw mask overlays.

Used by `busnet predict`; plain `requests`, so any notebook can do the same.
"""

from __future__ import annotations

import base64
import io
import mimetypes
from pathlib import Path

import numpy as np
import requests
from PIL import Image, ImageDraw, ImageFilter

from jobs.errors import BusnetError

CONTOUR_RGB = (255, 40, 40)


class PredictionFailed(Exception):
    """The service answered one image with an error (the others may still succeed)."""


def predict_endpoint(url: str) -> str:
    """Accept the service root (http://host:8000) or the full /v1/predict URL."""
    url = url.rstrip("/")
    return url if url.endswith("/v1/predict") else f"{url}/v1/predict"


def predict_file(url: str, path: Path, timeout_s: float = 60.0) -> dict:
    """POST one image file as multipart field `file`; the service's JSON answer.

    Raises PredictionFailed for an error answer or an unreadable file, BusnetError when the
    service cannot be reached at all (no point trying the next image).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PredictionFailed(f"cannot read: {exc.strerror}") from exc
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    endpoint = predict_endpoint(url)
    try:
        response = requests.post(endpoint, files={"file": (path.name, data, content_type)}, timeout=(5, timeout_s))
    except requests.ConnectionError as exc:
        raise BusnetError(f"cannot reach {endpoint}: is `busnet serve` running there? ({type(exc).__name__})") from exc
    except requests.Timeout as exc:
        raise PredictionFailed(f"no answer from {endpoint} within {timeout_s:g} s") from exc
    if response.status_code != 200:
        raise PredictionFailed(f"HTTP {response.status_code}: {_error_text(response)}")
    try:
        return response.json()
    except ValueError as exc:
        raise PredictionFailed(f"not a busnet answer (no JSON) from {endpoint}") from exc


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason
    return str(body.get("error") or body.get("detail") or body) if isinstance(body, dict) else str(body)


def summary(answer: dict) -> str:
    """label, probability (and threshold), lesion area and box on one line."""
    text = (
        f"{answer['label']:<9}  p(malignant)={answer['malignant_probability']:.3f} "
        f"(threshold {answer['threshold']:.2f})"
    )
    lesion = answer.get("lesion") or {}
    if lesion.get("area_px") is None:
        return text + "  lesion: n/a (model without segmentation)"
    return text + f"  lesion {lesion['area_px']} px  bbox {lesion['bbox']}"


def decode_mask_png(mask_png: str) -> np.ndarray:
    """The answer's base64 PNG mask -> HxW bool."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(mask_png))).convert("L")) > 0


def overlay(image_bytes: bytes, answer: dict) -> Image.Image:
    """The image (as 8-bit RGB) with the lesion contour in red and the label written on it."""
    from models.preprocess import decode_image, to_8bit

    pixels = to_8bit(decode_image(image_bytes))
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    canvas = pixels.copy()
    if answer.get("mask_png"):
        mask = decode_mask_png(answer["mask_png"])
        if mask.shape != canvas.shape[:2]:
            raise PredictionFailed(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {canvas.shape[1]}x{canvas.shape[0]}"
            )
        canvas[_contour(mask)] = CONTOUR_RGB
    image = Image.fromarray(canvas)
    ImageDraw.Draw(image).text((4, 4), f"{answer['label']} {answer['malignant_probability']:.2f}", fill=CONTOUR_RGB)
    return image


def _contour(mask: np.ndarray) -> np.ndarray:
    """Mask pixels within a few pixels of its edge (thicker on larger images, to stay visible)."""
    width = max(3, 2 * (max(mask.shape) // 300) + 3)
    eroded = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(width))
    return mask & ~(np.asarray(eroded) > 0)
