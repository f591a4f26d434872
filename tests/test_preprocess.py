"""models.preprocess: decoding (formats, bit depths, bad bytes), the forward geometry and its inverse."""

from __future__ import annotations

import io
import pickle
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageError,
    Preprocessing,
    decode_image,
    decode_mask,
    preprocess_image,
    preprocess_mask,
    restore_mask,
)


def _encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buffer, fmt)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny, valid-looking 8-bit gray PNG that claims width x height pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _gray(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


def test_real_busi_round_trip_gives_original_size_and_mask(busi_sample):
    pre = Preprocessing(size=128)
    pairs = sorted(busi_sample.glob("*/*).png"))[::2]  # 10 of the 20: both classes, sizes 273..808 px
    assert len(pairs) >= 8
    for image_path in pairs:
        image = decode_image(image_path.read_bytes())
        mask = decode_mask(image_path.with_name(image_path.stem + "_mask.png").read_bytes())
        height, width = image.shape[:2]
        assert mask.shape == (height, width) and mask.any(), image_path.name
        x = preprocess_image(image, pre)
        assert x.shape == (3, 128, 128) and x.dtype == np.float32 and np.isfinite(x).all()
        small = preprocess_mask(mask, 128)
        assert small.shape == (1, 128, 128) and set(np.unique(small)) <= {0.0, 1.0}
        restored = restore_mask(small[0], height, width)
        assert restored.shape == (height, width) and restored.dtype == np.uint8
        assert set(np.unique(restored)) <= {0, 255}
        assert _dice(restored, mask) > 0.9, image_path.name


@pytest.mark.parametrize("height,width", [(37, 91), (91, 37), (45, 45), (13, 128), (301, 199)])
def test_synthetic_round_trip_on_odd_non_square_sizes(height, width):
    mask = np.zeros((height, width), dtype=bool)
    mask[height // 4 : height - height // 5, width // 3 : width - width // 6] = True
    small = preprocess_mask(mask, 64)
    restored = restore_mask(small, height, width)  # [1, S, S] accepted too
    assert restored.shape == (height, width)
    assert _dice(restored, mask) > 0.85
    full = restore_mask(np.ones((64, 64), np.float32), height, width)
    assert (full == 255).all()  # the crop removes exactly the padding


def test_padding_goes_bottom_right_with_zeros():
    pre = Preprocessing(size=32)
    white = np.full((30, 60), 255, dtype=np.uint8)  # wide: padded below
    x = preprocess_image(white, pre)
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]
    np.testing.assert_allclose(x[:, :14], np.broadcast_to((1 - mean) / std, (3, 14, 32)), atol=1e-5)
    np.testing.assert_allclose(x[:, 17:], np.broadcast_to(-mean / std, (3, 15, 32)), atol=1e-5)
    tall = preprocess_image(white.T.copy(), pre)  # tall: padded on the right
    np.testing.assert_allclose(tall, x.transpose(0, 2, 1), atol=1e-6)


def test_gray_rgb_rgba_16bit_and_float_inputs_agree():
    pre = Preprocessing(size=48)
    gray = _gray(71, 53)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    rgba = np.dstack([rgb, np.random.default_rng(1).integers(0, 256, gray.shape, dtype=np.uint8)])
    expected = preprocess_image(rgb, pre)
    np.testing.assert_array_equal(preprocess_image(gray, pre), expected)
    np.testing.assert_array_equal(preprocess_image(gray[:, :, None], pre), expected)
    np.testing.assert_array_equal(preprocess_image(rgba, pre), expected)
    step = 1 / 255 / min(IMAGENET_STD)  # the uint8 path rounds to 8 bits after resizing
    np.testing.assert_allclose(preprocess_image(gray.astype(np.uint16) * 257, pre), expected, atol=step)
    np.testing.assert_allclose(preprocess_image(gray / 255.0, pre), expected, atol=step)


def test_input_is_never_modified():
    image = _gray(40, 30)
    image.setflags(write=False)  # Ray Data hands out read-only views
    before = image.copy()
    preprocess_image(image, Preprocessing(size=16))
    preprocess_mask(image, 16)
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize(
    "mode,fmt",
    [
        ("L", "PNG"),
        ("RGB", "PNG"),
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("1", "PNG"),
        ("RGB", "JPEG"),
        ("L", "JPEG"),
        ("RGB", "BMP"),
        ("L", "BMP"),
    ],
)
def test_decode_formats_and_modes(mode, fmt):
    rgb = np.repeat(_gray(23, 41)[:, :, None], 3, axis=2)
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert(mode).save(buffer, fmt)
    decoded = decode_image(buffer.getvalue())
    assert decoded.dtype == np.uint8 and decoded.shape[:2] == (23, 41)
    assert decoded.ndim == 2 or decoded.shape[2] == 3
    if fmt != "JPEG" and mode in ("L", "RGB", "RGBA", "LA"):
        np.testing.assert_array_equal(decoded if decoded.ndim == 2 else decoded[..., 0], rgb[..., 0])


def test_decode_16bit_png_keeps_every_value():
    values = np.random.default_rng(2).integers(0, 65536, (19, 27), dtype=np.uint16)
    decoded = decode_image(_encode(values))
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, values)
    assert preprocess_image(decoded, Preprocessing(size=16)).shape == (3, 16, 16)


