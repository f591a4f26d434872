"""`busnet cv`: train and test each fold of a protocol, then mean +- sd.

Protocols (`CvOptions.protocol`), each named for what it is:
- "kfold": every fold has its own case-disjoint test set and the test sets cover the dataset. On a
  dataset ingested with `--folds-from` (BUSBench's predefined folds) those folds, as listed (fold K:
  `fold-K/`); on drawn folds the k stored folds plus the held-out test split are k+1 groups, and
  fold "kKof<k+1>" tests on group K, validates on group K+1 and trains on the rest (`jobs.data.kfold`,
  derived at read time; `fold-kKof<k+1>/`).
- "split": the paper's protocol, one train/val/test split (the stored one) trained once (`split/`).

Each fold trains with the same `TrainConfig` (`fold` set) into `<out>/<name>/<fold>/`, and
`jobs.evaluate.run.evaluate` scores its best checkpoint on that fold's test side into
`<out>/<name>/<fold>/eval/`. A fold whose best checkpoint is already there is reused only when its
lineage's dataset hash and hyperparameters are this run's (else refused with the difference), and
one whose metrics are there too (in evaluate's current format) is not tested again, so an
interrupted run goes on where it stopped. The summary (`cv.json`, `cv.md`) has each fold's test
metrics and their mean and sample standard deviation (ddof 1), overall and per source dataset, at
each fold's validation-chosen threshold (`groups`) and at the paper's 0.5 (`paper_protocol`), as evaluate reports them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from jobs import storage, tracking
from jobs.errors import BusnetError
from jobs.evaluate.protocol import header
from jobs.evaluate.report import AUC_NOTE, COLUMNS, PAPER_PROTOCOL, threshold_label
from jobs.train.config import CvOptions, TrainConfig
from models.metrics import METRICS, PAPER_THRESHOLD


@dataclass(frozen=True)
class CvOutcome:
    summary_uri: str
    summary: dict


def cross_validate(base: TrainConfig, options: CvOptions, say: Callable[[str], None] = print) -> CvOutcome:
    """Train and test every chosen fold of `base.data`, then summarise; writes cv.json and cv.md.
    Tracked as one run, each fold's training and test nested in it."""
    folds = _chosen_folds(base.data, options.folds, options.protocol)
    params = {**_plain(base), "folds": ",".join(map(str, folds)), "bootstrap": options.bootstrap}
    params["protocol"] = options.protocol
    with tracking.run(f"cv {base.run_name()}", params=params) as tracked:
        outcome = _cross_validate(base, options, folds, say)
        tracked.log_metrics(outcome.summary["groups"]["overall"]["mean"])
        tracked.log_artifacts(outcome.summary_uri, outcome.summary_uri.removesuffix(".json") + ".md")
    return outcome


def _cross_validate(
    base: TrainConfig, options: CvOptions, folds: list[int | str | None], say: Callable[[str], None]
) -> CvOutcome:
    from jobs.evaluate.run import FORMAT_VERSION, evaluate
    from jobs.train.driver import train

    root = storage.join(base.out, base.run_name())
    per_fold = {}
    for fold in folds:
        label = fold_label(fold)
        run = dataclasses.replace(base, out=root, name=label, fold=fold)
        best, report = storage.join(root, run.name, "best"), storage.join(root, run.name, "eval")
        trained, tested = storage.is_complete(best), _tested(storage.join(report, "metrics.json"), FORMAT_VERSION)
        if trained:
            check_reusable(run, best)
        if trained and tested is not None:
            say(f"[busnet cv] fold {fold}: already trained and tested, reusing {report}")
        else:
            if not trained:
                say(f"[busnet cv] fold {fold}: training -> {storage.join(root, run.name)}")
                train(run)
            say(f"[busnet cv] fold {fold}: testing {best}")
            tested = evaluate(
                base.data, best, report, split="test", fold=fold, n_bootstrap=options.bootstrap, seed=base.seed
            )
        per_fold["split" if fold is None else fold] = tested
    summary = summarise(per_fold)
    summary["config"] = {
        "train": _plain(base),
        "protocol": options.protocol,
        "folds": folds,
        "bootstrap": options.bootstrap,
        "out": root,
    }
    storage.write_bytes(storage.join(root, "cv.json"), json.dumps(summary, indent=2).encode())
    storage.write_bytes(storage.join(root, "cv.md"), (render(summary) + "\n").encode())
    return CvOutcome(summary_uri=storage.join(root, "cv.json"), summary=summary)


def fold_label(fold: int | str | None) -> str:
    """A fold's run folder: `fold-2`, `fold-k2of6`, or `split` (the stored split)."""
    return "split" if fold is None else f"fold-{fold}"


def check_reusable(run: TrainConfig, best: str) -> None:
    """BusnetError unless the published checkpoint at `best` was trained on this dataset with this config."""
    from jobs.data.dataset import read_manifest
    from jobs.train.driver import hyperparameters

    lineage = json.loads(storage.read_bytes(storage.join(storage.resolve(best), "lineage.json")))
    now = {"dataset": read_manifest(run.data)["content_hash"], **json.loads(json.dumps(hyperparameters(run)))}
    then = {"dataset": lineage.get("dataset", {}).get("content_hash"), **lineage.get("hyperparameters", {})}
    if run.balance_classes:  # the trainer records the alpha it derived from the split, not the flag's
        now.pop("alpha")
    differ = [f"{key} {then.get(key)!r} there, {value!r} now" for key, value in now.items() if then.get(key) != value]
    if differ:
        raise BusnetError(
            f"{best} was trained otherwise ({'; '.join(differ[:4])}): "
            "use another --name or --out, or the same settings and data to reuse it"
        )


