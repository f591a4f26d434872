"""The one preprocessing of training and serving: decode, pad to square, resize, normalise; and back.

A prediction is made on exactly what the network was trained on: the Ray Data pipeline and the
Serve deployment both call `decode_image` + `preprocess_image`, and `restore_mask` maps a predicted
mask back onto the original image.

Geometry: the image is zero-padded at the bottom and right to a square of side L = max(H, W), then
resized to S x S (pixel-centre convention, as `align_corners=False`). `restore_mask` resizes S -> L
and crops the padding, so the mask lands on the original pixels.

Speed: 8-bit images are resized as uint8 in channels-last layout, which takes torch's vectorised
antialiasing path (~1 ms for a 760x575 BUSI image, about 10x the float path); the result is
therefore rounded to 8 bits, the precision the image had. 16-bit and float images use float32.
Pixels are used as stored: EXIF orientation is not applied, so masks stay aligned with their images.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from models.dicom import DicomFile, is_dicom
from models.image_error import ImageError
from models.inference import binarize
from models.limits import MAX_ASPECT, MAX_PIXELS, MAX_SIDE

FORMATS = ("PNG", "JPEG", "BMP")
# timm's IMAGENET_DEFAULT_MEAN / _STD: what the ImageNet-pretrained ResNet and Swin expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, frame: int | None = None) -> np.ndarray:
    """PNG/JPEG/BMP/DICOM bytes -> HxW (gray, uint8 or uint16) or HxWx3 (RGB, uint8) array; alpha is dropped.

    The size is checked from the header (`check_size`), before any pixel is decoded. `frame` picks a
    frame of a multi-frame DICOM file (1 = the first, the default; models.dicom).
    """
    if not data:
        raise ImageError("empty: no image bytes")
    if is_dicom(data):
        dicom = DicomFile(data)
        check_size(dicom.width, dicom.height, max_pixels)
        return dicom.frame(frame)
    if frame not in (None, 1):
        raise ImageError(f"frame {frame}: only a DICOM file has several frames")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"too many pixels (decompression bomb?): {exc}", 413) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} image", 415) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"corrupt image header: {exc}") from exc
    with image:
        check_size(*image.size, max_pixels)
        try:
            image.load()
            return _to_array(image)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"corrupt or truncated {image.format} image: {exc}") from exc


def check_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """ImageError (413) for an image over the pixel, long-side or aspect-ratio caps; 400 when empty."""
    if width * height > max_pixels:
        raise ImageError(f"too many pixels: {width}x{height} is over the limit of {max_pixels:,}", 413)
    if width == 0 or height == 0:
        raise ImageError(f"empty image: {width}x{height}")
    if max(width, height) > MAX_SIDE:
        raise ImageError(f"too large: {width}x{height} has a side over {MAX_SIDE} px", 413)
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"too thin: {width}x{height} is more elongated than {MAX_ASPECT}:1", 413)


def _to_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I;16"):
        return np.array(image).astype(np.uint16)  # native byte order, also for I;16B
    if mode == "I":
        return np.clip(np.array(image), 0, 65535).astype(np.uint16)
    if mode in ("L", "RGB"):
        return np.array(image)
    if mode in ("LA", "La", "1"):
        return np.array(image.getchannel(0).convert("L"))
    # RGBA, palette (maybe with transparency), CMYK, YCbCr...: through RGBA, then drop alpha.
    return np.array(image.convert("RGBA"))[..., :3].copy()


def decode_mask(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Mask bytes -> HxW bool: any non-zero colour channel (1-4 channels; alpha ignored) is lesion."""
    mask = decode_image(data, max_pixels)
    return mask.any(axis=2) if mask.ndim == 3 else mask != 0


