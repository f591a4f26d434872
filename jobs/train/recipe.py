"""The training recipe's moving parts: optimizer, learning-rate schedule, weight EMA, model selection.

Each is a small function of the run's resolved `TrainConfig` so that the worker loop, the benchmark
and the tests build exactly the same thing. The schedule is a pure function of the step, so a
resumed run continues it from the epoch it starts at (no scheduler state to save).

Model selection (`selection_score`): the checkpoint a run publishes is the one with the best
*smoothed combined* score, `val_score` = the mean of val_auc and val_dsc (val_auc alone for a
classification-only variant), averaged over the last `smooth` epochs. Why: on a small validation
split one epoch's ROC-AUC jumps by 0.2-0.3 from a few images changing rank (BUSI, 65 val images:
0.51 -> 0.77 -> 0.51 -> 0.81 on consecutive epochs), and a classification-only score happily picks
an epoch whose masks are still blank. The mean of both tasks asks for a model that does both, and
the trailing average asks for an epoch in a good stretch of training rather than one lucky epoch.
"""

from __future__ import annotations

import math

import torch

from jobs.train.config import TrainConfig


def build_optimizer(model: torch.nn.Module, run: TrainConfig) -> torch.optim.Optimizer:
    """Adam (the paper's) or AdamW; AdamW decays only weights of rank >= 2 (not biases, norms, gates' biases).
    On CUDA the fused kernel updates every parameter in one launch; elsewhere torch picks its default."""
    fused = True if next(model.parameters()).is_cuda else None
    if run.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=run.lr, fused=fused)
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": run.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=run.lr, fused=fused)


def learning_rate(step: int, total_steps: int, run: TrainConfig, steps_per_epoch: int) -> float:
    """The learning rate of optimizer step `step` (0-based) out of `total_steps`.

    Linear warm-up from lr/25 over `warmup_epochs`, then `schedule`: "constant" (the paper's),
    "cosine" (down to lr/100 at the last step) or "onecycle" (linear down to lr/100: the second half of
    a one-cycle policy whose first half is the warm-up).
    """
    warmup = round(run.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return run.lr * (0.04 + 0.96 * step / warmup)
    if run.schedule == "constant":
        return run.lr
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup - 1))
    floor = run.lr / 100
    if run.schedule == "cosine":
        return floor + (run.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return run.lr + (floor - run.lr) * progress


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_gradients(model: torch.nn.Module, max_norm: float) -> None:
    """Clip the global gradient norm to `max_norm` (0 = off): one bad batch cannot throw the weights away."""
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def build_ema(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of the weights (and BatchNorm statistics), or None when `decay` is 0."""
    if decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def selection_score(metrics: dict, history: list[float], smooth: int) -> tuple[float, float]:
    """(this epoch's combined score, its mean with the previous `smooth - 1` epochs' scores in `history`)."""
    parts = [metrics["val_auc"]] + ([metrics["val_dsc"]] if "val_dsc" in metrics else [])
    raw = float(sum(parts) / len(parts))
    window = [*history, raw][-max(1, smooth) :]
    finite = [value for value in window if value == value]  # an undefined AUC (NaN) is left out
    return raw, float(sum(finite) / len(finite)) if finite else float("nan")


def should_stop(scores: list[float], patience: int) -> bool:
    """Early stopping: True when the last `patience` epochs have not beaten the best before them (0 = never)."""
    if patience <= 0 or len(scores) <= patience:
        return False
    before = [s for s in scores[:-patience] if s == s]
    recent = [s for s in scores[-patience:] if s == s]
    return bool(before) and (not recent or max(recent) <= max(before))
