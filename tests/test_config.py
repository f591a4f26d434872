"""One source per default: the CLI flags, the typed configs and what the worker and the loss use agree.

Nothing here states a default value itself: every expected value is read from the config it should
come from, so changing a default is one line in that config and these tests still pass, while a
flag, a conversion or a step that kept its own copy fails them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re

import cloudpickle
import pytest
import torch

from jobs.cli import build_parser
from jobs.commands.flags import from_flags, show
from jobs.train.config import RECIPES, SEARCHES, TrainConfig, TuneOptions
from models.loss_weights import SEARCH_RANGES, LossWeights
from models.presets import BASELINE, PRESETS, TABLE3_VARIANTS, VARIANTS


def _subparser(*names: str):
    parser = build_parser()
    for name in names:
        parser = next(a for a in parser._actions if a.dest in ("command", "benchmark")).choices[name]
    return parser


def _shown_default(parser, flag: str) -> str:
    """The "(default X)" of `flag` in the --help text the user reads."""
    text = " ".join(parser.format_help().split("options:", 1)[1].split())  # argparse wraps lines
    match = re.search(rf"{re.escape(flag)} \S+ (.*?)\(default:? ([^)]*)\)", text)
    assert match, f"{flag} shows no default in --help"
    return match.group(2)


def test_w1_is_one_value_from_help_through_the_worker_config_to_the_loss(synthetic_dataset, tmp_path):
    """`busnet train` without --w1: the help text, TrainConfig, the worker's config (as Ray pickles it),
    the lineage the worker writes and the loss the training step computes all use LossWeights().w1."""
    from jobs.data.augment import Augmenter
    from jobs.train.driver import loop_config, prepare
    from jobs.train.loop import train_loop_per_worker
    from jobs.train.step import train_step
    from models import build_model
    from models.losses import multitask_loss

    w1 = LossWeights().w1
    train = _subparser("train")
    assert float(_shown_default(train, "--w1")) == w1

    args = train.parse_args(["--data", synthetic_dataset, "--out", str(tmp_path), "--input-size", "64"])
    config = from_flags(TrainConfig, args)
    assert config.loss.w1 == TrainConfig(data="d", out="o").loss.w1 == w1

    bound = functools.partial(train_loop_per_worker, loop_config(config, prepare(config), "run"))
    worker = cloudpickle.loads(cloudpickle.dumps(bound)).args[0]  # what a Ray Train worker receives
    assert worker.train.loss.w1 == w1
    assert json.loads(json.dumps(worker.lineage))["hyperparameters"]["w1"] == w1

    torch.manual_seed(0)
    model = build_model(worker.train.preset, worker.train.variant, **worker.overrides).eval()  # no dropout
    batch = {
        "image": torch.randn(2, 3, 64, 64),
        "mask": (torch.rand(2, 1, 64, 64) > 0.7).float(),
        "has_mask": torch.tensor([True, True]),
        "label": torch.tensor([0.0, 1.0]),
    }
    images, masks = Augmenter(seed=1)(batch["image"], batch["mask"])  # the step's own augmentation, replayed
    with torch.no_grad():
        outputs = model(images)

    def expected(weights: LossWeights) -> float:
        return multitask_loss(outputs, batch["label"], masks, weights, has_mask=batch["has_mask"]).total.item()

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = train_step(model, optimizer, Augmenter(seed=1), batch, worker.train.loss).item()
    assert loss == pytest.approx(expected(LossWeights()), rel=1e-5)
    assert loss != pytest.approx(expected(dataclasses.replace(LossWeights(), w1=w1 + 1)), rel=1e-3)


def test_train_flags_are_the_config_fields_with_their_defaults_and_choices():
    train = _subparser("train")
    parsed = vars(train.parse_args(["--data", "d", "--out", "o"]))
    flat = {f.name: f.default for f in dataclasses.fields(LossWeights)}
    for field in dataclasses.fields(TrainConfig):
        if field.name in ("data", "out"):
            assert parsed[field.name] == field.name[0]
        elif field.name == "loss":
            assert {k: parsed[k] for k in flat} == flat
        elif "help" in field.metadata:
            assert parsed[field.name] == field.default, field.name
        else:
            assert field.name not in parsed  # test-only fields are no flags
    actions = {a.dest: a for a in train._actions}
    assert actions["preset"].choices == tuple(PRESETS) and actions["variant"].choices == (*VARIANTS, BASELINE)
    assert actions["data"].required and actions["out"].required
    shown_lr = _shown_default(train, "--lr")
    assert all(f"{recipe} {values['lr']:g}" in shown_lr for recipe, values in RECIPES.items())
    assert TrainConfig(data="d", out="o", recipe="paper").lr == RECIPES["paper"]["lr"] == 1e-5
    assert TrainConfig(data="d", out="o", recipe="paper", lr=1e-4).lr == 1e-4  # a given flag beats the recipe
    assert (show(1e-05), show(3.0), show(0.25), show(30)) == ("1e-5", "3", "0.25", "30")


def test_tune_flags_leave_the_loss_weights_to_the_search():
    tune = _subparser("tune")
    args = tune.parse_args(["--data", "d", "--out", "o"])
    assert not {"w1", "alpha", "gamma", "name"} & set(vars(args))
    assert from_flags(TrainConfig, args) == TrainConfig(data="d", out="o")
    assert from_flags(TuneOptions, args) == TuneOptions()
    assert {a.dest: a for a in tune._actions}["search"].choices == SEARCHES
    for name, (low, high) in SEARCH_RANGES.items():
        assert low <= getattr(LossWeights(), name) <= high  # the search contains the paper's value
        assert f"{name} in [" in tune.description
    narrowed = from_flags(
        TuneOptions, tune.parse_args(["--data", "d", "--out", "o", "--search-space", "gamma=0:1,w1=2:4"])
    )
    assert narrowed.ranges() == {**SEARCH_RANGES, "gamma": (0.0, 1.0), "w1": (2.0, 4.0)}


def test_bench_train_runs_trainings_defaults():
    args = vars(_subparser("bench", "train").parse_args([]))
    defaults = TrainConfig(data="d", out="o")
    assert {k: args[k] for k in ("preset", "variant", "input_size")} == {
        k: getattr(defaults, k) for k in ("preset", "variant", "input_size")
    }
    assert args["batch_size"] is None  # unset: the recipe's, resolved as training resolves it
    assert TrainConfig(data="d", out="o", batch_size=args["batch_size"]).batch_size == defaults.batch_size == 8


def test_serve_flags_are_the_replicas_settings():
    from serve.predictor import PRECISIONS as DTYPES
    from serve.settings import PRECISIONS, ServeSettings

    serve = _subparser("serve")
    args = serve.parse_args(["--checkpoint", "c"])
    settings = ServeSettings()
    assert args.max_batch_size == settings.max_batch_size
    assert args.batch_wait_ms / 1000 == pytest.approx(settings.batch_wait_timeout_s)
    assert args.precision == settings.precision
    assert {a.dest: a for a in serve._actions}["precision"].choices == PRECISIONS
    assert set(DTYPES) | {"auto"} == set(PRECISIONS)


def test_evaluate_flags_match_the_evaluate_function():
    from jobs.evaluate.run import evaluate

    args = _subparser("evaluate").parse_args(["--data", "d", "--checkpoint", "c", "--out", "o"])
    defaults = {k: p.default for k, p in inspect.signature(evaluate).parameters.items()}
    flag_of = {"split": "split", "fold": "fold", "threshold": "threshold", "n_bootstrap": "bootstrap"}
    flag_of |= {"seed": "seed", "batch_size": "batch_size", "specificity": "specificity"}
    assert {k: getattr(args, flag) for k, flag in flag_of.items()} == {k: defaults[k] for k in flag_of}


def test_metric_names_come_from_models_metrics():
    import numpy as np

    from jobs.evaluate.report import COLUMNS
    from jobs.train.driver import VAL_METRICS
    from jobs.train.tune import TABLE_METRICS
    from models.metrics import CLASSIFICATION_METRICS, METRICS, classification_metrics, segmentation_metrics

    assert tuple(classification_metrics([0, 1, 1], [0.2, 0.7, 0.4])) == CLASSIFICATION_METRICS
    assert CLASSIFICATION_METRICS + tuple(segmentation_metrics(np.ones((1, 4, 4)), np.ones((1, 4, 4)))) == METRICS
    assert tuple(k for k, _ in COLUMNS) == METRICS
    assert (*(f"val_{k}" for k in METRICS), "val_loss", "val_score") == VAL_METRICS
    assert set(TABLE_METRICS) < set(VAL_METRICS) and TrainConfig(data="d", out="o").metric in VAL_METRICS


def test_ablation_flags_are_cvs_without_what_each_variant_sets():
    from jobs.train.config import AblationOptions, CvOptions

    ablation = _subparser("ablation")
    args = ablation.parse_args(["--data", "d", "--out", "o"])
    assert not {"name", "variant", "backbone", "fold"} & set(vars(args))
    assert args.variants == AblationOptions().variants == ",".join((*TABLE3_VARIANTS, "hybrid_sgate"))
    assert TABLE3_VARIANTS == ("hybrid", "hybrid_noaaa", "mt_estan", "swin")  # the paper's Table 3 rows
    assert from_flags(TrainConfig, args) == TrainConfig(data="d", out="o")
    assert from_flags(CvOptions, args) == CvOptions()


def test_architecture_flags_reach_the_model():
    from models import build_model

    # the preset decides the network; the recipe only how the AAA gates start
    assert TrainConfig(data="d", out="o").architecture() == {"aaa_init": "open"}
    assert TrainConfig(data="d", out="o", recipe="paper").architecture() == {"aaa_init": "identity"}
    argv = ["--data", "d", "--out", "o", "--input-size", "64", "--aaa-gate", "spatial", "--fusion", "bottleneck"]
    config = from_flags(TrainConfig, _subparser("train").parse_args(argv))
    assert config.architecture() == {
        "input_size": 64,
        "aaa_gate": "spatial",
        "aaa_init": "open",
        "fusion": "bottleneck",
    }
    overrides = build_model(config.preset, config.variant, **config.architecture()).config["overrides"]
    assert overrides["aaa_gate"] == "spatial" and overrides["fusion"] == "bottleneck"
