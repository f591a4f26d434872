"""Pretrained encoder weights by name: `imagenet` (timm's published weights, through the Hugging Face
cache timm itself loads from), a weights folder (`busnet weights fetch`), or `none`.

`imagenet`: the file timm's `create_model(arch, pretrained=True)` would load, i.e. the
`model.safetensors` of the hub repository of timm's default pretrained tag for the architecture
(`timm.models.get_pretrained_cfg(arch).hf_hub_id`, e.g. timm/resnet26.bt_in1k), fetched with
`huggingface_hub.hf_hub_download` into the standard cache: HF_HOME, HF_HUB_OFFLINE and HF_ENDPOINT
(a mirror) are honoured as for any Hugging Face download. A machine online fetches it on first use.

A weights folder (local, file:// or s3://) holds `weights.json` ({"weights": {arch: {"name", "file",
"sha256"}}}) and the safetensors files it names: what `busnet weights fetch --out URI` publishes for
buckets and clusters without internet. Every file read is hashed; a folder's file must hash to the
sha256 its index records. Whatever the source, the loaded tensors must fill the encoder exactly
(`load_weights`): a missing key, a foreign key or a shape mismatch fails with the file named.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from jobs import storage

log = logging.getLogger(__name__)

IMAGENET, NONE = "imagenet", "none"
CHECKPOINT = "checkpoint"  # random init, silently: a checkpoint's weights are loaded next (load_checkpoint)
INDEX = "weights.json"
HUB_FILE = "model.safetensors"
StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class WeightFile:
    """One encoder's weights: its timm architecture, published name, where it was read, and its sha256."""

    arch: str
    name: str
    uri: str
    sha256: str = ""  # filled when read; a folder's index gives the one expected

    def record(self) -> dict:
        """What a checkpoint's lineage keeps of it."""
        return asdict(self)


def is_none(spec: str | None) -> bool:
    """No pretrained weights: None, "none" (both said in the log) or CHECKPOINT (silent)."""
    return spec is None or spec in (NONE, CHECKPOINT)


def imagenet_name(arch: str) -> str:
    """The hub name of timm's published ImageNet weights of `arch` (e.g. timm/resnet26.bt_in1k)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None or not cfg.hf_hub_id:
        raise ValueError(f"timm publishes no ImageNet weights for {arch!r} on the Hugging Face hub")
    return cfg.hf_hub_id


def locate(spec: str, arch: str) -> WeightFile:
    """Where `arch`'s weights are for `spec` ("imagenet" or a weights folder URI); ValueError when nowhere."""
    return _from_hub(arch) if spec == IMAGENET else _from_folder(spec, arch)


def _from_hub(arch: str) -> WeightFile:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError
    from timm.models._hub import hf_split

    name = imagenet_name(arch)
    repo, revision = hf_split(name)
    try:
        path = hf_hub_download(repo_id=repo, filename=HUB_FILE, revision=revision)
    except (EntryNotFoundError, HfHubHTTPError, OSError) as exc:  # LocalEntryNotFoundError is both
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") else ""
        raise ValueError(
            f"ImageNet weights {name} ({arch}) are not in the Hugging Face cache "
            f"{_hub_cache()} and could not be fetched{offline}: run `busnet weights fetch --out URI` "
            f"where the hub is reachable and pass --pretrained URI, or set HF_HOME to a mirror of that cache"
        ) from exc
    return WeightFile(arch=arch, name=name, uri=path)


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _from_folder(uri: str, arch: str) -> WeightFile:
    storage.check_bucket(uri)
    folder = storage.resolve(uri)
    index_uri = storage.join(folder, INDEX)
    if not storage.is_file(index_uri):
        raise ValueError(
            f"--pretrained {uri}: no {INDEX} there; give {IMAGENET}, {NONE} or a folder made by busnet weights fetch"
        )
    try:
        weights = json.loads(storage.read_bytes(index_uri))["weights"]
        entry = weights.get(arch)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{index_uri}: not a weights index ({exc})") from exc
    if entry is None:
        have = ", ".join(sorted(weights)) or "nothing"
        raise ValueError(
            f"{index_uri} has no weights for {arch} (it has {have}); fetch them with busnet weights fetch --out {uri}"
        )
    return WeightFile(arch=arch, name=entry["name"], uri=storage.join(folder, entry["file"]), sha256=entry["sha256"])


