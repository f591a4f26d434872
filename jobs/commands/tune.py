"""Search the loss weights w1, alpha, gamma with Ray Tune (ASHA), each trial a Ray Train run.

Ranges: w1 in [1, 5], alpha in [0.25, 0.75], gamma in [0, 4] (they contain the paper's 3, 0.5, 2).
ASHA stops weak trials after --grace-period epochs. Writes OUT/tune_results.csv and .json (trial, w1,
alpha, gamma, the validation metrics of each trial's best epoch), the trials' run folders under
OUT/trials/, Tune's own state under OUT/tune/, and the best trial's best checkpoint to OUT/best/.
The other flags are those of `busnet train`.

example:
  busnet tune --data ./busnet-work/dataset --out ./busnet-work/tune --samples 4 --epochs 3 \\
      --lr 1e-3 --input-size 64
"""

from __future__ import annotations

import argparse

from jobs.commands.train import add_train_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=8, help="trials to run (default 8)")
    parser.add_argument("--max-concurrent", type=int, default=1, help="trials running at once (default 1)")
    parser.add_argument(
        "--search",
        default="random",
        choices=("random", "optuna", "hyperopt"),
        help="search algorithm (default random; hyperopt needs `pip install hyperopt`)",
    )
    parser.add_argument(
        "--grace-period", type=int, default=1, help="epochs every trial runs before ASHA may stop it (default 1)"
    )
    add_train_arguments(parser, tuned=True)


def run(args: argparse.Namespace) -> int | None:
    from jobs.train.driver import config_from_args
    from jobs.train.tune import TuneOptions, describe, tune_run

    options = TuneOptions(
        samples=args.samples, max_concurrent=args.max_concurrent, search=args.search, grace_period=args.grace_period
    )
    print(describe(tune_run(config_from_args(args), options), args.metric))
    return 0
