"""Train Hybrid-MT-ESTAN data-parallel on Ray Train (checkpoints per epoch, best published as best/).

Runs on the local Ray (or RAY_ADDRESS). Each epoch: training with kornia augmentation on the worker,
validation on the val split (or the held-out --fold) with every metric, a checkpoint in the run folder
OUT/NAME/ (the best --keep by --metric are kept); the best checkpoint ends up in OUT/NAME/best/.
Running again with the same --out and --name resumes after the last checkpoint.
Hyperparameter defaults are the paper's (Adam lr 1e-5, batch 4, w1 3, alpha 0.5, gamma 2); lr 1e-5
learns slowly on small data: short trials want a larger --lr.

example:
  busnet train --data ./busnet-work/dataset --out ./busnet-work/runs --name tiny1 --workers 2 \\
      --epochs 5 --lr 1e-3 --input-size 64
"""

from __future__ import annotations

import argparse

from jobs.errors import BusnetError


def add_train_arguments(parser: argparse.ArgumentParser, *, tuned: bool = False) -> None:
    """Flags shared by `busnet train` and `busnet tune` (tune searches w1/alpha/gamma itself)."""
    parser.add_argument("--data", required=True, help="dataset URI (path, file:// or s3://) made by busnet ingest")
    parser.add_argument("--out", required=True, help="output URI: runs go to OUT/NAME/")
    parser.add_argument(
        "--preset", default="tiny", choices=("tiny", "small", "paper"), help="network size (default tiny)"
    )
    parser.add_argument(
        "--variant",
        default="hybrid",
        choices=("hybrid", "hybrid_noaaa", "mt_estan", "swin"),
        help="network variant of the paper's ablation (default hybrid)",
    )
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (data-parallel, default 1)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL, bf16 autocast)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs reserved per worker (default 1)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs (default 30; the paper gives none)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per worker and step (default 4)")
    parser.add_argument("--lr", type=float, default=1e-5, help="Adam learning rate (default 1e-5)")
    if not tuned:
        parser.add_argument("--w1", type=float, default=3.0, help="focal loss weight in w1*Focal + Dice (default 3)")
        parser.add_argument("--alpha", type=float, default=0.5, help="focal loss alpha (default 0.5)")
        parser.add_argument("--gamma", type=float, default=2.0, help="focal loss gamma (default 2)")
    parser.add_argument(
        "--fold",
        type=int,
        default=None,
        help="hold out fold K of train+val for validation (default: the stored val split)",
    )
    parser.add_argument("--pretrained-cnn", default=None, help="timm ResNet weight file (path or URI)")
    parser.add_argument("--pretrained-swin", default=None, help="timm Swin V2 weight file (path or URI)")
    parser.add_argument("--input-size", type=int, default=None, help="input side in pixels (default: the preset's)")
    parser.add_argument("--keep", type=int, default=3, help="checkpoints kept per run, best by --metric (default 3)")
    parser.add_argument(
        "--metric", default="val_auc", help="validation metric that picks the best checkpoint (default val_auc)"
    )
    parser.add_argument(
        "--max-failures",
        type=int,
        default=2,
        help="worker group restarts from the last checkpoint before giving up (default 2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=None, help="run name; reuse it to resume (default: run-<time>)")
    add_train_arguments(parser)


def run(args: argparse.Namespace) -> int | None:
    from jobs.train.driver import config_from_args, train

    if args.name is not None and ("/" in args.name or not args.name.strip()):
        raise BusnetError(f"--name {args.name!r}: use a plain name without '/'")
    outcome = train(config_from_args(args))
    shown = ", ".join(
        f"{k}={v:.4g}" for k, v in outcome.best_metrics.items() if k.startswith("val_") and isinstance(v, float)
    )
    print(f"best checkpoint (epoch {outcome.best_metrics.get('epoch')}): {outcome.best_uri}")
    print(f"  {shown}")
    return 0
