"""Property-based fuzzing (hypothesis) of everything that parses bytes a stranger sends: the HTTP
request body and query, the image and DICOM decoders, and the ingest adapters' metadata and table
readers. For every input, the answer is a value or the documented error (BadRequest / ImageError with
400, 413 or 415; a Reject; None): never another exception (a 500 and a traceback), and the process's
peak resident memory stays within RSS_CAP of where the test began (no decompression bomb gets decoded).

Bounded for CI: a fixed number of examples each, derandomised (the same inputs every run), no example
database written; the module took 10 s on a shared 2-core machine (budget: 60 s).
"""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from jobs.data.ingest import metadata
from jobs.data.ingest.adapters import dicom as dicom_adapter
from jobs.data.ingest.found import Candidate, Found, Reject, Skipped, parse_label
from jobs.data.ingest.tables import TableError, read_rows
from models.image_error import ImageError
from models.preprocess import decode_image
from serve.body import BadRequest, query_frame, read_image_bytes
from tests.dicom_files import KINDS, dataset, multi_frame, noise, to_bytes

RSS_CAP = 400 << 20  # bytes of peak RSS above the test's start: a 8 MP image decoded costs ~70 MB
STATUSES = {400, 413, 415}
FUZZ = settings(
    max_examples=500,
    deadline=None,  # a slow example on a shared 2-core machine is not a failure; the RSS cap is
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _rss() -> tuple[int, int]:
    """(current, peak) resident bytes of this process (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) << 10, int(fields["VmHWM"].split()[0]) << 10


@pytest.fixture(autouse=True)
def rss_cap():
    """Reset the peak (clear_refs 5), run the test, then hold the peak to RSS_CAP above the start."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("cannot reset the peak RSS here (/proc/self/clear_refs)")
    start = _rss()[0]
    yield
    grown = _rss()[1] - start
    assert grown < RSS_CAP, f"peak RSS grew {grown >> 20} MB (cap {RSS_CAP >> 20} MB)"


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _encoded(fmt: str, pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _jpeg_dicom() -> bytes:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = dataset("MONOCHROME2", noise(0), syntax=JPEGBaseline8Bit)
    ds.PixelData = encapsulate([_encoded("JPEG", noise(0))])
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


SEEDS = [
    _png(noise(1)),
    _png(noise(2, 3)),
    _encoded("JPEG", noise(3, 3)),
    _encoded("BMP", noise(4)),
    *(write(5)[0] for write, _ in KINDS.values()),
    multi_frame("MONOCHROME2", np.stack([noise(6), noise(7)])),
    _jpeg_dicom(),
]


@st.composite
def mutated(draw) -> bytes:
    """A valid PNG/JPEG/BMP/DICOM file with bytes overwritten, a 32-bit field set to any value, and
    maybe cut short: what a corrupt upload or a crafted header looks like."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data) - 4))
        data[at : at + 4] = struct.pack(
            ">I", draw(st.sampled_from([0, 1, 0x7FFF, 0xFFFF, 0x10000, 2**31 - 1, 2**32 - 1]))
        )
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _decodes_or_refuses(data: bytes, frame: int | None = None) -> None:
    try:
        image = decode_image(data, frame=frame)
    except ImageError as exc:
        assert exc.status in STATUSES and str(exc)
        return
    assert image.ndim in (2, 3) and image.shape[0] * image.shape[1] <= 8_000_000


@FUZZ
@given(mutated(), st.sampled_from([None, 1, 2, 1200]))
def test_mutated_images_and_dicom_decode_or_are_refused(data, frame):
    _decodes_or_refuses(data, frame)


@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes_decode_or_are_refused(data):
    _decodes_or_refuses(data)
    _decodes_or_refuses(b"\0" * 128 + b"DICM" + data)  # anything behind a DICOM preamble


def _png_of_size(width: int, height: int) -> bytes:
    """A PNG whose header (IHDR, valid CRC) says width x height, then one tiny real IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@FUZZ
@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_any_declared_png_size_is_checked_before_decoding(width, height):
    _decodes_or_refuses(_png_of_size(width, height))


_NUMBERS = st.one_of(st.integers(-3, 70_000), st.sampled_from([2**31 - 1, 2_000_000_000]))


@FUZZ
@given(
    rows=_NUMBERS,
    columns=_NUMBERS,
    frames=st.one_of(_NUMBERS.map(str), st.sampled_from(["", "x", "1e9", "²", "-0"])),
    bits=st.sampled_from([1, 8, 12, 16, 32, 0]),
    samples=st.sampled_from([1, 3, 4, 0]),
    photometric=st.sampled_from(["MONOCHROME2", "MONOCHROME1", "RGB", "YBR_FULL_422", "PALETTE COLOR", "HSV", "Q"]),
    pixels=st.integers(0, 20_000),
)
def test_dicom_headers_that_lie_are_refused(rows, columns, frames, bits, samples, photometric, pixels):
    """Rows, Columns, NumberOfFrames, bits and samples that do not match the pixel data (or anything)."""
    ds = dataset("MONOCHROME2", noise(0))
    for keyword, value in (("Rows", rows), ("Columns", columns)):
        setattr(ds, keyword, max(0, min(value, 65535)))  # US: the element's own range
    value = frames.encode("utf-8")[:12]
    value += b" " * (len(value) % 2)  # DICOM values have even lengths
    ds.NumberOfFrames = "1" * len(value) if value else ""  # pydicom refuses to hold 'x' itself: placed below
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, max(0, bits - 1)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    ds.PixelData = bytes(pixels)
    try:
        data = to_bytes(ds)
    except Exception:  # pydicom would not write this one: nothing to send
        return
    tag = b"\x28\x00\x08\x00IS" + struct.pack("<H", len(value))
    at = data.find(tag)
    if at >= 0:
        data = data[: at + len(tag)] + value + data[at + len(tag) + len(value) :]
    _decodes_or_refuses(data)
    _decodes_or_refuses(data, frame=2)


async def _chunks(data: bytes, size: int):
    for start in range(0, len(data), size):
        yield data[start : start + size]


_PART = st.tuples(st.sampled_from([b"file", b"other", b"", b'fi"le', b"\xff"]), st.binary(max_size=64), st.booleans())


@st.composite
def multipart_bodies(draw) -> tuple[str, bytes]:
    boundary = draw(st.sampled_from([b"B", b"----x", b"a b", b""]))
    body = b""
    for name, payload, well_formed in draw(st.lists(_PART, max_size=20)):
        header = b'Content-Disposition: form-data; name="' + name + b'"' if well_formed else name
        body += b"--" + boundary + b"\r\n" + header + b"\r\n\r\n" + payload + b"\r\n"
    if draw(st.booleans()):
        body += b"--" + boundary + b"--\r\n"
    content_type = draw(
        st.sampled_from(["multipart/form-data; boundary=", "multipart/form-data", "multipart/form-data;boundary="])
    )
    return content_type + (boundary.decode("latin-1") if "=" in content_type else ""), body + draw(
        st.binary(max_size=32)
    )


@FUZZ
@given(
    st.one_of(
        multipart_bodies(),
        st.tuples(
            st.one_of(st.none(), st.text(max_size=80), st.sampled_from(["image/png", "application/dicom"])),
            st.binary(max_size=512),
        ),
    ),
    st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["0", "99999999999999999999", "-1", " 12"])),
    st.integers(1, 64),
)
def test_request_bodies_give_bytes_or_a_4xx(request_body, declared_length, chunk):
    content_type, body = request_body
    try:
        data = asyncio.run(read_image_bytes(content_type, declared_length, _chunks(body, chunk), 4096))
    except BadRequest as exc:
        assert exc.status in STATUSES and len(str(exc)) < 400  # client text only as a short excerpt
        return
    assert isinstance(data, bytes) and 0 < len(data) <= 4096


