"""DICOM files for the tests, written with pydicom: each photometric interpretation busnet reads,
single- and multi-frame, native and compressed, and a header full of distinctive patient data (PHI)
that must never leave the file.

`KINDS` maps a name to (write function, the array busnet must decode it to, tolerance); the arrays
are built here from the stored values by the DICOM rules, independently of models/dicom.py.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    MPEG4HP41,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

HEIGHT, WIDTH = 48, 64
# Patient data in every file these tests write: none of these strings may reach a dataset, a log,
# a reject or an HTTP answer. The UIDs below are identifying too and are checked the same way.
PHI = {
    "PatientName": "Quixley^Zebulon^Marigold",
    "PatientID": "PHI-ID-7Q3ZK9",
    "PatientBirthDate": "19310417",
    "PatientAddress": "42 Wombat Lane, Snarkville",
    "InstitutionName": "St Quokka Memorial Hospital",
    "ReferringPhysicianName": "Vantablack^Ophelia",
    "OperatorsName": "Sonographer^Thaddeus",
    "AccessionNumber": "ACC88442211",
    "StudyDate": "20240229",
    "StudyDescription": "Left breast lump Quixley",
    "OtherPatientIDs": "MRN-55501-XYZ",
}


def noise(seed: int, channels: int = 0) -> np.ndarray:
    shape = (HEIGHT, WIDTH, channels) if channels else (HEIGHT, WIDTH)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def smooth_rgb(seed: int) -> np.ndarray:
    """An RGB image without sharp edges (JPEG keeps it within a few levels)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    shift = seed * 17
    channels = [(x * 3 + shift) % 256, (y * 4 + shift) % 256, 128 + 60 * np.sin((x + y + shift) / 9)]
    return np.stack(channels, axis=2).astype(np.uint8)


def dataset(
    photometric: str,
    frames: np.ndarray,
    *,
    bits_stored: int = 8,
    syntax: str = ExplicitVRLittleEndian,
    study_uid: str | None = None,
    sop_uid: str | None = None,
) -> FileDataset:
    """A US image (or multi-frame US image) file with native pixel data `frames` ([F,]H,W[,3])."""
    multi = frames.ndim == (4 if frames.shape[-1] == 3 and photometric != "PALETTE COLOR" else 3)
    stack = frames if multi else frames[None]
    samples = 3 if stack.ndim == 4 else 1
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage if multi else UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = syntax
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, sop_uid
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "US"
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.Rows, ds.Columns = stack.shape[1:3]
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if stack.dtype == np.uint8 else 16
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    if samples == 3:
        ds.PlanarConfiguration = 0
    if multi:
        ds.NumberOfFrames = stack.shape[0]
    ds.PixelData = np.ascontiguousarray(stack).tobytes()
    return ds


