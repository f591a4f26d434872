"""Hostile DICOM files: a compressed frame larger than its header says (a decompression bomb), a
NumberOfFrames the pixel data does not hold; refused from headers alone, before a pixel is decoded,
in decode_image (serving) and in `busnet ingest` (a reject naming the file and why)."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit

from jobs import storage
from jobs.cli import main
from models.dicom import codestream_size
from models.preprocess import ImageError, decode_image
from tests.dicom_files import HEIGHT, WIDTH, dataset, multi_frame, noise, to_bytes


def _jpeg(width: int, height: int, level: int = 100) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width), level, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _forged_jpeg(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is rewritten to say width x height: what a decoder
    allocates before it finds the data short."""
    data = bytearray(_jpeg(16, 16))
    at = data.find(b"\xff\xc0")
    data[at + 5 : at + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _j2k_header(width: int, height: int) -> bytes:
    """A JPEG 2000 codestream's start: SOC, then SIZ (Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, ...)."""
    siz = (41).to_bytes(2, "big") + bytes(2) + width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes(8)
    return b"\xff\x4f\xff\x51" + siz + bytes(64)


def _encapsulated(frames: list[bytes], syntax=JPEGBaseline8Bit, number_of_frames: int | None = None) -> bytes:
    """A gray US file of the tests' size (64x48 in its header) holding `frames` as its pixel data."""
    ds = dataset("MONOCHROME2", noise(0), syntax=syntax)
    ds.PixelData = encapsulate(frames, has_bot=len(frames) > 1)
    ds["PixelData"].VR = "OB"
    if number_of_frames is not None:
        ds.NumberOfFrames = number_of_frames
    return to_bytes(ds)


def test_a_jpeg_frame_larger_than_its_header_is_refused_before_decoding():
    """Before: the 20000x20000 frame in a file declaring 64x48 was decoded whole (1.9 GB, 2.9 s)
    before the size check; now its frame header alone refuses it."""
    data = _encapsulated([_forged_jpeg(20000, 20000)])
    assert len(data) < 10_000
    started = time.monotonic()
    with pytest.raises(ImageError) as error:
        decode_image(data)
    assert error.value.status == 413 and "DICOM frame 1 is 20000x20000 but its header says 64x48" in str(error.value)
    assert time.monotonic() - started < 1.0


def test_a_jpeg_frame_of_another_size_is_refused():
    with pytest.raises(ImageError, match="DICOM frame 1 is 32x24 but its header says 64x48") as error:
        decode_image(_encapsulated([_jpeg(32, 24)]))
    assert error.value.status == 400
    assert decode_image(_encapsulated([_jpeg(WIDTH, HEIGHT)])).shape == (HEIGHT, WIDTH)  # its own size: read


def test_a_jpeg2000_frame_larger_than_its_header_is_refused():
    with pytest.raises(ImageError, match="DICOM frame 1 is 30000x30000 but its header says 64x48") as error:
        decode_image(_encapsulated([_j2k_header(30000, 30000)], syntax=JPEG2000Lossless))
    assert error.value.status == 413


def test_codestream_sizes_are_read_from_headers():
    assert codestream_size(_jpeg(40, 30)) == (40, 30)
    assert codestream_size(_forged_jpeg(20000, 7)) == (20000, 7)
    assert codestream_size(_j2k_header(123, 45)) == (123, 45)
    assert codestream_size(b"\x00\x01rle") is None
    with pytest.raises(ImageError, match="without a readable frame header"):
        codestream_size(b"\xff\xd8\xff\xda\x00\x02")


def test_number_of_frames_is_capped_at_1200_and_checked_against_the_pixel_data():
    """Before: 9 KB claiming 2e9 frames grew ingest past 24 GB. The cap is pinned here as a number."""
    frames = np.stack([noise(seed) for seed in (1, 2)])
    claims_many = dataset("MONOCHROME2", frames)
    claims_many.NumberOfFrames = 2_000_000_000
    with pytest.raises(ImageError, match="DICOM file of 2000000000 frames: over the limit of 1200") as error:
        decode_image(to_bytes(claims_many))
    assert error.value.status == 413
    claims_many.NumberOfFrames = 1201
    with pytest.raises(ImageError, match="over the limit of 1200"):
        decode_image(to_bytes(claims_many))
    claims_many.NumberOfFrames = 1200
    with pytest.raises(ImageError, match="NumberOfFrames says 1200, its pixel data holds 2"):
        decode_image(to_bytes(claims_many))
    with pytest.raises(ImageError, match="NumberOfFrames says 5, its pixel data holds 2"):
        decode_image(_encapsulated([_jpeg(WIDTH, HEIGHT)] * 2, number_of_frames=5))
    assert np.array_equal(decode_image(multi_frame("MONOCHROME2", frames), frame=2), frames[1])


def test_ingest_rejects_hostile_dicom_files_by_name(tmp_path):
    root = tmp_path / "export"
    root.mkdir()
    claims_many = dataset("MONOCHROME2", np.stack([noise(1), noise(2)]))
    claims_many.NumberOfFrames = 1000
    files = {
        "bomb.dcm": _encapsulated([_forged_jpeg(20000, 20000)]),
        "frames.dcm": to_bytes(claims_many),
        **{f"good-{n}.dcm": _encapsulated([_jpeg(WIDTH, HEIGHT, 50 * n)]) for n in range(4)},
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    with (root / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["file", "label"], *[[name, "benign"] for name in files]])
    out = tmp_path / "ds"
    assert main(["ingest", "--source", f"dicom={root}", "--out", str(out), "--folds", "2"]) == 0
    manifest = json.loads((Path(storage.resolve(str(out))) / "manifest.json").read_text())
    reasons = {Path(r["file"]).name: r["reason"] for r in manifest["rejects"]}
    assert reasons == {
        "bomb.dcm": "DICOM frame 1 is 20000x20000 but its header says 64x48",
        "frames.dcm": "DICOM NumberOfFrames says 1000, its pixel data holds 2",
    }
    assert manifest["num_rows"] == 4


@pytest.mark.parametrize(
    "tag, broken",
    [
        (b"\x02\x00\x10\x00UI", b"\x02\x00\x10\x00\x00I"),  # the transfer syntax UID read with an unknown VR
        (b"\x28\x00\x11\x00US", b"\x28\x00\x11\x00U\x00"),  # Columns with an unknown VR
    ],
)
def test_header_values_of_the_wrong_form_are_a_400_not_a_crash(tag, broken):
    """Found by tests/test_fuzz_inputs.py: these raised AttributeError / NotImplementedError (a 500)."""
    data = to_bytes(dataset("MONOCHROME2", noise(0)))
    assert data.count(tag) == 1
    with pytest.raises(ImageError, match=r"corrupt DICOM header") as error:
        decode_image(data.replace(tag, broken))
    assert error.value.status == 400


def test_ingest_reads_a_multi_frame_file_once(tmp_path, monkeypatch):
    """Before: each frame read the whole file again and checked its header again (here 6 reads)."""
    from jobs.data.ingest import encode

    root = tmp_path / "export"
    root.mkdir()
    clips = {f"clip{n}.dcm": np.stack([noise(10 * n + f) for f in range(3)]) for n in range(2)}
    for name, frames in clips.items():
        (root / name).write_bytes(multi_frame("MONOCHROME2", frames))
    (root / "labels.csv").write_text("file,label\nclip0.dcm,benign\nclip1.dcm,malignant\n")
    reads: list[str] = []
    read = encode._read
    monkeypatch.setattr(encode, "_read", lambda path: reads.append(path.name) or read(path))
    out = tmp_path / "ds"
    assert main(["ingest", "--source", f"dicom={root}", "--out", str(out), "--folds", "2", "--test", "0"]) == 0
    assert sorted(reads) == ["clip0.dcm", "clip1.dcm"]
    manifest = json.loads((Path(storage.resolve(str(out))) / "manifest.json").read_text())
    assert manifest["num_rows"] == 6 and not manifest["rejects"]


def test_a_deflated_data_set_is_refused_before_it_is_inflated():
    """pydicom inflates a deflated data set whole to read even its header: 1000:1 is easy."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = dataset("MONOCHROME2", noise(0))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.Rows, ds.Columns, ds.PixelData = 2000, 2000, bytes(4_000_000)
    data = to_bytes(ds)
    assert len(data) < 20_000  # 4 MB of pixels in a few KB
    with pytest.raises(ImageError, match="Deflated Explicit VR Little Endian") as error:
        decode_image(data)
    assert error.value.status == 415
