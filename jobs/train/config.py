"""Typed configs of training, tuning, cross-validation and ablation: every default once, the CLI flags from them.

`busnet train` and `busnet tune` build their flags from these fields (`jobs.commands.flags`: the
metadata holds the help text and choices), the driver checks and runs a `TrainConfig`, and each Ray
Train worker receives a frozen `LoopConfig` (Ray pickles it). Nothing here imports torch or Ray:
`busnet --help` reads these classes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jobs.runtime import VERBOSE_HELP
from models.loss_weights import SEARCH_RANGES, LossWeights
from models.presets import (
    AAA_GATES,
    AAA_INITS,
    AAA_PLACEMENTS,
    BASELINE,
    BASELINE_HEADS,
    BASELINES,
    FUSIONS,
    PRESETS,
    TABLE3_VARIANTS,
    VARIANTS,
)

if TYPE_CHECKING:
    from jobs.data.cache import DecodedSplit, StreamedSplit

ARCHITECTURE_OPTIONS = ("aaa_placement", "aaa_gate", "aaa_init", "fusion")  # models.presets.NetworkPreset fields
SEARCHES = ("random", "optuna", "hyperopt")  # Ray Tune search algorithms (jobs.train.tune)
OPTIMIZERS = ("adam", "adamw")
CACHES = ("auto", "memory", "stream")  # jobs.train.driver.decode_splits
SCHEDULES = ("cosine", "onecycle", "constant")  # jobs.train.recipe.learning_rate
DICE_OVER = ("image", "batch")  # models.losses.dice_loss(per_image=...)
# How the published epoch is chosen: the lowest val loss (the authors' code), or the smoothed val_score
# (jobs.train.recipe.selection_score). The Ray metric each one ranks checkpoints by:
SELECTIONS = {"val_loss": "val_loss", "score": "val_score"}
CV_PROTOCOLS = ("kfold", "split")  # jobs.evaluate.cv

# The recipes `--recipe` names: the values of the fields left unset (None). "busnet" is ours: a
# one-epoch warm-up, cosine decay and gradient clipping make lr 1e-3 safe for randomly initialised
# networks, where the paper's 1e-5 barely moves the tiny preset in the epochs a CPU affords (see
# jobs/README.md); "paper" is section 3.3 as printed: Adam 1e-5, batch 4, nothing else, from timm's
# ImageNet weights, the epoch of lowest val loss published (the authors' code).
RECIPES: dict[str, dict[str, float | int | str]] = {
    "busnet": {
        "lr": 1e-3,
        "batch_size": 8,
        "schedule": "cosine",
        "warmup_epochs": 1.0,
        "clip_grad": 1.0,
        "patience": 10,
        "dice": "batch",
        "pretrained": "none",
        "select": "score",
        # From random weights the gates' eq. 7 start (0.88 each) trained better: demo seed 0, test
        # ROC-AUC 0.955 against 0.890 with identity gates (2026-12-07); identity keeps pretrained features.
        "aaa_init": "open",
    },
    "paper": {
        "lr": 1e-5,
        "batch_size": 4,
        "schedule": "constant",
        "warmup_epochs": 0.0,
        "clip_grad": 0.0,
        "patience": 0,
        "dice": "batch",
        "pretrained": "imagenet",
        "select": "val_loss",
        "aaa_init": "identity",
    },
}
PAPER_PROTOCOL = {"preset": "paper", "recipe": "paper", "pretrained": "imagenet", "select": "val_loss"}


def _recipes_say(name: str) -> str:
    """The "(default: ...)" text of a field the recipe fills: each recipe's value."""
    return "the recipe's: " + ", ".join(
        f"{recipe} {values[name]:g}" if not isinstance(values[name], str) else f"{recipe} {values[name]}"
        for recipe, values in RECIPES.items()
    )


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run. Hyperparameter defaults are the paper's (3.3); `epochs` is ours (not stated)."""

    name: str | None = field(
        default=None, metadata={"help": "run name (an existing run needs --resume)", "unset": "run-<time>"}
    )
    data: str = field(metadata={"help": "dataset URI (path, file:// or s3://) made by busnet ingest"})
    out: str = field(metadata={"help": "output folder (path, file:// or s3://); what goes where: above"})
    preset: str = field(default="tiny", metadata={"help": "network size", "choices": tuple(PRESETS)})
    variant: str = field(
        default="hybrid",
        metadata={
            "help": f"network variant of the paper's ablation (Table 3), or {BASELINE}: a Table 2 baseline",
            "choices": (*VARIANTS, BASELINE),
        },
    )
    backbone: str | None = field(
        default=None,
        metadata={
            "help": f"timm model of --variant {BASELINE}, e.g. {', '.join(BASELINES[:3])}",
            "unset": "none",
        },
    )
    workers: int = field(default=1, metadata={"help": "Ray Train workers, data-parallel"})
    gpu: bool = field(default=False, metadata={"help": "one GPU per worker (NCCL, bf16 autocast)"})
    cpus_per_worker: float = field(default=1.0, metadata={"help": "CPUs reserved per worker"})
    compile: bool = field(
        default=False,
        metadata={"help": "torch.compile the model (worth it on a GPU: a one-off compile of a minute or more)"},
    )
    epochs: int = field(default=30, metadata={"help": "epochs (at most: see --patience); the paper gives none"})
    recipe: str = field(
        default="busnet",
        metadata={"help": "where the unset training options below come from", "choices": tuple(RECIPES)},
    )
    batch_size: int | None = field(
        default=None, metadata={"help": "images per worker and step", "unset": _recipes_say("batch_size")}
    )
    lr: float | None = field(default=None, metadata={"help": "peak learning rate", "unset": _recipes_say("lr")})
    optimizer: str = field(default="adam", metadata={"help": "Adam (the paper's) or AdamW", "choices": OPTIMIZERS})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW's decoupled weight decay"})
    schedule: str | None = field(
        default=None,
        metadata={"help": "learning rate after the warm-up", "choices": SCHEDULES, "unset": _recipes_say("schedule")},
    )
    warmup_epochs: float | None = field(
        default=None,
        metadata={"help": "linear learning-rate warm-up from lr/25, in epochs", "unset": _recipes_say("warmup_epochs")},
    )
    clip_grad: float | None = field(
        default=None, metadata={"help": "clip the gradient norm to this; 0 = off", "unset": _recipes_say("clip_grad")}
    )
    ema: float = field(
        default=0.0,
        metadata={"help": "decay of an exponential moving average of the weights, validated and saved; 0 = off"},
    )
    balance_classes: bool = field(
        default=False,
        metadata={"help": "set the focal loss alpha to the benign share of the training split (class weights)"},
    )
    patience: int | None = field(
        default=None,
        metadata={
            "help": "stop after this many epochs without a better smoothed val_score; 0 = never",
            "unset": _recipes_say("patience"),
        },
    )
    dice: str | None = field(
        default=None,
        metadata={
            "help": "the Dice loss over each image (as Dice is reported) or over the whole batch (the authors' code)",
            "choices": DICE_OVER,
            "unset": _recipes_say("dice"),
        },
    )
    loss: LossWeights = field(default_factory=LossWeights)
    fold: int | None = field(
        default=None,
        metadata={"help": "hold out fold K of train+val for validation", "unset": "the stored val split"},
    )
    pretrained: str | None = field(
        default=None,
        metadata={
            "help": "encoder weights: imagenet (timm's published weights, Hugging Face cache), "
            "a folder URI made by busnet weights fetch, or none (random)",
            "unset": _recipes_say("pretrained"),
        },
    )
    input_size: int | None = field(default=None, metadata={"help": "input side in pixels", "unset": "the preset's"})
    aaa_placement: str | None = field(
        default=None,
        metadata={
            "help": "where AAA blocks sit in the Swin encoder",
            "choices": AAA_PLACEMENTS,
            "unset": "the preset's",
        },
    )
    aaa_gate: str | None = field(
        default=None,
        metadata={
            "help": "AAA's sigmoid gate: per channel or one spatial map",
            "choices": AAA_GATES,
            "unset": "the preset's",
        },
    )
    aaa_init: str | None = field(
        default=None,
        metadata={
            "help": "how AAA gates start: identity (exactly 1) or open (eq. 7 with bias +2: 0.88 each)",
            "choices": AAA_INITS,
            "unset": _recipes_say("aaa_init"),
        },
    )
    fusion: str | None = field(
        default=None,
        metadata={"help": "where Swin maps join the decoder", "choices": FUSIONS, "unset": "the preset's"},
    )
    cache: str = field(
        default="auto",
        metadata={
            "help": "decode the splits once into Ray's object store (memory) or from Parquet every epoch (stream); "
            "auto: memory when they fit in half the cluster's object store",
            "choices": CACHES,
        },
    )
    baseline_head: str | None = field(
        default=None,
        metadata={
            "help": f"the {BASELINE} variant's head: Dense 1, or the authors' (512, dropout 0.3, 64, 1)",
            "choices": BASELINE_HEADS,
            "unset": "linear",
        },
    )
    calibrate: bool = field(
        default=True,
        metadata={
            "help": "fit a temperature on the validation split for each checkpoint (the probability becomes "
            "sigmoid(logit / T), the threshold moves with it); --no-calibrate keeps the network's own sigmoid"
        },
    )
    keep: int = field(default=3, metadata={"help": "checkpoints kept per run, best by --select"})
    select: str | None = field(
        default=None,
        metadata={
            "help": "the published epoch: lowest val loss (the authors'), or best score (see --smooth)",
            "choices": tuple(SELECTIONS),
            "unset": _recipes_say("select"),
        },
    )
    smooth: int = field(
        default=3,
        metadata={"help": "score = mean(val_auc, val_dsc) (val_auc for a classifier) averaged over this many epochs"},
    )
    max_failures: int = field(
        default=2, metadata={"help": "worker group restarts from the last checkpoint before giving up"}
    )
    seed: int = field(default=0, metadata={"help": "random seed"})
    verbose: bool = field(default=False, metadata={"help": VERBOSE_HELP})

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe {self.recipe!r}: choose one of {', '.join(RECIPES)}")
        for name, value in RECIPES[self.recipe].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.select not in SELECTIONS:
            raise ValueError(f"select {self.select!r}: choose one of {', '.join(SELECTIONS)}")

    @property
    def metric(self) -> str:
        """The validation metric that ranks checkpoints: the one `select` names."""
        return SELECTIONS[self.select]

    def protocol(self) -> dict:
        """The choices that make a result comparable with the paper's (`PAPER_PROTOCOL`)."""
        return {name: getattr(self, name) for name in PAPER_PROTOCOL}

    def architecture(self) -> dict:
        """The network options given (input size, AAA, fusion): `build_model` overrides of the preset.
        A baseline has no AAA gates: the recipe's `aaa_init` is not among its options."""
        names = ("input_size", *ARCHITECTURE_OPTIONS, "baseline_head")
        chosen = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if self.variant == BASELINE:
            chosen.pop("aaa_init", None)
        return chosen

    def run_name(self) -> str:
        return self.name or time.strftime("run-%Y%m%d-%H%M%S")


