"""The model a replica serves, and the path from image bytes to the JSON answer.

No Ray here: loading, preprocessing, the batched forward pass and postprocessing are plain
functions, so they run the same in a replica, in `busnet bench serve` and in a notebook. The
preprocessing is `models.preprocess`, the one training used; the forward pass is
`models.inference.predict`, the one validation and evaluation use, with the checkpoint's temperature
(the served probability is the calibrated one its threshold is on); and the mask goes back to the
input's own size through the preprocessing's inverse, `restore_mask`.

Errors stay with their request: `forward_batch` gives each item its outputs or its own exception,
and `answer_batch` (what a replica runs per batch) adds each item's answer (`answer`: mask
restoring and encoding) or the exception that stopped it.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from models.calibration import temperature_of
from models.inference import predict
from models.preprocess import (
    MAX_PIXELS,
    Preprocessing,
    decode_image,
    image_png,
    lesion_of,
    mask_png,
    preprocess_image,
    restore_mask,
)

Loader = Callable[..., "tuple[torch.nn.Module, dict]"]
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Building a model traces part of it with torch.fx (timm's feature extractor), which patches
# torch.nn.Module.__call__ for the whole process while it runs: a forward pass in another thread at
# that moment fails ("module is not installed as a submodule"). So during a model swap the build
# and the forward passes of the model being served take turns; the download happens before.
_TORCH_TURNS = threading.Lock()


@dataclass(frozen=True)
class LoadedModel:
    """One checkpoint in memory: what a request is preprocessed for and run on."""

    model: torch.nn.Module
    config: dict
    uri: str
    preprocessing: Preprocessing
    threshold: float  # on the calibrated probability, as config.json stores it
    temperature: float  # the checkpoint's calibration (models.calibration); 1.0: uncalibrated
    device: torch.device
    dtype: torch.dtype

    @property
    def info(self) -> dict:
        """The `model` field of every answer: which network and which weights said it."""
        network = self.config.get("model", {})
        sha = self.config.get("weights_sha256", "")
        return {
            "name": f"baseline/{network['backbone']}"
            if network.get("backbone")
            else f"hybrid-mt-estan/{network.get('variant', '?')}",
            "preset": network.get("preset"),
            "version": sha[:12],
            "sha256": sha,
            "created_at": self.config.get("lineage", {}).get("created_at"),
        }


@dataclass(frozen=True)
class PreparedImage:
    """A decoded, preprocessed request: the network input plus the size to restore the mask to."""

    tensor: np.ndarray  # float32 [3, S, S]
    height: int
    width: int


# One image's network outputs: malignant probability, lesion probability map [S, S] (None without a
# segmentation head).
Prediction = tuple[float, "np.ndarray | None"]


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on a GPU that has it, else fp16 on GPU, fp32 on CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto, {', '.join(PRECISIONS)}; got {precision!r}")
    if precision != "fp32" and device.type != "cuda":
        raise ValueError(f"precision {precision} needs a GPU replica (serve with --gpu)")
    return PRECISIONS[precision]


def load_model(uri: str, loader: Loader, device: torch.device, precision: str = "auto") -> LoadedModel:
    """Load a checkpoint and run one warm-up forward pass, so a model that loads but cannot run
    fails here (and the model being served stays) rather than on the first request."""
    from jobs.storage import resolve

    dtype = resolve_dtype(precision, device)
    # The `_COMPLETE` pointer is read once: only that complete version is fetched, so a replica
    # that (re)starts during a publish loads the old model or the new one, as its siblings do.
    with _local_copy(resolve(uri)) as local, _TORCH_TURNS:
        model, config = loader(local, device=str(device))
    loaded = LoadedModel(
        model=model,
        config=config,
        uri=uri,
        preprocessing=Preprocessing.from_dict(config["preprocessing"]),
        threshold=float(config.get("threshold", 0.5)),
        temperature=temperature_of(config),
        device=device,
        dtype=dtype,
    )
    size = loaded.preprocessing.size
    forward(loaded, np.zeros((1, 3, size, size), np.float32))
    return loaded


@contextmanager
def _local_copy(uri: str) -> Iterator[str]:
    """A remote checkpoint is downloaded to a temporary folder first (outside the lock above)."""
    from jobs.storage import is_remote, local_dir_for

    if not is_remote(uri):
        yield uri
        return
    with local_dir_for(uri) as local:
        yield str(local)


def prepare(data: bytes, loaded: LoadedModel, max_pixels: int = MAX_PIXELS, frame: int | None = None) -> PreparedImage:
    """Decode and preprocess one request body (`frame`: of a multi-frame DICOM); raises
    `models.preprocess.ImageError` on bad input."""
    image = decode_image(data, max_pixels=max_pixels, frame=frame)
    height, width = image.shape[:2]
    return PreparedImage(preprocess_image(image, loaded.preprocessing), height, width)


def preview(data: bytes, max_pixels: int = MAX_PIXELS, frame: int | None = None) -> bytes:
    """The request body's image (`frame`: of a multi-frame DICOM) as 8-bit PNG, for a browser that
    cannot decode it (DICOM); raises `models.preprocess.ImageError` on bad input."""
    return image_png(decode_image(data, max_pixels=max_pixels, frame=frame))


def forward(loaded: LoadedModel, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """One batched forward pass at the replica's precision: malignant probabilities [B] and lesion
    probability maps [B,S,S] (None for a network without a segmentation head)."""
    with _TORCH_TURNS:
        prediction = predict(loaded.model, images, loaded.device, loaded.dtype, loaded.temperature)
    return prediction.probs, prediction.mask_probs


def answer(loaded: LoadedModel, prediction: Prediction, image: PreparedImage) -> dict:
    """The JSON answer (the HTTP API of the top README.md) for one image."""
    probability, mask_prob = prediction
    label = "malignant" if probability >= loaded.threshold else "benign"
    mask_png, lesion = None, {"area_px": None, "bbox": None}
    if mask_prob is not None:
        mask = restore_mask(mask_prob, image.height, image.width)
        mask_png, lesion = encode_mask(mask), lesion_of(mask)
    return {
        "label": label,
        "malignant_probability": probability,
        "threshold": loaded.threshold,
        "mask_png": mask_png,
        "lesion": lesion,
        "model": loaded.info,
    }


def encode_mask(mask: np.ndarray) -> str:
    """A 0/255 mask as base64 PNG text."""
    return base64.b64encode(mask_png(mask)).decode("ascii")


def answer_batch(items: list[tuple[LoadedModel, PreparedImage]]) -> list[dict | Exception]:
    """The JSON answers of a batch, in order: one forward pass, then each item's mask restored and
    encoded, one at a time (so at most one full-size mask is in memory)."""
    answers: list[dict | Exception] = []
    for (loaded, image), prediction in zip(items, forward_batch(items)):
        try:
            answers.append(prediction if isinstance(prediction, Exception) else answer(loaded, prediction, image))
        except Exception as exc:  # noqa: BLE001 - handed to the request it belongs to
            answers.append(exc)
    return answers


def forward_batch(items: list[tuple[LoadedModel, PreparedImage]]) -> list[Prediction | Exception]:
    """Network outputs for a batch, in order, each item's or the exception that stopped it. Requests
    prepared for different models (a swap happened between preprocessing and batching) each run on
    the model they were prepared for."""
    groups: dict[int, list[int]] = {}
    for index, (loaded, _) in enumerate(items):
        groups.setdefault(id(loaded), []).append(index)
    results: dict[int, Prediction | Exception] = {}
    for indices in groups.values():
        results.update(zip(indices, _forward_group([items[i] for i in indices])))
    return [results[index] for index in range(len(items))]


def _forward_group(items: list[tuple[LoadedModel, PreparedImage]]) -> list[Prediction | Exception]:
    """One model's items in one pass; if that fails, one pass per item, so only the culprit fails."""
    loaded = items[0][0]
    try:
        probs, masks = forward(loaded, np.stack([image.tensor for _, image in items]))
    except Exception as exc:  # noqa: BLE001 - handed to the request it belongs to
        if len(items) == 1:
            return [exc]
        return [result for item in items for result in _forward_group([item])]
    return [(float(probs[row]), None if masks is None else masks[row]) for row in range(len(items))]
