"""`busnet cv`: k-fold cross-validation, the paper's protocol: train and test each fold, then mean +- sd.

For each fold K the same `TrainConfig` trains with `fold=K` (the fold's own train and validation
sides, `jobs.data.pipeline.read_rows`) into `<out>/<name>/fold-K/`, and `jobs.evaluate.run.evaluate`
scores its best checkpoint on fold K's test side into `<out>/<name>/fold-K/eval/`. On a dataset
ingested with `--folds-from` (the benchmark's predefined folds) each fold has its own test images; on
drawn folds every fold is tested on the stored test split, so the spread is that of the training runs.
A fold whose best checkpoint is already there is not trained again, and one whose metrics are there
too (in evaluate's current format) is not tested again, so an interrupted run goes on where it
stopped. The summary (`cv.json`, `cv.md`) has each fold's test metrics and their mean and sample
standard deviation (ddof 1), overall and per source dataset, at each fold's validation-chosen
threshold (`groups`) and at the paper's 0.5 (`paper_protocol`), as evaluate reports them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from jobs import storage, tracking
from jobs.errors import BusnetError
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
    folds = _chosen_folds(base.data, options.folds)
    params = {**_plain(base), "folds": ",".join(map(str, folds)), "bootstrap": options.bootstrap}
    with tracking.run(f"cv {base.run_name()}", params=params) as tracked:
        outcome = _cross_validate(base, options, folds, say)
        tracked.log_metrics(outcome.summary["groups"]["overall"]["mean"])
        tracked.log_artifacts(outcome.summary_uri, outcome.summary_uri.removesuffix(".json") + ".md")
    return outcome


def _cross_validate(base: TrainConfig, options: CvOptions, folds: list[int], say: Callable[[str], None]) -> CvOutcome:
    from jobs.evaluate.run import FORMAT_VERSION, evaluate
    from jobs.train.driver import train

    root = storage.join(base.out, base.run_name())
    per_fold = {}
    for fold in folds:
        run = dataclasses.replace(base, out=root, name=f"fold-{fold}", fold=fold)
        best, report = storage.join(root, run.name, "best"), storage.join(root, run.name, "eval")
        trained, tested = storage.is_complete(best), _tested(storage.join(report, "metrics.json"), FORMAT_VERSION)
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
        per_fold[fold] = tested
    summary = summarise(per_fold)
    summary["config"] = {"train": _plain(base), "folds": folds, "bootstrap": options.bootstrap, "out": root}
    storage.write_bytes(storage.join(root, "cv.json"), json.dumps(summary, indent=2).encode())
    storage.write_bytes(storage.join(root, "cv.md"), (render(summary) + "\n").encode())
    return CvOutcome(summary_uri=storage.join(root, "cv.json"), summary=summary)


def _tested(uri: str, format_version: int) -> dict | None:
    """A fold's metrics.json when it is there in evaluate's current format, else None (test again)."""
    if not storage.exists(uri):
        return None
    metrics = json.loads(storage.read_bytes(uri))
    return metrics if metrics.get("format_version") == format_version else None


def summarise(per_fold: dict[int, dict]) -> dict:
    """Each fold's test metrics (evaluate's metrics.json values) and their mean and sd, by group, at
    each fold's own threshold (`groups`) and at the paper's (`paper_protocol`)."""
    return {
        "format_version": 2,
        "folds": sorted(per_fold),
        "thresholds": {str(f): m["threshold"] for f, m in sorted(per_fold.items())},
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
        name: {str(f): _value(g["metrics"].get(name)) for f, g in sorted(by_fold.items())}
        for name in METRICS
        if any(_value(g["metrics"].get(name)) is not None for g in by_fold.values())
    }
    return {
        "n": {str(f): g.get("n") for f, g in sorted(by_fold.items())},
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
    lines = [f"{AUC_NOTE}.", "", "| fold | threshold | " + " | ".join(title[n] for n in names) + " |"]
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


def _chosen_folds(data_uri: str, folds: str | None) -> list[int]:
    """The folds to run, checked against the dataset's before any training starts."""
    from jobs.data.dataset import read_manifest

    available = int(read_manifest(data_uri).get("params", {}).get("folds") or 0)
    if available < 2:
        raise BusnetError(f"{data_uri}: the dataset has {available} folds; ingest it with --folds K (K >= 2)")
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