@dataclass(frozen=True)
class LoopConfig:
    """What each Ray Train worker gets: the run's config and what the driver learnt before it started."""

    train: TrainConfig
    overrides: dict  # the model's resolved preset overrides (models `config["overrides"]`)
    preprocessing: dict  # models.preprocess.Preprocessing.to_dict()
    lineage: dict  # written as the checkpoints' lineage.json (plus the epoch)
    steps_per_epoch: int  # optimizer steps of each worker per epoch (the schedule's unit)
    splits: dict[str, DecodedSplit | StreamedSplit] = field(default_factory=dict)  # "train", "val"


@dataclass(frozen=True, kw_only=True)
class TuneOptions:
    """`busnet tune`'s own options; each trial is a `TrainConfig` with the sampled loss weights."""

    samples: int = field(default=8, metadata={"help": "trials to run"})
    max_concurrent: int = field(default=1, metadata={"help": "trials running at once"})
    search: str = field(
        default="random",
        metadata={"help": "search algorithm; hyperopt needs `pip install hyperopt`", "choices": SEARCHES},
    )
    grace_period: int = field(default=1, metadata={"help": "epochs every trial runs before ASHA may stop it"})
    search_space: str | None = field(
        default=None,
        metadata={
            "help": "narrow or move the uniform range of some loss weights: NAME=LOW:HIGH[,...], e.g. gamma=0:1",
            "unset": "the ranges above",
        },
    )

    def ranges(self) -> dict[str, tuple[float, float]]:
        """The range searched for each loss weight: `SEARCH_RANGES` with `search_space` applied.
        Raises ValueError naming the bad part of `search_space`."""
        ranges = dict(SEARCH_RANGES)
        for part in filter(None, (self.search_space or "").split(",")):
            name, _, bounds = part.partition("=")
            low, _, high = bounds.partition(":")
            name = name.strip()
            if name not in ranges:
                raise ValueError(f"--search-space {part!r}: unknown loss weight; choose from {', '.join(ranges)}")
            try:
                low_value, high_value = float(low), float(high)
            except ValueError:
                raise ValueError(f"--search-space {part!r}: expected NAME=LOW:HIGH with two numbers") from None
            if not 0 <= low_value <= high_value < float("inf"):  # NaN fails every comparison
                raise ValueError(f"--search-space {part!r}: need 0 <= LOW <= HIGH, both finite")
            ranges[name] = (low_value, high_value)
        return ranges


