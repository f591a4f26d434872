"""Pretrained encoder weights from local timm weight files or storage URIs; nothing is downloaded from a hub.

A file is a timm checkpoint of the encoder's timm architecture (e.g. `resnet50`,
`swinv2_base_window8_256`): safetensors, or a torch .pth/.pt/.bin read with `weights_only=True`
(never unpickled). Keys go through timm's own remapping for the model family. Shape mismatches and
missing or foreign keys fail with the file named; keys only timm's classifier uses are ignored.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from jobs import storage

log = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
StateDict = dict[str, torch.Tensor]


@dataclass
class LoadReport:
    """What was loaded from a weights file into an encoder."""

    source: str
    loaded: int  # tensors copied into the encoder
    ignored: list[str] = field(default_factory=list)  # classifier/final-norm keys the encoder has no use for


def read_state_dict(uri: str) -> StateDict:
    """Tensors of a weights file (local path, file:// or s3://, read through jobs.storage)."""
    name = uri.rstrip("/").rsplit("/", 1)[-1].lower()
    if not name.endswith((".safetensors", *TORCH_SUFFIXES)):
        raise ValueError(
            f"pretrained weights {uri}: unknown format, expected .safetensors or {'/'.join(TORCH_SUFFIXES)}"
        )
    data = _read_bytes(uri)
    try:
        if name.endswith(".safetensors"):
            from safetensors.torch import load

            state = load(data)
        else:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors, zip and unpickler errors have no common base
        raise ValueError(f"pretrained weights {uri}: not a readable weights file ({error})") from error
    for wrapper in ("state_dict", "model"):  # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained weights {uri}: expected a mapping of names to tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_weights(
    module: nn.Module,
    uri: str,
    *,
    component: str,
    filter_fn: Callable[[StateDict, nn.Module], StateDict] | None = None,
    ignore_prefixes: tuple[str, ...] = (),
) -> LoadReport:
    """Load `uri` into `module`: all of its weights or nothing.

    Every encoder key must be in the file with its shape, and every file key must be the encoder's
    or start with `ignore_prefixes` (timm's classifier): otherwise ValueError naming the file and
    examples of each problem (a deeper ResNet's file must not half-load into a shallower one).
    """
    state = read_state_dict(uri)
    if filter_fn is not None:
        state = filter_fn(state, module)
    own = module.state_dict()
    mismatched = [
        f"{key} file {tuple(state[key].shape)} vs model {tuple(mine.shape)}"
        for key, mine in own.items()
        if key in state and state[key].shape != mine.shape
    ]
    # BatchNorm fills num_batches_tracked itself when a file lacks it.
    missing = [key for key in own if key not in state and not key.endswith("num_batches_tracked")]
    extra = sorted(key for key in state if key not in own)
    unexpected = [key for key in extra if not key.startswith(ignore_prefixes)]
    if mismatched or missing or unexpected:
        raise ValueError(
            f"pretrained weights {uri} do not fit the {component}: "
            f"{len(mismatched)} shape mismatch(es){_examples(mismatched)}, "
            f"{len(missing)} missing key(s){_examples(missing)}, "
            f"{len(unexpected)} unexpected key(s){_examples(unexpected)}; "
            f"is it a timm checkpoint of the same architecture?"
        )
    module.load_state_dict({key: value for key, value in state.items() if key in own}, strict=False)
    report = LoadReport(source=uri, loaded=len(state) - len(extra), ignored=extra)
    log.info(
        "%s: loaded %d tensors from %s (%d classifier keys ignored)", component, report.loaded, uri, len(report.ignored)
    )
    return report


def _examples(keys: list[str], shown: int = 3) -> str:
    if not keys:
        return ""
    more = f", ... {len(keys) - shown} more" if len(keys) > shown else ""
    return " (" + "; ".join(keys[:shown]) + more + ")"


def _read_bytes(uri: str) -> bytes:
    storage.check_bucket(uri)  # a missing bucket or an unreachable store is said as such, not as a missing file
    if not storage.is_file(uri):
        raise ValueError(f"pretrained weights {uri}: no such file")
    return storage.read_bytes(uri)
