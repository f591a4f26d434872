"""A Hugging Face hub cache, as timm's `pretrained=True` reads it offline, filled with generated weights.

`HF_HOME/hub/models--timm--<name>/snapshots/<rev>/model.safetensors` plus `refs/main` holding
`<rev>`: the layout huggingface_hub writes when it downloads timm's published weights. The weights
are a randomly initialised timm model of the architecture (classifier included, as published), so
a test can check that exactly these tensors were loaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_name(arch: str) -> str:
    return timm.models.get_pretrained_cfg(arch).hf_hub_id


def cache_file(home: Path, arch: str) -> Path:
    repo = home / "hub" / f"models--{hub_name(arch).replace('/', '--')}"
    return repo / "snapshots" / REVISION / "model.safetensors"


def publish(home: Path, arch: str, seed: int, **kwargs) -> tuple[dict[str, torch.Tensor], str]:
    """Write `arch`'s generated weights into the cache at `home`; returns (tensors, sha256 of the file)."""
    torch.manual_seed(seed)
    weights = {k: v.contiguous() for k, v in timm.create_model(arch, pretrained=False, **kwargs).state_dict().items()}
    return weights, write(home, arch, weights)


def write(home: Path, arch: str, weights: dict[str, torch.Tensor]) -> str:
    path = cache_file(home, arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, path)
    refs = path.parents[2] / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text(REVISION)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def offline_env(home: Path) -> dict[str, str]:
    """The environment a process needs to read only this cache."""
    return {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}


def use_in_process(monkeypatch, home: Path) -> None:
    """Point this process's huggingface_hub at `home`, offline (it reads the environment once, at import)."""
    from huggingface_hub import constants

    for key, value in offline_env(home).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
