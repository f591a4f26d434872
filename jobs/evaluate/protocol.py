"""The header every cv, ablation and report table starts with: what was run, and where it is not the paper's.

The paper's numbers come from its preset (ResNet50 + SwinV2-B at 256 px), its recipe (Adam 1e-5,
batch 4), ImageNet-pretrained encoders, and (the authors' code) the epoch of lowest val loss. A
table printed beside the paper's rows says which of these it shares, so nobody compares a tiny
random-init run with Table 3 without being told.
"""

from __future__ import annotations

from jobs.train.config import PAPER_PROTOCOL

NAMES = {"preset": "preset", "recipe": "recipe", "pretrained": "weights", "select": "selection"}


def header(train: dict, protocol: str | None = None) -> list[str]:
    """Markdown lines: the run's preset, recipe, weights and selection (and cv protocol), then a warning
    line per choice that differs from the paper's. `train`: a TrainConfig as a dict (or a lineage's
    hyperparameters: a choice it does not record shows as "not recorded")."""
    used = {key: train.get(key) or "not recorded" for key in PAPER_PROTOCOL}
    shown = [f"{NAMES[key]} {value}" for key, value in used.items()]
    if protocol:
        shown.append(f"cv protocol {protocol}")
    lines = ["Run: " + ", ".join(shown) + "."]
    differ = [
        f"{NAMES[key]} {used[key]} (paper: {paper})" for key, paper in PAPER_PROTOCOL.items() if used[key] != paper
    ]
    if differ:
        lines.append("**Warning: not the paper's protocol**: " + "; ".join(differ) + ".")
    if used["select"] == "score":
        lines.append(
            "**Warning:** selection by score ranks classifier-only variants by val ROC-AUC alone and the others by "
            "mean(val ROC-AUC, val Dice): not one rule for every row; --select val_loss is."
        )
    return lines
