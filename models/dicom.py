"""DICOM in: one frame's pixels as the array `models.preprocess.decode_image` returns, and nothing else.

A DICOM file carries patient data (names, ids, dates, institutions) beside its pixels. busnet takes
from the header only the pixel layout and, for ingest, the Study and SOP Instance UIDs (which ingest
hashes or only matches; jobs/data/ingest/adapters/dicom.py); no header text is ever put into an error
message, and pydicom's own warnings and log lines (which can quote header values) are silenced.

Frames are numbered from 1, as DICOM numbers them (Referenced Frame Number) and viewers show them.
Pixels: MONOCHROME1 is inverted to MONOCHROME2; gray of 9-16 stored bits becomes uint16 over the full
range (as a 16-bit PNG would be); RGB, YBR_FULL, YBR_FULL_422 and PALETTE COLOR become 8-bit RGB.
Ultrasound stores display values, so no VOI LUT or windowing is applied. Compressed transfer syntaxes
are decoded by the pydicom plugins installed (pylibjpeg, libjpeg, openjpeg, rle; Pillow); any other
is refused with 415 before a pixel is read.
"""

from __future__ import annotations

import functools
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.image_error import ImageError

MAGIC_OFFSET, MAGIC = 128, b"DICM"  # the 128-byte preamble, then "DICM" (PS3.10 7.1)
GRAY = ("MONOCHROME1", "MONOCHROME2")
COLOR = ("RGB", "YBR_FULL", "YBR_FULL_422")  # pydicom converts YBR to RGB while decoding
PALETTE = "PALETTE COLOR"
PHOTOMETRICS = (*GRAY, *COLOR, PALETTE)


def is_dicom(data: bytes) -> bool:
    """Whether `data` is a DICOM Part 10 file (sniffed from the preamble, as file(1) does)."""
    return data[MAGIC_OFFSET : MAGIC_OFFSET + len(MAGIC)] == MAGIC


@dataclass(frozen=True)
class DicomInfo:
    """What busnet reads from a header. The UIDs stay in memory: ingest hashes or matches them."""

    frames: int
    study_uid: str | None
    sop_instance_uid: str | None


@functools.cache
def _pydicom():
    """pydicom, configured once so it never speaks: its warnings and logs can quote header values."""
    import pydicom
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    logging.getLogger("pydicom").propagate = False
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    return pydicom


def _read_header(source: bytes | Path):
    """The header up to the pixel data (the pixels are not read), or ImageError (never its text)."""
    pydicom = _pydicom()
    where = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return pydicom.dcmread(where, stop_before_pixels=True)
    except pydicom.errors.InvalidDicomError as exc:
        raise ImageError("not a DICOM file (no DICM preamble)", 415) from exc
    except OSError as exc:
        raise ImageError(f"unreadable DICOM file: {exc.strerror or type(exc).__name__}") from exc
    except Exception as exc:  # pydicom raises many types for a broken header; their text may quote it
        raise ImageError(f"corrupt DICOM header ({type(exc).__name__})") from exc


def _transfer_syntax(header):
    """The transfer syntax, if pydicom has an installed decoder for it; else ImageError 415."""
    from pydicom.pixels import get_decoder

    syntax = header.file_meta.get("TransferSyntaxUID") if hasattr(header, "file_meta") else None
    if not syntax:
        raise ImageError("DICOM file without a transfer syntax in its file meta information")
    # a private syntax's UID is not echoed: only the names pydicom knows are
    shown = f"{syntax.name} ({syntax})" if syntax.is_transfer_syntax else "a private transfer syntax"
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise ImageError(f"unsupported DICOM transfer syntax: {shown} (no pixel decoder)", 415) from exc
    if not decoder.is_available:
        raise ImageError(f"unsupported DICOM transfer syntax: {shown} (its decoder plugin is not installed)", 415)
    return syntax


