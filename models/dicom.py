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

Hostile files: the header's Rows/Columns bound what is checked, but a JPEG or JPEG 2000 frame inside
carries its own size, and decoders allocate that one (a 4.7 MB file declaring 64x64 that held a
20000x20000 JPEG cost 1.9 GB before it was refused). So on opening, every frame's codestream header
is read (`codestream_size`, no pixel decoded) and a frame whose size differs from the header's is
refused; NumberOfFrames is checked against MAX_FRAMES and against what the pixel data holds.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from models.image_error import ImageError
from models.limits import MAX_FRAMES

MAGIC_OFFSET, MAGIC = 128, b"DICM"  # the 128-byte preamble, then "DICM" (PS3.10 7.1)
GRAY = ("MONOCHROME1", "MONOCHROME2")
COLOR = ("RGB", "YBR_FULL", "YBR_FULL_422")  # pydicom converts YBR to RGB while decoding
PALETTE = "PALETTE COLOR"
PHOTOMETRICS = (*GRAY, *COLOR, PALETTE)
# PS3.3 C.7.6.3.1.2: the values an error may name (a header's other text is never echoed)
DEFINED_PHOTOMETRICS = (
    *PHOTOMETRICS,
    "HSV",
    "ARGB",
    "CMYK",
    "YBR_PARTIAL_422",
    "YBR_PARTIAL_420",
    "YBR_ICT",
    "YBR_RCT",
)


def is_dicom(data: bytes) -> bool:
    """Whether `data` is a DICOM Part 10 file (sniffed from the preamble, as file(1) does)."""
    return data[MAGIC_OFFSET : MAGIC_OFFSET + len(MAGIC)] == MAGIC


@functools.cache
def _pydicom():
    """pydicom, configured once so it never speaks: its warnings and logs can quote header values."""
    import pydicom
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    logging.getLogger("pydicom").propagate = False
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    return pydicom


# Deflated Explicit VR Little Endian: the whole data set is one zlib stream, which pydicom inflates
# whole to read even the header (1000:1 is easy: a 20 MB body would become 20 GB). Refused unread.
DEFLATED = b"1.2.840.10008.1.2.1.99"
META_BYTES = 4096  # the file meta group (where the transfer syntax is) is a few hundred bytes


def _read_header(source: bytes | Path):
    """The header up to the pixel data (the pixels are not read), or ImageError (never its text)."""
    pydicom = _pydicom()
    try:
        if isinstance(source, bytes):
            start = source[:META_BYTES]
        else:
            with source.open("rb") as handle:
                start = handle.read(META_BYTES)
    except OSError as exc:
        raise ImageError(f"unreadable DICOM file: {exc.strerror or type(exc).__name__}") from exc
    if DEFLATED in start:
        raise ImageError("unsupported DICOM transfer syntax: Deflated Explicit VR Little Endian (a zlib stream)", 415)
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


def _photometric(header) -> str:
    photometric = str(header.get("PhotometricInterpretation", "")).strip()
    if photometric not in PHOTOMETRICS:
        shown = photometric if photometric in DEFINED_PHOTOMETRICS else "(not a DICOM-defined one)"
        raise ImageError(
            f"unsupported DICOM photometric interpretation {shown}; busnet reads {', '.join(PHOTOMETRICS)}"
        )
    return photometric


def _frames(header) -> int:
    try:
        frames = int(header.get("NumberOfFrames") or 1)
    except (TypeError, ValueError) as exc:
        raise ImageError("DICOM file with an unreadable NumberOfFrames") from exc
    if frames < 1:
        raise ImageError(f"DICOM file with {frames} frames")
    if frames > MAX_FRAMES:
        raise ImageError(f"DICOM file of {frames} frames: over the limit of {MAX_FRAMES}", 413)
    return frames


def _check_pixel_data(source: bytes | Path, dicom: DicomFile) -> None:
    """The pixel data holds `dicom.frames` frames, each of the header's size: native data long enough,
    each compressed frame's own codestream header saying Rows x Columns (read without decoding)."""
    pydicom = _pydicom()
    where = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        data = pydicom.dcmread(where, specific_tags=["PixelData"]).get("PixelData")
    except Exception as exc:  # as in _read_header: the text may quote the header
        raise ImageError(f"corrupt DICOM pixel data ({type(exc).__name__})") from exc
    if not data:
        raise ImageError("DICOM file without pixel data")
    if not dicom._syntax.is_encapsulated:
        bits = int(dicom._header.get("BitsAllocated") or 8)
        samples = int(dicom._header.get("SamplesPerPixel") or 1)
        per_frame = dicom.width * dicom.height * samples * bits // 8
        if dicom.photometric == "YBR_FULL_422":  # two pixels share one Cb and one Cr
            per_frame = per_frame * 2 // 3
        if len(data) < dicom.frames * per_frame:
            raise ImageError(f"DICOM NumberOfFrames says {dicom.frames}, its pixel data holds {len(data) // per_frame}")
        return
    from pydicom.encaps import generate_frames

    found = 0
    try:
        for frame in generate_frames(data, number_of_frames=dicom.frames):
            found += 1
            if found > dicom.frames:
                break
            size = codestream_size(frame)
            if size is not None and size != (dicom.width, dicom.height):
                status = 413 if size[0] * size[1] > dicom.width * dicom.height else 400
                raise ImageError(
                    f"DICOM frame {found} is {size[0]}x{size[1]} but its header says {dicom.width}x{dicom.height}",
                    status,
                )
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"corrupt DICOM pixel data ({type(exc).__name__})") from exc
    if found < dicom.frames:
        raise ImageError(f"DICOM NumberOfFrames says {dicom.frames}, its pixel data holds {found}")


JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}  # F7: JPEG-LS
J2K_SIZ = b"\xff\x4f\xff\x51"  # start of codestream, then the image and tile size marker


def codestream_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) a JPEG, JPEG-LS or JPEG 2000 frame declares, from its header alone; None for
    other codecs (RLE decodes to the header's size). A JPEG without a size (0: set later by DNL)
    reads as (width, 0), which no header matches."""
    if frame[:2] == b"\xff\xd8":
        at = 2
        while at + 4 <= len(frame) and frame[at] == 0xFF:
            marker, length = frame[at + 1], int.from_bytes(frame[at + 2 : at + 4], "big")
            if marker == 0xFF:  # fill byte
                at += 1
                continue
            if marker in JPEG_SOF and at + 9 <= len(frame):
                height, width = (
                    int.from_bytes(frame[at + 5 : at + 7], "big"),
                    int.from_bytes(frame[at + 7 : at + 9], "big"),
                )
                return width, height
            if marker == 0xDA or length < 2:  # scan data before any frame header: malformed
                break
            at += 2 + length
        raise ImageError("DICOM JPEG frame without a readable frame header")
    at = frame.find(J2K_SIZ, 0, 4096)
    if at >= 0 and at + 24 <= len(frame):
        x, y, x0, y0 = (int.from_bytes(frame[at + 8 + 4 * i : at + 12 + 4 * i], "big") for i in range(4))
        return max(0, x - x0), max(0, y - y0)
    if frame[4:12] in (b"jP  \r\n\x87\n",) or frame[:4] == b"\xff\x4f\xff\x51":
        raise ImageError("DICOM JPEG 2000 frame without a readable size")
    return None


def _uid(header, keyword: str) -> str | None:
    value = str(header.get(keyword, "") or "").strip().rstrip("\0")
    return value or None


class DicomFile:
    """An opened DICOM file: its header (read up to the pixel data), checked to be decodable, and
    its frames on demand. The size is the caller's to check (models.preprocess checks every image
    the same way) before `frame` decodes a pixel. The UIDs stay in memory: ingest hashes or matches them."""

    def __init__(self, source: bytes | Path) -> None:
        self._source = source
        self._header = header = _read_header(source)
        with _header_values():
            self._syntax = _transfer_syntax(header)
            self.width, self.height = int(header.get("Columns") or 0), int(header.get("Rows") or 0)
            if not (self.width and self.height):
                raise ImageError("DICOM file without an image (no Rows/Columns)")
            self.photometric = _photometric(header)
            self.frames = _frames(header)
            _check_pixel_data(source, self)
            self.study_uid = _uid(header, "StudyInstanceUID")
            self.sop_instance_uid = _uid(header, "SOPInstanceUID")

    def frame(self, number: int | None = None) -> np.ndarray:
        """Frame `number` (1 = the first; None = the first) -> HxW uint8/uint16 gray or HxWx3 uint8 RGB."""
        number = 1 if number is None else number
        if not 1 <= number <= self.frames:
            plural = "s" if self.frames > 1 else ""
            raise ImageError(f"frame {number}: the DICOM file has {self.frames} frame{plural} (1-{self.frames})")
        from pydicom.pixels import apply_color_lut, pixel_array

        source = io.BytesIO(self._source) if isinstance(self._source, bytes) else self._source
        try:
            pixels = pixel_array(source, index=number - 1)
            if self.photometric == PALETTE:
                pixels = apply_color_lut(pixels, self._header)
        except Exception as exc:  # codec and pydicom errors of every type; their text is not echoed
            raise ImageError(f"undecodable DICOM pixel data ({self._syntax.name}: {type(exc).__name__})") from exc
        with _header_values():
            return _display(pixels, self.photometric, self._header)


@contextlib.contextmanager
def _header_values() -> Iterator[None]:
    """A header value of an unexpected type or form is ImageError 400, never another exception: pydicom
    converts values when first read and raises many types (tests/test_fuzz_inputs.py found a UID read
    with the wrong VR, an unknown VR: AttributeError, NotImplementedError); their text is not echoed."""
    try:
        yield
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"corrupt DICOM header ({type(exc).__name__})") from exc


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
