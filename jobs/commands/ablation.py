"""Ablation: cross-validate each variant with the same recipe, one table beside the paper's Table 3.

Each variant of --variants (a Table 3 variant, or baseline:<timm name> for a Table 2 baseline such
as baseline:densenet121) runs `busnet cv` with the same flags into OUT/<variant>/ (a baseline into
OUT/baseline-<timm name>/); folds already trained and tested are reused, so running the same command
again with --resume goes on where it stopped. Then OUT/ablation.md, OUT/ablation.json and OUT/ablation.png: each
variant's mean +- sd over the folds per metric, beside the paper's rows. The other flags are those
of `busnet train`.

example:
  busnet ablation --data ./busnet-work/dataset --out ./busnet-work/ablation --folds 0,1 \\
      --variants mt_estan,hybrid,baseline:densenet121 --epochs 3 --lr 1e-3 --input-size 64
"""

from __future__ import annotations

import argparse

from jobs import tracking
from jobs.commands import config_file, resume
from jobs.commands.flags import add_flags, from_flags
from jobs.train.config import AblationOptions, CvOptions, TrainConfig

CONFIG_FILE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, AblationOptions)
    add_flags(parser, CvOptions)
    add_flags(parser, TrainConfig, skip=("name", "variant", "backbone", "fold"))  # set per variant and fold
    add_flags(parser, resume.ResumeOptions)
    add_flags(parser, tracking.TrackingOptions)


def run(args: argparse.Namespace) -> dict:
    from jobs.data.dataset import open_dataset
    from jobs.evaluate.ablation import render, run_ablation

    effective = config_file.effective(args._parser, args)
    resume.start(args.out, effective, open_dataset(args.data), resume=args.resume)
    config_file.announce("ablation", effective)
    with tracking.session("ablation", args.out, enabled=not args.no_track):
        outcome = run_ablation(from_flags(TrainConfig, args), from_flags(CvOptions, args), args.variants)
    print(render(outcome.table))
    print(f"table: {outcome.table_uri}")
    return {"table_uri": outcome.table_uri, "table": outcome.table}