def _layout(header, max_pixels: int) -> tuple[str, int]:
    """(photometric interpretation, frames), checked before any pixel is decoded."""
    rows, columns = header.get("Rows"), header.get("Columns")
    if not rows or not columns:
        raise ImageError("DICOM file without an image (no Rows/Columns)")
    if rows * columns > max_pixels:
        raise ImageError(f"too many pixels: {columns}x{rows} is over the limit of {max_pixels:,}", 413)
    photometric = str(header.get("PhotometricInterpretation", "")).strip()
    if photometric not in PHOTOMETRICS:
        known = photometric if photometric.isupper() and len(photometric) <= 16 else "(unknown)"
        raise ImageError(
            f"unsupported DICOM photometric interpretation {known}; busnet reads {', '.join(PHOTOMETRICS)}"
        )
    return photometric, _frames(header)


def _frames(header) -> int:
    try:
        frames = int(header.get("NumberOfFrames") or 1)
    except (TypeError, ValueError) as exc:
        raise ImageError("DICOM file with an unreadable NumberOfFrames") from exc
    if frames < 1:
        raise ImageError(f"DICOM file with {frames} frames")
    return frames


def read_info(source: bytes | Path, max_pixels: int) -> DicomInfo:
    """Frames and UIDs of a DICOM file whose pixels busnet can decode; ImageError if it cannot."""
    header = _read_header(source)
    _transfer_syntax(header)
    _, frames = _layout(header, max_pixels)
    return DicomInfo(frames, _uid(header, "StudyInstanceUID"), _uid(header, "SOPInstanceUID"))


def _uid(header, keyword: str) -> str | None:
    value = str(header.get(keyword, "") or "").strip().rstrip("\0")
    return value or None


def decode_dicom(data: bytes, frame: int | None, max_pixels: int) -> np.ndarray:
    """One frame (1 = the first; None = the first) -> HxW uint8/uint16 gray or HxWx3 uint8 RGB."""
    header = _read_header(data)
    syntax = _transfer_syntax(header)
    photometric, frames = _layout(header, max_pixels)
    number = 1 if frame is None else frame
    if not 1 <= number <= frames:
        raise ImageError(f"frame {number}: the DICOM file has {frames} frame{'s' if frames > 1 else ''} (1-{frames})")
    from pydicom.pixels import apply_color_lut, pixel_array

    try:
        pixels = pixel_array(io.BytesIO(data), index=number - 1)
        if photometric == PALETTE:
            pixels = apply_color_lut(pixels, header)
    except Exception as exc:  # codec and pydicom errors of every type; their text is not echoed
        raise ImageError(f"undecodable DICOM pixel data ({syntax.name}: {type(exc).__name__})") from exc
    return _display(pixels, photometric, header)


def _display(pixels: np.ndarray, photometric: str, header) -> np.ndarray:
    """Decoded values -> the dtype and range decode_image gives: gray uint8/uint16, RGB uint8."""
    if photometric == PALETTE:  # LUT entries are 8 or 16 bits (the descriptor's third value)
        bits, signed = int(header.RedPaletteColorLookupTableDescriptor[2]), False
    else:
        bits, signed = int(header.get("BitsStored") or pixels.itemsize * 8), header.get("PixelRepresentation") == 1
    gray = photometric in GRAY
    expected = pixels.ndim == 2 if gray else pixels.ndim == 3 and pixels.shape[2] == 3
    if not expected:
        raise ImageError(f"DICOM {photometric} pixels of unexpected shape {pixels.shape}")
    out = _rescale(pixels, bits, signed, 16 if gray and bits > 8 else 8)
    if photometric == "MONOCHROME1":  # 0 is white: invert to the MONOCHROME2 everyone else uses
        out = np.iinfo(out.dtype).max - out
    return np.ascontiguousarray(out)


def _rescale(pixels: np.ndarray, bits: int, signed: bool, out_bits: int) -> np.ndarray:
    """Stored values of `bits` bits (two's complement if signed) -> unsigned `out_bits` over the full range."""
    dtype = np.uint8 if out_bits == 8 else np.uint16
    if not signed and bits == out_bits and pixels.dtype.kind == "u":
        return pixels.astype(dtype, copy=False)
    values = pixels.astype(np.int32)
    if signed:
        values += 1 << (bits - 1)
    top, out_top = (1 << bits) - 1, (1 << out_bits) - 1
    values = np.clip(values, 0, top).astype(np.uint32)
    return ((values * out_top + top // 2) // top).astype(dtype)
