"""Checkpoints: one directory, local or in object storage, loadable with one call and no Ray.

    model.safetensors  weights only (never pickle)
    config.json        {"format_version": 1, "model": model.config, "preprocessing": {...},
                        "class_names": ["benign", "malignant"], "threshold": t, "temperature": T or null,
                        "weights_sha256": ...}
                       T: temperature scaling fitted on validation (models.calibration); the
                       probability is sigmoid(logit / T) and t is on that scale; null: uncalibrated (T = 1)
    metrics.json       what the trainer measured (NaN/inf written as null: strict JSON)
    lineage.json       the caller's lineage + "code_version" and "created_at" (UTC, ISO 8601)
    model_card.md      data, recipe, weights by sha256, metrics, intended use, limits (models.model_card),
                       generated from the three files above; loading does not need it

Published (jobs.storage.publish_dir), a checkpoint URI such as `<run>/best` holds one immutable
folder per publication, `versions/v-.../`, and a `_COMPLETE` pointer to the current one, swapped
only once the new version is whole. `load_checkpoint` reads the pointer once and loads only that
version, so replicas that load at any moment get one complete model, never a mix; a checkpoint
from before versions (the files directly in the folder) loads as before.

A model record from before a network change (no `network_version`: version 1) is read as the
network it described (models.presets.upgrade_model_config), so older checkpoints still load.
`load_checkpoint` trusts nothing: the weights must hash to `weights_sha256`, and the model that
config.json describes must have exactly the stored keys and shapes. Other files in the directory
(e.g. the trainer's optimizer state) are ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from jobs import storage
from models.calibration import check_temperature
from models.model_card import CARD, model_card
from models.network import build_model
from models.preprocess import Preprocessing
from models.presets import NetworkPreset, upgrade_model_config
from models.pretrained import CHECKPOINT

FORMAT_VERSION = 1
CLASS_NAMES = ["benign", "malignant"]
WEIGHTS, CONFIG, METRICS, LINEAGE = "model.safetensors", "config.json", "metrics.json", "lineage.json"
FILES = (CONFIG, WEIGHTS, METRICS, LINEAGE)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain network inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(
    model: nn.Module,
    directory: str | Path,
    *,
    preprocessing: Preprocessing | None = None,
    threshold: float = 0.5,
    temperature: float | None = None,
    metrics: dict | None = None,
    lineage: dict | None = None,
) -> Path:
    """Write the checkpoint files into a local directory (created if needed); returns its path.

    Publish it with jobs.storage.publish_dir (a new version each time). `preprocessing` defaults to
    ImageNet mean/std at the model's input size; it must match that size. `temperature`: the
    calibration fitted on validation (None: uncalibrated); `threshold` is on the probability it gives.
    """
    model = unwrap_model(model)
    model_config = getattr(model, "config", None)
    if not isinstance(model_config, dict):
        raise ValueError(f"{type(model).__name__} has no .config dict: build it with models.build_model")
    preprocessing = preprocessing or Preprocessing(size=model.input_size)
    if preprocessing.size != model.input_size:
        raise ValueError(
            f"preprocessing size {preprocessing.size} differs from the model's input size {model.input_size}"
        )
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold}")
    temperature = check_temperature(temperature)
    if storage.is_remote(str(directory)):
        raise ValueError(
            f"save_checkpoint writes a local directory, got {directory!r}: "
            "save locally, then publish with jobs.storage.publish_dir"
        )

    directory = storage.local_path(str(directory))
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    save_file(state, directory / WEIGHTS, metadata={"format": "pt"})
    config = {
        "format_version": FORMAT_VERSION,
        "model": model_config,
        "preprocessing": preprocessing.to_dict(),
        "class_names": CLASS_NAMES,
        "threshold": threshold,
        "temperature": temperature,
        "weights_sha256": _sha256(directory / WEIGHTS),
    }
    lineage = {
        **(lineage or {}),
        "code_version": code_version(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json(directory / METRICS, metrics or {})
    _write_json(directory / LINEAGE, lineage)
    _write_json(directory / CONFIG, config)
    card = model_card(model_config, metrics or {}, lineage, config["weights_sha256"], temperature)
    (directory / CARD).write_text(card, encoding="utf-8")
    return directory


def load_checkpoint(
    uri: str | Path, device: str | torch.device = "cpu", *, weights_sha256: str | None = None
) -> tuple[nn.Module, dict]:
    """(model in eval mode on `device`, config dict + "metrics", "lineage" and "version_uri") from a
    checkpoint directory.

    `uri`: a local path, file:// or a storage URI such as s3://bucket/run/best (jobs.storage); its
    pointer is read once, and config["version_uri"] names the version loaded. Batch workers get that
    version URI and the driver's `weights_sha256`, so they load exactly the model the driver checked
    and recorded, whatever is published meanwhile.
    Raises ValueError naming the file when one is missing, unreadable, tampered with or mismatched;
    jobs.errors.BusnetError (one line) when the store itself fails: no bucket, access denied, unreachable.
    """
    uri = str(uri).rstrip("/")
    if storage.is_remote(uri):
        storage.check_bucket(uri)
    uri = storage.resolve(uri)  # once: every file below comes from this one complete version
    if not storage.is_remote(uri):
        model, config = _load_local(storage.local_path(uri), uri, device)
    else:
        with tempfile.TemporaryDirectory(prefix="busnet-checkpoint-") as local:
            for name in FILES:  # only these: the trainer's optimizer state may sit beside them
                source = storage.join(uri, name)
                if storage.is_file(source):  # a missing one is named by _load_local
                    storage.download_file(source, Path(local) / name)
            model, config = _load_local(Path(local), uri, device)
    if weights_sha256 is not None and config["weights_sha256"] != weights_sha256:
        raise ValueError(f"{uri}: weights {config['weights_sha256'][:12]}, expected {weights_sha256[:12]}")
    config["version_uri"] = uri
    return model, config


def checkpoint_versions(uri: str | Path) -> list[dict]:
    """Every version of a published checkpoint, oldest first: {"version", "uri", "current",
    "complete", "metrics", "lineage"} (metrics and lineage None for an incomplete one).

    A checkpoint published before versions (its files directly in `uri`) is one version named "-".
    """
    uri = str(uri).rstrip("/")
    storage.check_bucket(uri)
    current = storage.resolve(uri) if storage.is_complete(uri) else None
    found = [(name, storage.join(uri, storage.VERSIONS_DIR, name), done) for name, done in storage.versions(uri)]
    if storage.is_file(storage.join(uri, CONFIG)):
        found.insert(0, ("-", uri, storage.is_complete(uri)))
    if not found:
        raise ValueError(f"{uri}: no checkpoint published here (no {CONFIG} and no {storage.VERSIONS_DIR}/)")
    rows = []
    for name, where, complete in found:
        row = {"version": name, "uri": where, "current": where == current, "complete": complete}
        for key, file in (("metrics", METRICS), ("lineage", LINEAGE)):
            row[key] = json.loads(storage.read_bytes(storage.join(where, file))) if complete else None
        rows.append(row)
    return rows


def _load_local(directory: Path, uri: str, device: str | torch.device) -> tuple[nn.Module, dict]:
    def where(name: str) -> str:
        return storage.join(uri, name)

    missing = [name for name in FILES if not (directory / name).is_file()]
    if missing:
        raise ValueError(f"{where(missing[0])}: missing; not a busnet checkpoint directory?")
    config = _read_json(directory / CONFIG, where(CONFIG))
    _check_config(config, where(CONFIG))
    digest = _sha256(directory / WEIGHTS)
    if digest != config["weights_sha256"]:
        raise ValueError(
            f"{where(WEIGHTS)}: sha256 {digest} differs from weights_sha256 "
            f"{config['weights_sha256']} in config.json: the weights were altered or corrupted"
        )
    try:  # a record from before a network change describes its network in today's terms
        spec = config["model"] = upgrade_model_config(config["model"])
        model = _rebuild(spec, (directory / WEIGHTS).stat().st_size)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{where(CONFIG)}: cannot rebuild the model it describes: {exc}") from exc
    try:
        state = load_file(directory / WEIGHTS)
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{where(WEIGHTS)}: not a readable safetensors file: {exc}") from exc
    _check_weights(model, state, where(WEIGHTS), spec)
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    config["metrics"] = _read_json(directory / METRICS, where(METRICS))
    config["lineage"] = _read_json(directory / LINEAGE, where(LINEAGE))
    return model, config


# What config.json's model record may set: the network's shape (NetworkPreset's fields), never an
# option of build_model that reads a file (pretrained_cnn, ...): config.json is not hashed, the weights are.
ARCHITECTURE_FIELDS = frozenset({f.name for f in dataclasses.fields(NetworkPreset)} | {"baseline_head"})


def _rebuild(spec: dict, weights_bytes: int) -> nn.Module:
    """The model a config.json record describes, refused (ValueError) before any memory is allocated
    when it is larger than its weights file could fill: built first on the meta device (no storage),
    its saved tensors must fit in `weights_bytes` at 2 bytes an element (fp16, the smallest busnet saves)."""
    overrides = spec.get("overrides") or {}
    if not isinstance(overrides, dict) or (foreign := sorted(set(overrides) - ARCHITECTURE_FIELDS)):
        shown = foreign if isinstance(overrides, dict) else type(overrides).__name__
        raise ValueError(
            f"overrides may set only architecture fields ({', '.join(sorted(ARCHITECTURE_FIELDS))}), got {shown}"
        )
    args = (spec["preset"], spec["variant"])
    # pretrained=CHECKPOINT: the checkpoint's weights replace every tensor, nothing else is read
    kwargs = {"backbone": spec.get("backbone"), "pretrained": CHECKPOINT, **overrides}
    network_log = logging.getLogger("models.network")
    level = network_log.level
    network_log.setLevel(logging.ERROR)  # "randomly initialised" is said once, by the real build below
    try:
        with torch.device("meta"):
            shape = build_model(*args, **kwargs)
    finally:
        network_log.setLevel(level)
    elements = sum(t.numel() for t in shape.state_dict().values())
    if 2 * elements > weights_bytes:
        raise ValueError(f"it describes {elements:,} weights, more than {WEIGHTS} ({weights_bytes:,} bytes) can hold")
    return build_model(*args, **kwargs)


def _check_config(config: dict, where: str) -> None:
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{where}: format_version {config.get('format_version')!r} is not {FORMAT_VERSION}")
    needed = ("model", "preprocessing", "class_names", "threshold", "weights_sha256")
    absent = [key for key in needed if key not in config]
    if absent:
        raise ValueError(f"{where}: missing key(s) {', '.join(absent)}")
    if not isinstance(config["model"], dict) or not {"preset", "variant"} <= config["model"].keys():
        raise ValueError(f'{where}: "model" must hold at least preset and variant, got {config["model"]!r}')
    try:
        Preprocessing.from_dict(config["preprocessing"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: bad preprocessing: {exc}") from exc
    try:  # absent in checkpoints from before calibration: uncalibrated
        check_temperature(config.get("temperature"))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _check_weights(model: nn.Module, state: dict[str, torch.Tensor], where: str, spec: dict) -> None:
    """Refuse weights that are not exactly the keys and shapes of the model config.json describes."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state.items()}
    problems = []
    if missing := sorted(expected.keys() - found.keys()):
        problems.append(f"{len(missing)} key(s) missing from the weights ({_some(missing)})")
    if unexpected := sorted(found.keys() - expected.keys()):
        problems.append(f"{len(unexpected)} unexpected key(s) ({_some(unexpected)})")
    if shapes := [
        f"{key} {found[key]} vs {expected[key]}"
        for key in sorted(expected.keys() & found.keys())
        if found[key] != expected[key]
    ]:
        problems.append(f"{len(shapes)} shape mismatch(es), weights vs model ({_some(shapes)})")
    if problems:
        raise ValueError(
            f"{where} does not fit the model config.json describes (preset {spec['preset']!r}, "
            f"variant {spec['variant']!r}, overrides {spec.get('overrides', {})}): " + "; ".join(problems)
        )