@FUZZ
@given(st.lists(st.tuples(st.text(max_size=10), st.text(max_size=30)), max_size=4))
def test_query_strings_give_a_frame_or_a_400(params):
    try:
        frame = query_frame(params)
    except BadRequest as exc:
        assert exc.status == 400 and len(str(exc)) < 200
        return
    assert frame is None or 1 <= frame <= 9999


@FUZZ
@given(mutated())
def test_metadata_stripping_returns_bytes_or_none(data):
    stripped = metadata.strip(data)
    assert stripped is None or (isinstance(stripped, bytes) and len(stripped) <= len(data))


@FUZZ
@given(st.text(max_size=400), st.sampled_from([".csv", ".xlsx"]), st.one_of(st.none(), st.text(max_size=8)))
def test_label_tables_read_or_give_a_table_error(tmp_path_factory, text, suffix, label):
    path = tmp_path_factory.mktemp("table") / f"labels{suffix}"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        rows = read_rows(path)
    except TableError:
        rows = []
    assert all(isinstance(row, dict) for row in rows)
    assert parse_label(label) in (None, 0, 1)


@settings(FUZZ, max_examples=60)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a.dcm", "b.dcm", "c", "x/../a.dcm", ""]), st.text(max_size=12), st.text(max_size=6)
        ),
        max_size=6,
    ),
    st.lists(mutated(), min_size=1, max_size=3),
)
def test_the_dicom_adapter_turns_any_folder_into_candidates_and_rejects(tmp_path_factory, table, files):
    """Any labels table and any (corrupt) files: each file is a Candidate, a Reject or Skipped, with a reason."""
    import csv

    root = tmp_path_factory.mktemp("dicom-fuzz")
    for name, data in zip(("a.dcm", "b.dcm", "c"), files):
        (root / name).write_bytes(data)
    with (root / "labels.csv").open("w", newline="", encoding="utf-8", errors="surrogatepass") as handle:
        csv.writer(handle).writerows([["file", "label", "frame"], *table])
    found: list[Found] = list(dicom_adapter.scan(root, "dicom"))
    assert all(isinstance(f, Candidate | Reject | Skipped) for f in found)
    assert all(f.reason for f in found if isinstance(f, Reject))