def read_weights(weights: WeightFile) -> tuple[StateDict, WeightFile]:
    """The tensors of a weights file and the file record with its sha256 (checked against an expected one)."""
    data = _read_bytes(weights.uri)
    digest = hashlib.sha256(data).hexdigest()
    if weights.sha256 and digest != weights.sha256:
        raise ValueError(
            f"pretrained weights {weights.uri}: sha256 {digest[:12]}... is not the {weights.sha256[:12]}... "
            f"its {INDEX} records (changed or truncated since it was fetched)"
        )
    return parse_state_dict(data, weights.uri), WeightFile(weights.arch, weights.name, weights.uri, digest)


def parse_state_dict(data: bytes, uri: str) -> StateDict:
    """Tensors of safetensors bytes (any other format is refused: never unpickled)."""
    from safetensors.torch import load

    try:
        state = load(data)
    except Exception as error:  # safetensors raises its own and builtin errors for bad headers
        raise ValueError(f"pretrained weights {uri}: not a readable safetensors file ({error})") from error
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_pretrained(
    module: nn.Module,
    weights: WeightFile,
    *,
    component: str,
    filter_fn: Callable[[StateDict, nn.Module], StateDict] | None = None,
    ignore_prefixes: tuple[str, ...] = (),
) -> WeightFile:
    """Read `weights` and load them into `module` (all or nothing); returns the record with its sha256."""
    state, weights = read_weights(weights)
    load_weights(module, state, source=weights.uri, component=component, filter_fn=filter_fn, ignore=ignore_prefixes)
    return weights


def load_weights(
    module: nn.Module,
    state: StateDict,
    *,
    source: str,
    component: str,
    filter_fn: Callable[[StateDict, nn.Module], StateDict] | None = None,
    ignore: tuple[str, ...] = (),
) -> None:
    """Load `state` (from `source`) into `module`: all of its weights or nothing.

    Every encoder key must be in the file with its shape, and every file key must be the encoder's
    or start with `ignore` (timm's classifier): otherwise ValueError naming the file and examples
    of each problem (a deeper ResNet's file must not half-load into a shallower one).
    """
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
    unexpected = [key for key in extra if not key.startswith(ignore)]
    if mismatched or missing or unexpected:
        raise ValueError(
            f"pretrained weights {source} do not fit the {component}: "
            f"{len(mismatched)} shape mismatch(es){_examples(mismatched)}, "
            f"{len(missing)} missing key(s){_examples(missing)}, "
            f"{len(unexpected)} unexpected key(s){_examples(unexpected)}; "
            f"is it a timm checkpoint of the same architecture?"
        )
    module.load_state_dict({key: value for key, value in state.items() if key in own}, strict=False)
    log.info("%s: loaded %d tensors from %s (%d classifier keys ignored)", component, len(own), source, len(extra))


def write_folder(directory: str, files: list[tuple[WeightFile, bytes]]) -> dict:
    """Write weight files and their `weights.json` into a local directory (publish it with
    jobs.storage.publish_dir); returns the index. Each file is named after its published name."""
    index = {"format_version": 1, "weights": {}}
    for weights, data in files:
        parse_state_dict(data, weights.uri)  # only readable safetensors files go in
        file = weights.name.rsplit("/", 1)[-1] + ".safetensors"
        with open(os.path.join(directory, file), "wb") as handle:
            handle.write(data)
        digest = hashlib.sha256(data).hexdigest()
        index["weights"][weights.arch] = {"name": weights.name, "file": file, "sha256": digest}
    with open(os.path.join(directory, INDEX), "w") as handle:
        json.dump(index, handle, indent=2)
    return index


def read_hub_file(arch: str) -> tuple[WeightFile, bytes]:
    """(record, bytes) of `arch`'s ImageNet weights from the hub cache (fetched there first when online)."""
    weights = _from_hub(arch)
    data = _read_bytes(weights.uri)
    return WeightFile(arch, weights.name, weights.uri, hashlib.sha256(data).hexdigest()), data


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


def no_published_weights(preset: str, arch: str, narrowed: dict) -> str:
    """The one line refusing ImageNet weights for an architecture a preset narrows (no such file exists)."""
    shape = ", ".join(f"{key}={value}" for key, value in narrowed.items())
    return (
        f"preset {preset!r} narrows timm's {arch} ({shape}): timm publishes no ImageNet weights for it; "
        f"use preset small or paper, or pretrained {NONE}"
    )