def _tested(uri: str, format_version: int) -> dict | None:
    """A fold's metrics.json when it is there in evaluate's current format, else None (test again)."""
    if not storage.exists(uri):
        return None
    metrics = json.loads(storage.read_bytes(uri))
    return metrics if metrics.get("format_version") == format_version else None


def summarise(per_fold: dict) -> dict:
    """Each fold's test metrics (evaluate's metrics.json values, by fold label in run order) and their
    mean and sd, by group, at each fold's own threshold (`groups`) and at the paper's (`paper_protocol`)."""
    return {
        "format_version": 2,
        "folds": list(per_fold),
        "thresholds": {str(f): m["threshold"] for f, m in per_fold.items()},
        "groups": _groups(per_fold),
        "paper_protocol": {
            "threshold": PAPER_THRESHOLD,
            "groups": _groups({f: m["paper_protocol"] for f, m in per_fold.items()}),
        },
    }


def _groups(per_fold: dict[int, dict]) -> dict:
    """{group: summary} of the folds' `overall` and `per_source` blocks."""
    groups = {"overall": {f: m["overall"] for f, m in per_fold.items()}}
    for fold, metrics in per_fold.items():
        for source, values in metrics.get("per_source", {}).items():
            groups.setdefault(source, {})[fold] = values
    return {group: _group_summary(by_fold) for group, by_fold in groups.items()}


def _group_summary(by_fold: dict[int, dict]) -> dict:
    values = {
        name: {str(f): _value(g["metrics"].get(name)) for f, g in by_fold.items()}
        for name in METRICS
        if any(_value(g["metrics"].get(name)) is not None for g in by_fold.values())
    }
    return {
        "n": {str(f): g.get("n") for f, g in by_fold.items()},
        "per_fold": values,
        "mean": {name: _mean(list(v.values())) for name, v in values.items()},
        "sd": {name: _sd(list(v.values())) for name, v in values.items()},
    }


def render(summary: dict) -> str:
    """The overall table, metrics in percent (F1 as a fraction): one row per fold at its validation-chosen
    threshold and one at the paper's, then mean +- sd at each."""
    chosen, paper = summary["groups"]["overall"], summary["paper_protocol"]["groups"]["overall"]
    protocol = threshold_label(summary["paper_protocol"]["threshold"], PAPER_PROTOCOL)
    names = [name for name in METRICS if name in chosen["per_fold"] or name in paper["per_fold"]]
    title = dict(COLUMNS)
    config = summary.get("config", {})
    lines = [*header(config.get("train", {}), config.get("protocol")), ""] if config else []
    lines += [f"{AUC_NOTE}.", "", "| fold | threshold | " + " | ".join(title[n] for n in names) + " |"]
    lines.append("|---|---|" + "---:|" * len(names))
    for fold in summary["folds"]:
        label = threshold_label(summary["thresholds"][str(fold)], "checkpoint")
        for threshold, group in ((label, chosen), (protocol, paper)):
            cells = [_cell(n, group["per_fold"].get(n, {}).get(str(fold))) for n in names]
            lines.append(f"| {fold} | {threshold} | " + " | ".join(cells) + " |")
    for threshold, group in (("validation", chosen), (protocol, paper)):
        spread = [f"{_cell(n, group['mean'].get(n))} +- {_cell(n, group['sd'].get(n))}" for n in names]
        lines.append(f"| mean +- sd | {threshold} | " + " | ".join(spread) + " |")
    return "\n".join(lines)


def _chosen_folds(data_uri: str, folds: str | None, protocol: str = "kfold") -> list[int | str | None]:
    """The folds to run, checked against the dataset's before any training starts."""
    from jobs.data import kfold
    from jobs.data.dataset import read_manifest

    if protocol == "split":
        if folds is not None:
            raise BusnetError("--folds: the split protocol trains the stored split once; use --protocol kfold")
        return [None]
    params = read_manifest(data_uri).get("params", {})
    stored = int(params.get("folds") or 0)
    if stored < 2:
        raise BusnetError(f"{data_uri}: the dataset has {stored} folds; ingest it with --folds K (K >= 2)")
    predefined = params.get("folds_from") is not None  # each stored fold has its own test side already
    available = stored if predefined else stored + 1
    return [f if predefined else kfold.name(f, stored) for f in _indices(folds, available)]


def _indices(folds: str | None, available: int) -> list[int]:
    if folds is None:
        return list(range(available))
    try:
        chosen = sorted({int(part) for part in folds.split(",") if part.strip()})
    except ValueError as exc:
        raise BusnetError(f"--folds {folds!r}: expected comma-separated fold numbers such as 0,2") from exc
    wrong = [f for f in chosen if not 0 <= f < available]
    if not chosen or wrong:
        raise BusnetError(f"--folds {folds!r}: the dataset's folds are 0..{available - 1}")
    return chosen


def _value(entry) -> float | None:
    value = entry.get("value") if isinstance(entry, dict) else entry
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _mean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def _sd(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    if len(defined) < 2:
        return None
    mean = sum(defined) / len(defined)
    return math.sqrt(sum((v - mean) ** 2 for v in defined) / (len(defined) - 1))


def _cell(name: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if name == "f1" else f"{100 * value:.1f}"


def _plain(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)