@dataclass(frozen=True, kw_only=True)
class CvOptions:
    """`busnet cv`'s own options; the rest is the `TrainConfig` every fold trains with."""

    protocol: str = field(
        default="kfold",
        metadata={
            "help": "kfold: every fold tests its own case-disjoint share, all of them the whole dataset; "
            "split: the paper's one train/val/test split, trained once",
            "choices": CV_PROTOCOLS,
        },
    )
    folds: str | None = field(
        default=None, metadata={"help": "comma-separated folds to run, e.g. 0,2", "unset": "every fold"}
    )
    bootstrap: int = field(
        default=0, metadata={"help": "bootstrap resamples for each fold's 95% intervals; 0 turns them off"}
    )


@dataclass(frozen=True, kw_only=True)
class AblationOptions:
    """`busnet ablation`'s own options; with `CvOptions` and the `TrainConfig` every variant shares."""

    variants: str = field(
        default=",".join((*TABLE3_VARIANTS, "hybrid_sgate")),
        metadata={"help": f"comma-separated variants to compare; {BASELINE}:<timm name> adds a Table 2 baseline"},
    )


@dataclass(frozen=True, kw_only=True)
class WeightsOptions:
    """`busnet weights fetch`: the ImageNet weights a preset's encoders and some baselines need."""

    out: str = field(metadata={"help": "folder URI to publish the weights and weights.json into"})
    preset: str = field(
        default="paper",
        metadata={"help": "the preset whose ResNet and Swin weights to fetch", "choices": tuple(PRESETS)},
    )
    backbones: str | None = field(
        default=None,
        metadata={"help": f"comma-separated timm names of {BASELINE} backbones to fetch too", "unset": "none"},
    )
