"""Train Hybrid-MT-ESTAN data-parallel on Ray Train (checkpoints per epoch, best published as best/).

Runs on the local Ray (or RAY_ADDRESS). Each epoch: training with kornia augmentation on the worker,
validation on the val split (or the held-out --fold) with every metric, a checkpoint in the run folder
OUT/NAME/ (the best --keep by --metric are kept); the best checkpoint ends up in OUT/NAME/best/.
Running again with the same --out and --name resumes after the last checkpoint.
Hyperparameter defaults (below) are the paper's: Adam --lr, --batch-size, --w1, --alpha, --gamma;
the paper's lr learns slowly on small data: short trials want a larger --lr.

example:
  busnet train --data ./busnet-work/dataset --out ./busnet-work/runs --name tiny1 --workers 2 \\
      --epochs 5 --lr 1e-3 --input-size 64
"""

from __future__ import annotations

import argparse

from jobs import tracking
from jobs.commands.flags import add_flags, from_flags
from jobs.errors import BusnetError
from jobs.train.config import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, TrainConfig)
    add_flags(parser, tracking.TrackingOptions)


def run(args: argparse.Namespace) -> int | None:
    from jobs.train.driver import train

    if args.name is not None and ("/" in args.name or not args.name.strip()):
        raise BusnetError(f"--name {args.name!r}: use a plain name without '/'")
    with tracking.session("train", args.out, enabled=not args.no_track):
        outcome = train(from_flags(TrainConfig, args))
    shown = ", ".join(
        f"{k}={v:.4g}" for k, v in outcome.best_metrics.items() if k.startswith("val_") and isinstance(v, float)
    )
    print(f"best checkpoint (epoch {outcome.best_metrics.get('epoch')}): {outcome.best_uri}")
    print(f"  {shown}")
    return 0