def _some(items: list[str], shown: int = 4) -> str:
    return ", ".join(items[:shown]) + (f", ... {len(items) - shown} more" if len(items) > shown else "")


@functools.cache
def code_version() -> dict[str, Any]:
    """{"busnet": package version, "git_commit": str|None, "git_dirty": bool|None}, read once per process."""
    try:
        version = metadata.version("busnet")
    except metadata.PackageNotFoundError:
        version = None
    commit = dirty = None
    source_root = Path(__file__).resolve().parents[1]
    try:
        top = _git(source_root, "rev-parse", "--show-toplevel")
        if top is not None and Path(top).resolve() == source_root:  # our own repository, not an enclosing one
            commit = _git(source_root, "rev-parse", "HEAD")
            status = _git(source_root, "status", "--porcelain", "--untracked-files=no")
            dirty = None if status is None else bool(status)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung: the version is still useful
        pass
    return {"busnet": version, "git_commit": commit, "git_dirty": dirty}


def _git(cwd: Path, *args: str) -> str | None:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _strict_json(value: Any) -> Any:
    """NaN/inf -> None and numpy/torch scalars -> Python numbers, recursively."""
    if isinstance(value, dict):
        return {str(key): _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.ndim == 0):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(_strict_json(value), indent=2, allow_nan=False) + "\n")


def _read_json(path: Path, where: str) -> dict:
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where}: not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value
