"""What a checkpoint needs beyond the model to resume training: optimizer state and epoch history.

Kept pickle-free like the model itself: the optimizer's tensors go to `optimizer.safetensors`, its
hyperparameters and non-tensor entries plus the epoch history to `train_state.json`. These two files
sit beside the model files in every checkpoint Ray Train keeps; the published `best/` leaves them out.
With a weight EMA (`--ema`) the checkpoint's model is the average, what validation scored and what
is served, and the trained weights themselves go to `trained.safetensors`, so that a resumed run
goes on training them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "train_state.json"
TRAINED_WEIGHTS_FILE = "trained.safetensors"
TRAIN_STATE_FILES = (OPTIMIZER_FILE, STATE_FILE)
RESUME_ONLY_FILES = (*TRAIN_STATE_FILES, TRAINED_WEIGHTS_FILE)  # never part of a published model


def save_trained_weights(directory: str | Path, model: torch.nn.Module) -> None:
    """The weights being trained, when the checkpoint's model is their EMA."""
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        str(Path(directory) / TRAINED_WEIGHTS_FILE),
    )


def load_trained_weights(directory: str | Path, model: torch.nn.Module) -> bool:
    """Load `trained.safetensors` into `model` when the checkpoint has one; says whether it had."""
    path = Path(directory) / TRAINED_WEIGHTS_FILE
    if not path.is_file():
        return False
    model.load_state_dict(load_file(str(path)))
    return True


def save_train_state(directory: str | Path, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Write the optimizer's state dict and `state` (JSON-serialisable) into `directory`."""
    directory = Path(directory)
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, object] = {}
    for index, entries in opt["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}/{key}"] = value
    save_file(tensors, str(directory / OPTIMIZER_FILE))
    document = {"state": state, "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars}}
    (directory / STATE_FILE).write_text(json.dumps(document, indent=1))


def load_train_state(directory: str | Path, optimizer: torch.optim.Optimizer) -> dict:
    """Restore the optimizer from `directory` and return the saved `state` dict."""
    directory = Path(directory)
    for name in TRAIN_STATE_FILES:
        if not (directory / name).is_file():
            raise ValueError(f"{directory / name}: missing; this checkpoint cannot resume training")
    document = json.loads((directory / STATE_FILE).read_text())
    per_param: dict[int, dict] = {}
    entries = {**load_file(str(directory / OPTIMIZER_FILE)), **document["optimizer"]["scalars"]}
    for flat_key, value in entries.items():
        index, key = flat_key.split("/", 1)
        per_param.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": document["optimizer"]["param_groups"]})
    return document["state"]
