"""Search the loss weights w1, alpha, gamma with Ray Tune (ASHA), each trial a Ray Train run.

Ranges (uniform; each contains the paper's value): {ranges}.
ASHA stops weak trials after --grace-period epochs. Writes OUT/tune_results.csv and .json (trial, w1,
alpha, gamma, the validation metrics of each trial's best epoch), the trials' run folders under
OUT/trials/, Tune's own state under OUT/tune/, and the best trial's best checkpoint to OUT/best/.
An OUT holding a tune is refused unless --resume (as `busnet train`). The other flags are those of
`busnet train`.

example:
  busnet tune --data ./busnet-work/dataset --out ./busnet-work/tune --samples 4 --epochs 3 \\
      --lr 1e-3 --input-size 64
"""

from __future__ import annotations

import argparse

from jobs import tracking
from jobs.commands import config_file, resume
from jobs.commands.flags import add_flags, from_flags, show
from jobs.train.config import TrainConfig, TuneOptions
from models.loss_weights import SEARCH_RANGES

CONFIG_FILE = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ranges = (f"{name} in [{show(low)}, {show(high)}]" for name, (low, high) in SEARCH_RANGES.items())
    parser.description = parser.description.replace("{ranges}", ", ".join(ranges))
    add_flags(parser, TuneOptions)
    add_flags(parser, TrainConfig, skip=("name", "loss"))  # a trial's name and loss weights are Tune's
    add_flags(parser, resume.ResumeOptions)
    add_flags(parser, tracking.TrackingOptions)


def run(args: argparse.Namespace) -> dict:
    from jobs.data.dataset import open_dataset
    from jobs.train.tune import describe, tune_run

    effective = config_file.effective(args._parser, args)
    dataset = open_dataset(args.data)  # once, for the resume check and every trial
    resume.start(args.out, effective, dataset, resume=args.resume)
    config_file.announce("tune", effective)
    with tracking.session("tune", args.out, enabled=not args.no_track):
        base = from_flags(TrainConfig, args)
        outcome = tune_run(base, from_flags(TuneOptions, args), dataset=dataset)
    print(describe(outcome, base.metric))
    return {"out": args.out, "best": outcome.best_uri, "metrics": outcome.best}
