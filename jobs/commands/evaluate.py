"""Evaluate a checkpoint on a dataset split: Table 2's metrics with bootstrap 95% CIs, and a report.

Runs the split through the model as Ray Data batch inference (one model per actor), then writes to
--out: metrics.json (overall and per source dataset, with intervals, at the decision threshold and
at the paper's 0.5, "paper protocol"), predictions.csv (one row per image), report.md (the table in
the paper's units beside the paper's row; the paper's AUC is "AUC (hard, paper)" = (Sens + Spec) / 2,
ROC-AUC beside it; the calibration error before and after the checkpoint's temperature, and the
sensitivity at --specificity with the threshold that gives it) and roc.png, confusion.png,
reliability.png, overlays.png (best and worst segmentations).

example:
  busnet evaluate --data runs/data --checkpoint runs/train/demo/best --out runs/eval
"""

from __future__ import annotations

import argparse
import sys

from jobs import tracking
from jobs.commands.flags import add_flags, from_flags
from jobs.commands.options import EvaluateOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, EvaluateOptions)
    add_flags(parser, tracking.TrackingOptions)


def run(args: argparse.Namespace) -> dict:
    from jobs.evaluate.report import render_summary
    from jobs.evaluate.run import evaluate

    options = from_flags(EvaluateOptions, args)
    with tracking.session("evaluate", options.out, enabled=not args.no_track):
        metrics = evaluate(
            options.data,
            options.checkpoint,
            options.out,
            split=options.split,
            fold=options.fold,
            threshold=options.threshold,
            specificity=options.specificity,
            n_bootstrap=options.bootstrap,
            seed=options.seed,
            batch_size=options.batch_size,
            progress=lambda message: print(f"busnet evaluate: {message}", file=sys.stderr, flush=True),
        )
    print(render_summary(metrics))
    return {"report": options.out, "metrics": metrics}
