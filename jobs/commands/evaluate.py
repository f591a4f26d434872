"""Evaluate a checkpoint on a dataset split: Table 2's metrics with bootstrap 95% CIs, and a report.

Runs the split through the model as Ray Data batch inference (one model per actor), then writes to
--out: metrics.json (overall and per source dataset, with intervals, at the decision threshold and
at the paper's 0.5, "paper protocol"), predictions.csv (one row per image), report.md (the table in
the paper's units beside the paper's row; the paper's AUC is "AUC (hard, paper)" = (Sens + Spec) / 2,
ROC-AUC beside it) and roc.png, confusion.png, overlays.png (best and worst segmentations).

example: busnet evaluate --data runs/data --checkpoint runs/train/demo/best --out runs/eval
"""

from __future__ import annotations

import argparse
import sys

from jobs import tracking
from jobs.commands.flags import add_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset URI (path, file://, s3://) made by busnet ingest")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory URI (e.g. a run's best/)")
    parser.add_argument("--out", required=True, help="folder or storage URI for the report files")
    parser.add_argument(
        "--split", default="test", choices=("train", "val", "test"), help="split to evaluate (default: test)"
    )
    parser.add_argument(
        "--fold", type=int, default=None, help="cross-validation fold K: --split val is then fold K's held-out part"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="decision threshold on the malignant probability (default: the checkpoint's); the paper's 0.5 is "
        "always reported too",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="bootstrap resamples for the 95%% intervals; 0 turns them off (default: 1000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--batch-size", type=int, default=16, help="inference batch size (default: 16)")
    add_flags(parser, tracking.TrackingOptions)


def run(args: argparse.Namespace) -> int | None:
    from jobs.evaluate.report import render_summary
    from jobs.evaluate.run import evaluate

    with tracking.session("evaluate", args.out, enabled=not args.no_track):
        metrics = evaluate(
            args.data,
            args.checkpoint,
            args.out,
            split=args.split,
            fold=args.fold,
            threshold=args.threshold,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=lambda message: print(f"busnet evaluate: {message}", file=sys.stderr, flush=True),
        )
    print(render_summary(metrics))
    return 0
