"""One Candidate -> one dataset row (or a Reject saying why not).

The image is stored as found when it is a PNG or JPEG that needs no change (no information lost,
no re-encoding cost); cropped or other formats (BMP, TIFF, palette, CMYK) are stored as PNG.
Masks are the union of the candidate's mask files, stored as PNG 0/255 at the image's size.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from jobs.ingest.found import Candidate, Reject

MAX_PIXELS = 50_000_000
_STORED_AS_FOUND = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG signatures
_KEPT_MODES = ("L", "RGB", "RGBA", "I;16")


class _Unusable(ValueError):
    """An image or mask file that cannot be ingested; the message is the reject reason."""


def _open(data: bytes, what: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise _Unusable(f"{what} has {image.width}x{image.height} pixels, more than {MAX_PIXELS}")
        image.load()
    except _Unusable:
        raise
    except Exception as exc:  # Pillow raises many types for truncated/corrupt/unknown files
        raise _Unusable(f"corrupt or not an image ({what}): {exc}") from exc
    return image


def decode_image(data: bytes) -> tuple[np.ndarray, bool]:
    """(pixels HxW or HxWxC, whether the bytes can be stored as they are)."""
    image = _open(data, "image")
    keep = data.startswith(_STORED_AS_FOUND) and image.mode in _KEPT_MODES
    if image.mode not in _KEPT_MODES:
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    return np.asarray(image), keep


def decode_mask(data: bytes, name: str = "mask") -> np.ndarray:
    """HxW bool: any non-zero colour channel (alpha ignored: opaque is not 'lesion')."""
    image = _open(data, name)
    if image.mode == "P":
        image = image.convert("RGBA")
    pixels = np.asarray(image)
    if pixels.ndim == 3:
        if "A" in image.getbands():
            pixels = pixels[..., :-1]
        return pixels.any(axis=2)
    return pixels != 0


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _crop_box(box: tuple[int, int, int, int], height: int, width: int) -> tuple[slice, slice]:
    left, top, right, bottom = box
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise _Unusable(f"crop box {box} (left, top, right, bottom) is not inside the {width}x{height} image")
    return slice(top, bottom), slice(left, right)


def encode(candidate: Candidate) -> dict | Reject:
    """The row for a candidate: image/mask bytes, size, sha256; or why it cannot be ingested."""
    try:
        data = _read(candidate.image)
        pixels, keep = decode_image(data)
        height, width = pixels.shape[:2]
        window = _crop_box(candidate.crop, height, width) if candidate.crop else None
        mask = _mask_union(candidate, height, width) if candidate.masks else None
    except _Unusable as exc:
        return Reject(candidate.source, str(candidate.image), str(exc))
    if window is not None:
        pixels, mask = pixels[window], None if mask is None else mask[window]
        data, keep = png(np.ascontiguousarray(pixels)), True
    image = data if keep else png(pixels)
    return {
        "image_id": candidate.image_id,
        "source": candidate.source,
        "case_id": candidate.case_id,
        "label": candidate.label,
        "image": image,
        "mask": None if mask is None else png(mask.astype(np.uint8) * 255),
        "height": int(pixels.shape[0]),
        "width": int(pixels.shape[1]),
        "sha256": hashlib.sha256(image).hexdigest(),
    }


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _Unusable(f"unreadable {path.name}: {exc.strerror or exc}") from exc


def _mask_union(candidate: Candidate, height: int, width: int) -> np.ndarray:
    union = np.zeros((height, width), dtype=bool)
    for path in candidate.masks:
        mask = decode_mask(_read(path), f"mask {path.name}")
        if mask.shape != union.shape:
            raise _Unusable(f"mask {path.name} is {mask.shape[1]}x{mask.shape[0]}, "
                            f"the image {width}x{height}")
        union |= mask
    return union