def test_decode_mask_channels_and_values():
    lesion = np.zeros((10, 12), dtype=np.uint8)
    lesion[2:5, 3:9] = 255
    for array in (
        lesion,
        lesion // 255,
        np.dstack([lesion] * 3),
        np.dstack([lesion] * 3 + [np.full_like(lesion, 255)]),
    ):
        np.testing.assert_array_equal(decode_mask(_encode(array)), lesion > 0)
    red_only = np.dstack([lesion, np.zeros_like(lesion), np.zeros_like(lesion)])
    np.testing.assert_array_equal(decode_mask(_encode(red_only)), lesion > 0)


def test_bad_bytes_raise_image_error_with_status():
    png = _encode(_gray(64, 64))
    cases = {
        b"": 400,
        b"definitely not an image": 415,
        _encode(_gray(8, 8), "GIF"): 415,
        png[: len(png) // 2]: 400,  # truncated
        _encode(np.repeat(_gray(64, 64)[:, :, None], 3, axis=2), "JPEG")[:300]: 400,
        png[:60] + bytes(b ^ 0xFF for b in png[60:120]) + png[120:]: 400,  # corrupt data, bad CRC
    }
    for data, status in cases.items():
        with pytest.raises(ImageError) as error:
            decode_image(data)
        assert error.value.status == status, (data[:16], str(error.value))


@pytest.mark.parametrize("width,height", [(100_000, 100_000), (8_000, 7_000)])
def test_too_many_pixels_is_413_before_decoding(width, height):
    with pytest.raises(ImageError, match="too many pixels") as error:
        decode_image(_png_header_only(width, height))
    assert error.value.status == 413


def test_max_pixels_argument_and_error_pickles():
    with pytest.raises(ImageError) as error:
        decode_image(_encode(_gray(20, 20)), max_pixels=399)
    copy = pickle.loads(pickle.dumps(error.value))
    assert copy.status == 413 and str(copy) == str(error.value)
    assert decode_image(_encode(_gray(20, 20)), max_pixels=400).shape == (20, 20)


@pytest.mark.parametrize(
    "width,height,words", [(20_000, 4, "side over 4096"), (2_000_000, 1, "side over"), (4000, 400, "8:1")]
)
def test_long_or_thin_images_are_413_before_decoding(width, height, words):
    """A 4 x 20000 PNG is a few hundred bytes, but padding it to a square costs 20000^2 pixels."""
    with pytest.raises(ImageError, match=words) as error:
        decode_image(_png_header_only(width, height))
    assert error.value.status == 413
    assert decode_image(_encode(_gray(500, 4000))).shape == (500, 4000)  # 8:1 and 4096 px still pass


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("height,width", [(7, 300), (300, 7), (500, 700), (129, 65), (64, 64), (40, 30), (1, 999)])
def test_restore_mask_equals_resizing_the_whole_square_then_cropping(size, height, width):
    """The cropped restoring gives the same pixels as the plain definition (resize to L x L, crop)."""
    import torch
    import torch.nn.functional as F

    prob = np.random.default_rng(height * width).random((size, size)).astype(np.float32)
    side = max(height, width)
    square = F.interpolate(
        torch.from_numpy(prob)[None, None], (side, side), mode="bilinear", antialias=side < size, align_corners=False
    )
    expected = np.where(square[0, 0, :height, :width].numpy() > 0.5, 255, 0)
    np.testing.assert_array_equal(restore_mask(prob, height, width), expected)


def test_restoring_long_thin_masks_takes_little_memory():
    """4 x 20000 used to go through a 20000 x 20000 float square (+1.6 GB); 1 x 2,000,000 raised."""
    import subprocess
    import sys

    script = (
        "import resource, numpy as np\n"
        "from models.preprocess import restore_mask\n"
        "prob = np.random.default_rng(0).random((64, 64)).astype(np.float32)\n"
        "restore_mask(prob, 40, 30)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "assert restore_mask(prob, 4, 20_000).shape == (4, 20_000)\n"
        "assert restore_mask(prob[None], 1, 2_000_000).shape == (1, 2_000_000)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) < 100  # MB of peak RSS growth; the masks themselves are 2 MB


def test_bad_arrays_are_refused():
    pre = Preprocessing(size=8)
    for array in (np.zeros((4, 4, 5), np.uint8), np.zeros((0, 4), np.uint8), np.zeros((4, 4), np.int32)):
        with pytest.raises(ImageError):
            preprocess_image(array, pre)
    with pytest.raises(ValueError, match="square"):
        restore_mask(np.zeros((8, 9)), 10, 10)


def test_preprocessing_dict_round_trip_and_validation():
    import json

    pre = Preprocessing(size=96, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert Preprocessing.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
    assert Preprocessing(size=64).mean == IMAGENET_MEAN
    with pytest.raises(ValueError, match="unknown"):
        Preprocessing.from_dict({"size": 64, "colour": "red"})
    for bad in ({"size": 0}, {"size": 64, "mean": (0.5, 0.5)}, {"size": 64, "std": (1.0, 0.0, 1.0)}):
        with pytest.raises(ValueError):
            Preprocessing(**bad)