def to_bytes(ds: FileDataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def gray8(seed: int) -> tuple[bytes, np.ndarray]:
    image = noise(seed)
    return to_bytes(dataset("MONOCHROME2", image)), image


def mono1(seed: int) -> tuple[bytes, np.ndarray]:
    image = noise(seed)  # what a viewer shows; stored inverted, 0 = white
    return to_bytes(dataset("MONOCHROME1", 255 - image)), image


def gray12(seed: int) -> tuple[bytes, np.ndarray]:
    stored = np.random.default_rng(seed).integers(0, 4096, (HEIGHT, WIDTH), dtype=np.uint16)
    expected = np.round(stored.astype(np.float64) * 65535 / 4095).astype(np.uint16)  # full 16-bit range
    return to_bytes(dataset("MONOCHROME2", stored, bits_stored=12)), expected


def rgb(seed: int) -> tuple[bytes, np.ndarray]:
    image = noise(seed, 3)
    return to_bytes(dataset("RGB", image)), image


def ybr_full(seed: int) -> tuple[bytes, np.ndarray]:
    image = noise(seed, 3)
    return to_bytes(dataset("YBR_FULL", convert_color_space(image, "RGB", "YBR_FULL"))), image


def ybr_full_422(seed: int) -> tuple[bytes, np.ndarray]:
    """Native YBR_FULL_422: per 2 pixels of a row, Y1 Y2 Cb Cr (PS3.5 8.2.1 / C.7.6.3.1.2)."""
    image = np.repeat(noise(seed, 3)[:, ::2], 2, axis=1)  # pairs share a colour: subsampling loses nothing
    ybr = convert_color_space(image, "RGB", "YBR_FULL")
    packed = np.stack([ybr[:, 0::2, 0], ybr[:, 1::2, 0], ybr[:, 0::2, 1], ybr[:, 0::2, 2]], axis=2)
    ds = dataset("YBR_FULL_422", ybr)
    ds.PixelData = packed.tobytes()
    return to_bytes(ds), image


def jpeg_ybr_full_422(seed: int) -> tuple[bytes, np.ndarray]:
    """JPEG baseline with 4:2:2 chroma, as ultrasound machines write it (encapsulated by pydicom)."""
    image = smooth_rgb(seed)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95, subsampling="4:2:2")
    ds = dataset("YBR_FULL_422", image, syntax=JPEGBaseline8Bit)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    return to_bytes(ds), image


def palette(seed: int) -> tuple[bytes, np.ndarray]:
    """PALETTE COLOR: 8-bit indices into 16-bit red, green and blue tables of 256 entries."""
    rng = np.random.default_rng(seed)
    index = noise(seed)
    lut = rng.integers(0, 65536, (3, 256), dtype=np.uint16)
    ds = dataset("PALETTE COLOR", index)
    for colour, table in zip(("Red", "Green", "Blue"), lut):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", table.tobytes())
    expected = np.round(lut[:, index] / 65535 * 255).astype(np.uint8).transpose(1, 2, 0)  # 16 -> 8 bits, rounded
    return to_bytes(ds), expected


def rle_gray(seed: int) -> tuple[bytes, np.ndarray]:
    image = noise(seed)
    ds = dataset("MONOCHROME2", image)
    ds.compress(RLELossless, generate_instance_uid=False)
    return to_bytes(ds), image


# name: (write(seed) -> (file bytes, the array it decodes to), largest allowed difference)
KINDS: dict[str, tuple[Callable[[int], tuple[bytes, np.ndarray]], int]] = {
    "MONOCHROME2": (gray8, 0),
    "MONOCHROME1": (mono1, 0),
    "MONOCHROME2 12-bit": (gray12, 0),
    "RGB": (rgb, 0),
    "YBR_FULL": (ybr_full, 2),  # YCbCr <-> RGB in 8 bits: a level or two of rounding
    "YBR_FULL_422": (ybr_full_422, 2),
    "YBR_FULL_422 JPEG baseline": (jpeg_ybr_full_422, 12),  # lossy
    "PALETTE COLOR": (palette, 0),
    "MONOCHROME2 RLE": (rle_gray, 0),
}


def multi_frame(photometric: str, frames: np.ndarray, **kw) -> bytes:
    """A multi-frame file of the given frames ([F,H,W] gray or [F,H,W,3] RGB)."""
    return to_bytes(dataset(photometric, frames, **kw))


def with_uids(data: bytes, study_uid: str, sop_uid: str) -> bytes:
    """The same file with other Study / SOP Instance UIDs."""
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data))
    ds.StudyInstanceUID, ds.SOPInstanceUID = study_uid, sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    return to_bytes(ds)


def unsupported(seed: int) -> bytes:
    """An H.264 video file (the MPEG-4 AVC transfer syntax): pydicom has no decoder for it."""
    ds = dataset("YBR_PARTIAL_420", noise(seed, 3), syntax=MPEG4HP41)
    ds.PixelData = encapsulate([b"\0\0\0\1" + bytes(64)])
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


def texts_of(data: bytes) -> list[str]:
    """The PHI strings and the UIDs of a file: what must not leave it."""
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return [*PHI.values(), str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)]
