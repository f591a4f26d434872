"""One Candidate -> one dataset row (or a Reject saying why not).

Images and masks are decoded (validated) with models.preprocess, as training and serving do.
The image is stored as found when it is PNG or JPEG and not cropped (nothing lost, no re-encoding
cost; readers decode it with the same decode_image), less its metadata (jobs.data.ingest.metadata:
text chunks, EXIF, comments may hold patient data); cropped or BMP images, and any whose stripped
bytes would not decode to the same pixels, are stored as PNG of the decoded pixels, which carries
no metadata either. Masks are the union of the candidate's mask files, stored as PNG 0/255.

A crop box is applied once: an image larger than the box is cropped ("applied"); one already of the
box's size was cropped before (the benchmark's notebook crops in place or writes `<name>_crop.jpg`)
and is kept as is ("already"). Each row says which in `crop`, and `pixels_sha256` (of the decoded
pixels and their shape; a gray image stored as RGB counts as gray) finds identical images stored in
different encodings.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from jobs.data.ingest import metadata
from jobs.data.ingest.found import Candidate, Reject
from models.dicom import DicomFile
from models.preprocess import ImageError, check_size, decode_image, decode_mask


class _Unusable(ValueError):
    """An image or mask file that cannot be ingested; the message is the reject reason."""


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _box_size(box: tuple[int, int, int, int]) -> tuple[int, int]:
    left, top, right, bottom = box
    return right - left, bottom - top


def _crop_box(box: tuple[int, int, int, int], height: int, width: int) -> tuple[slice, slice] | None:
    """The window to cut, or None when the image already has the box's size (cropped before)."""
    left, top, right, bottom = box
    if _box_size(box) == (width, height):
        return None
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise _Unusable(f"crop box {box} (left, top, right, bottom) is not inside the {width}x{height} image")
    return slice(top, bottom), slice(left, right)


def encode(candidate: Candidate) -> dict | Reject:
    """The row for a candidate: image/mask bytes, size, sha256; or why it cannot be ingested."""
    try:
        if candidate.frame is None:
            data = _read(candidate.image)
            pixels = _decoded(decode_image, data, "image")
        else:  # a DICOM frame: its file is read and checked once for all its frames
            data = None
            pixels = _decoded(partial(_DICOM.frame, candidate.image), candidate.frame, "image")
        height, width = pixels.shape[:2]
        window = _crop_box(candidate.crop, height, width) if candidate.crop else None
        mask = _mask_union(candidate, height, width) if candidate.masks else None
    except _Unusable as exc:
        return Reject(candidate.source, str(candidate.image), str(exc))
    if window is not None:
        pixels, mask = np.ascontiguousarray(pixels[window]), None if mask is None else mask[window]
        image = png(pixels)
    else:
        image = png(pixels) if data is None else _without_metadata(data, pixels)
    crop = "" if candidate.crop is None else "applied" if window is not None else "already"
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
        # not stored in the Parquet rows: for the manifest and the integrity checks (jobs.data.ingest.cases)
        "name": candidate.listed_name,
        "crop": crop,
        "pixels_sha256": pixels_sha256(pixels),
    }


def pixels_sha256(pixels: np.ndarray) -> str:
    """The same for the same image in any container: an RGB image whose channels are equal is gray."""
    if pixels.ndim == 3 and (pixels == pixels[..., :1]).all():
        pixels = np.ascontiguousarray(pixels[..., 0])
    return hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()


def _without_metadata(data: bytes, pixels: np.ndarray) -> bytes:
    """The file as found less its metadata if that decodes to the same pixels, else PNG of the pixels."""
    stripped = metadata.strip(data)
    if stripped is not None and (stripped == data or _decodes_to(stripped, pixels)):
        return stripped
    return png(pixels)


def _decodes_to(data: bytes, pixels: np.ndarray) -> bool:
    try:
        return np.array_equal(decode_image(data), pixels)
    except ImageError:
        return False


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _Unusable(f"unreadable {path.name}: {exc.strerror or exc}") from exc


class _OpenedDicom:
    """DICOM files opened once (one read, one header and pixel-data check) for all their frames: the
    ingest threads encoding a multi-frame file's frames share it, which before read and checked the
    whole file once per frame. Only the last KEEP files stay open (bounded memory); an entry is keyed
    by the file's size and time too, so a file changed since is read again."""

    KEEP = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: OrderedDict[tuple, list] = OrderedDict()  # key -> [lock, DicomFile | ImageError | None]

    def frame(self, path: Path, number: int) -> np.ndarray:
        try:
            stat = path.stat()
        except OSError as exc:
            raise _Unusable(f"unreadable {path.name}: {exc.strerror or exc}") from exc
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            entry = self._files.setdefault(key, [threading.Lock(), None])
            self._files.move_to_end(key)
            while len(self._files) > self.KEEP:
                self._files.popitem(last=False)
        with entry[0]:
            if entry[1] is None:
                try:
                    entry[1] = DicomFile(_read(path))
                except ImageError as exc:
                    entry[1] = exc
        if isinstance(entry[1], ImageError):
            raise entry[1]
        dicom: DicomFile = entry[1]
        check_size(dicom.width, dicom.height)
        return dicom.frame(number)


_DICOM = _OpenedDicom()


def _decoded(decode, data, what: str) -> np.ndarray:
    try:
        return decode(data)
    except ImageError as exc:
        raise _Unusable(f"{what}: {exc}") from exc


def _mask_union(candidate: Candidate, height: int, width: int) -> np.ndarray:
    union = np.zeros((height, width), dtype=bool)
    for path in candidate.masks:
        mask = _decoded(decode_mask, _read(path), f"mask {path.name}")
        if mask.shape != union.shape:
            raise _Unusable(f"mask {path.name} is {mask.shape[1]}x{mask.shape[0]}, the image {width}x{height}")
        union |= mask
    return union