@dataclass(frozen=True)
class Preprocessing:
    """What the network's input is: side S and the per-channel mean/std (stored in config.json)."""

    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"Preprocessing.size must be a positive int, got {self.size!r}")
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != 3:
                raise ValueError(f"Preprocessing.{name} needs 3 values (R, G, B), got {values}")
            object.__setattr__(self, name, values)
        if min(self.std) <= 0:
            raise ValueError(f"Preprocessing.std must be positive, got {self.std}")

    def to_dict(self) -> dict:
        return {"size": self.size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown preprocessing fields {sorted(unknown)}; known: {sorted(asdict(cls(1)))}")
        return cls(**data)


def _as_hwc(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx1..4 -> HxWx1 (gray) or HxWx3 (RGB) view; gray+alpha and RGBA lose alpha."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image[:, :, None]
    if image.ndim == 3 and image.shape[2] in (1, 2):
        return image[:, :, :1]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[:, :, :3]
    raise ImageError(f"unsupported image array shape {image.shape}: expected HxW or HxWxC with C in 1..4")


def preprocess_image(image: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Image array (HxW or HxWxC; uint8, uint16, or float in [0, 1]) -> normalised float32 [3, S, S].

    `resize_image`, then `normalize_pixels`: the two halves training keeps apart (its decode cache
    holds the resized pixels, 8-bit at rest, and each worker normalises) and serving runs together.
    The input is never modified.
    """
    return normalize_pixels(torch.from_numpy(resize_image(image, pre.size)), pre).numpy()


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Image array -> [3, S, S] pixels: zero-pad bottom/right to square, antialiased bilinear resize
    to S, gray -> 3 channels. uint8 for 8-bit images (the resize rounds to the image's own
    precision); float32 in [0, 1] for 16-bit and float ones."""
    pixels = _as_hwc(image)
    height, width, channels = pixels.shape
    if height == 0 or width == 0:
        raise ImageError(f"empty image array of shape {np.shape(image)}")
    if pixels.dtype == np.uint8:
        dtype, scale = np.uint8, None
    elif pixels.dtype == np.uint16:
        dtype, scale = np.float32, 65535.0
    elif np.issubdtype(pixels.dtype, np.floating):
        dtype, scale = np.float32, None
    else:
        raise ImageError(f"unsupported pixel type {pixels.dtype}: expected uint8, uint16 or float in [0, 1]")
    side = max(height, width)
    padded = np.zeros((1, side, side, channels), dtype=dtype)  # a fresh array: the input stays untouched
    padded[0, :height, :width] = pixels
    # NHWC memory seen as NCHW: torch's fast uint8 antialias kernel wants channels-last.
    square = torch.from_numpy(padded).permute(0, 3, 1, 2)
    resized = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    if scale is not None:
        resized = resized.div_(scale)
    return resized.expand(3, -1, -1).contiguous().numpy()


def normalize_pixels(pixels: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """[..., 3, S, S] resized pixels (uint8, or float in [0, 1]) -> float32 (x - mean) / std, on the
    tensor's own device: the one normalisation of training, evaluation and serving."""
    unit = pixels.to(torch.float32)
    if pixels.dtype == torch.uint8:
        unit = unit.div_(255.0)
    mean = torch.tensor(pre.mean, dtype=torch.float32, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32, device=pixels.device).view(3, 1, 1)
    return (unit - mean) / std


def _nearest_square(mask: np.ndarray, size: int) -> np.ndarray:
    """HxW bool -> zero-padded to square, nearest-neighbour (pixel centres) to size x size."""
    height, width = mask.shape
    side = max(height, width)
    padded = np.zeros((side, side), dtype=bool)
    padded[:height, :width] = mask
    index = np.minimum(((np.arange(size) + 0.5) * side / size).astype(np.int64), side - 1)
    return padded[np.ix_(index, index)]


def preprocess_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """HxW mask (non-zero = lesion) -> float32 [1, S, S] in {0, 1}: same padding, nearest resize."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ImageError(f"unsupported mask array shape {mask.shape}: expected a non-empty HxW array")
    return _nearest_square(mask != 0, size)[None].astype(np.float32)


def restore_mask(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """Predicted probabilities [S, S] (or [1, S, S]) -> uint8 {0, 255} mask [height, width].

    The inverse of the padding and resize: bilinear resize to L = max(height, width), crop the
    padding, then the one mask rule of `models.inference.binarize` (probability > 0.5). Upsampling
    computes only the height x width pixels kept (`_upsample_cropped`), never the L x L square.
    """
    prob = np.array(prob, dtype=np.float32)  # a writable copy
    if prob.ndim == 3 and prob.shape[0] == 1:
        prob = prob[0]
    if prob.ndim != 2 or prob.shape[0] != prob.shape[1] or prob.size == 0:
        raise ValueError(f"restore_mask: expected a square [S, S] probability map, got shape {prob.shape}")
    if height < 1 or width < 1:
        raise ValueError(f"restore_mask: bad target size {height}x{width}")
    side = max(height, width)
    if side > prob.shape[0]:
        restored = _upsample_cropped(prob, side, height, width)
    else:  # the square is at most S x S here: small, and torch's antialiased downsampling applies
        square = F.interpolate(
            torch.from_numpy(prob)[None, None],
            size=(side, side),
            mode="bilinear",
            align_corners=False,
            antialias=side < prob.shape[0],
        )
        restored = square[0, 0, :height, :width].numpy()
    return binarize(restored).view(np.uint8) * np.uint8(255)  # np.where(..., 255, 0) went through int64: 20x slower


def _upsample_cropped(prob: np.ndarray, side: int, height: int, width: int) -> np.ndarray:
    """The top-left height x width of `prob` bilinearly upsampled to side x side (align_corners=False,
    as `F.interpolate`), computed separably on those pixels only: memory ~ height x width."""
    top, bottom, row_weight = _bilinear_taps(prob.shape[0], side, height)
    left, right, col_weight = _bilinear_taps(prob.shape[1], side, width)
    rows = prob[top] * (1 - row_weight)[:, None] + prob[bottom] * row_weight[:, None]  # [height, S]
    out = rows[:, left]
    out *= 1 - col_weight
    far = rows[:, right]
    far *= col_weight
    out += far
    return out


def _bilinear_taps(size_in: int, side: int, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the first `keep` of `side` output pixels: the two source indices and the far one's weight."""
    source = np.maximum((np.arange(keep, dtype=np.float32) + 0.5) * np.float32(size_in / side) - 0.5, 0)
    near = source.astype(np.int64)
    far = np.minimum(near + 1, size_in - 1)
    return near, far, (source - near).astype(np.float32)


def to_8bit(image: np.ndarray) -> np.ndarray:
    """A decoded image for display: uint16 gray over the full range the preprocessing divides by
    (65535, so it shows what the model sees), uint8 as is."""
    return (image // 257).astype(np.uint8) if image.dtype == np.uint16 else image


def image_png(image: np.ndarray) -> bytes:
    """A decoded image (a DICOM frame too) as 8-bit PNG bytes: what a browser can draw."""
    buffer = io.BytesIO()
    Image.fromarray(to_8bit(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def mask_png(mask: np.ndarray) -> bytes:
    """A 0/255 uint8 mask [H, W] as PNG bytes: lossless and small (one lesion at 500x500: about 2 KB).

    zlib level 1: 1.2 ms against 2.4 ms at PIL's default (6) for 2.2 KB instead of 1.3 KB, per
    answer of the replica (measured 2026-12-02, one core)."""
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def lesion_of(mask: np.ndarray) -> dict:
    """Lesion area in pixels and its box [x0, y0, x1, y1] (x1, y1 exclusive), None when empty."""
    box = Image.fromarray(mask).getbbox()
    return {"area_px": int(np.count_nonzero(mask)), "bbox": list(box) if box else None}
