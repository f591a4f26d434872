"""`busnet tune`: Ray Tune over the loss weights w1, alpha, gamma, each trial a full training run.

The Train V2 pattern (Ray 2.60 removed `Tuner(trainer)`): a Tune function trainable builds and fits the same
`TorchTrainer` as `busnet train` (run folder `<out>/trials/trial-<trial id>/`) with
`TuneReportCallback`, which forwards every epoch's metrics to Tune plus the checkpoint's storage path
as `checkpoint_path`. ASHA stops weak trials after `grace_period` epochs. Afterwards the trials'
histories give the results table (each trial at its best epoch) and the best trial's best checkpoint,
which is published to `<out>/best/` (complete before visible).

On a small machine the trial actor itself reserves only a sliver of CPU and `max_concurrent` bounds
the trials in flight, so Ray Data always keeps CPUs to decode with (no resource-budget hang).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobs import storage, tracking
from jobs.errors import BusnetError
from jobs.train.config import SEARCHES, TrainConfig, TuneOptions
from jobs.train.driver import (
    VAL_METRICS,
    Prepared,
    check_cluster,
    decode_splits,
    fit_or_explain,
    hyperparameters,
    mode,
    prepare,
    publish_checkpoint,
)
from models.loss_weights import SEARCH_RANGES, LossWeights
from models.metrics import ERROR_RATES

if TYPE_CHECKING:
    from jobs.data.dataset import Dataset

TRIAL_CPUS = 0.25  # the trial actor only waits for its trainer; the workers reserve their own CPUs
# The results table: every validation metric but the error rates (1 - sens, 1 - spec: redundant).
TABLE_METRICS = tuple(name for name in VAL_METRICS if name.removeprefix("val_") not in ERROR_RATES)


@dataclass
class TuneOutcome:
    rows: list[dict]
    best: dict
    best_uri: str
    results_uri: str


def _trial(params: dict, base: TrainConfig, prepared: Prepared, trials_uri: str) -> None:
    """One Tune trial: a training run with this trial's w1, alpha, gamma."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    config = dataclasses.replace(base, loss=LossWeights(**{name: params[name] for name in SEARCH_RANGES}))
    fit_or_explain(
        config,
        prepared,
        name=f"trial-{trial_id}",
        storage_uri=trials_uri,
        callbacks=[TuneReportCallback()],
        trial_id=trial_id,
    )


def _search_algorithm(search: str, seed: int, max_concurrent: int):
    """The search algorithm; a given BasicVariantGenerator ignores TuneConfig.max_concurrent_trials,
    so the limit is passed to it directly (Searchers get Tune's ConcurrencyLimiter)."""
    if search == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)
    if search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=seed)
    if search == "hyperopt":
        if importlib.util.find_spec("hyperopt") is None:
            raise BusnetError("--search hyperopt needs the hyperopt package: pip install hyperopt")
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(random_state_seed=seed)
    raise BusnetError(f"--search {search!r}: choose one of {', '.join(SEARCHES)}")


def tune_run(base: TrainConfig, options: TuneOptions, *, dataset: Dataset | None = None) -> TuneOutcome:
    """Search, tabulate, publish; the whole of `busnet tune`, tracked as one run (`dataset`: `base.data`
    already opened by the caller, else opened here)."""
    from ray import tune

    from jobs.runtime import init_ray

    if options.samples < 1 or options.max_concurrent < 1 or options.grace_period < 1:
        raise BusnetError("--samples, --max-concurrent and --grace-period must be at least 1")
    try:
        ranges = options.ranges()
    except ValueError as exc:
        raise BusnetError(str(exc)) from None
    search_alg = _search_algorithm(options.search, base.seed, options.max_concurrent)
    prepared = prepare(base, dataset)
    init_ray()
    per_trial = TRIAL_CPUS + base.workers * base.cpus_per_worker
    check_cluster(
        options.max_concurrent * per_trial,
        options.max_concurrent * base.workers * base.gpu,
        f"{options.max_concurrent} concurrent trial(s) of {base.workers} worker(s)",
    )
    prepared = decode_splits(base, prepared)  # once for every trial
    trials_uri = storage.join(base.out, "trials")
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=base, prepared=prepared, trials_uri=trials_uri), {"cpu": TRIAL_CPUS}
    )
    params = {"data": base.data, "dataset_hash": prepared.content_hash, **hyperparameters(base)}
    params.update(dataclasses.asdict(options), **{name: f"uniform{ranges[name]}" for name in ranges})
    with tracking.run("tune", params=params) as tracked:
        outcome = _search_and_publish(base, options, trainable, search_alg, tracked)
        tracked.record_checkpoint(outcome.best_uri, outcome.best)
        tracked.set_tags({"best_trial": outcome.best["trial"]})
        tracked.log_artifacts(f"{outcome.results_uri}.csv", f"{outcome.results_uri}.json")
    return outcome


def _search_and_publish(
    base: TrainConfig, options: TuneOptions, trainable, search_alg, tracked: tracking.Run
) -> TuneOutcome:
    """Run the Tuner (each trial a child run of `tracked`, by Ray Tune's MLflow logger), tabulate, publish."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    fs, path = storage.filesystem(base.out)
    tuner = tune.Tuner(
        trainable,
        param_space={name: tune.uniform(low, high) for name, (low, high) in options.ranges().items()},
        tune_config=tune.TuneConfig(
            metric=base.metric,
            mode=mode(base.metric),
            search_alg=search_alg,
            num_samples=options.samples,
            # random search's generator takes the limit itself (_search_algorithm); given here too, Tune warns
            max_concurrent_trials=None if options.search == "random" else options.max_concurrent,
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                max_t=base.epochs,
                grace_period=min(options.grace_period, base.epochs),
                reduction_factor=2,
            ),
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=path,
            storage_filesystem=fs,
            callbacks=tracked.tune_callbacks(),
            verbose=1 if base.verbose else 0,  # Tune's trial tables, banners and TensorBoard hints: --verbose
        ),
    )
    print(
        f"[busnet tune] {options.samples} trial(s), {options.max_concurrent} at a time, {options.search} search "
        f"over {', '.join(f'{name} [{low:g}, {high:g}]' for name, (low, high) in options.ranges().items())}, "
        f"ASHA on {base.metric} -> {base.out}",
        flush=True,
    )
    grid = tuner.fit()
    rows = [_trial_row(result, base.metric, mode(base.metric)) for result in grid]
    sign = -1 if mode(base.metric) == "max" else 1
    rows.sort(key=lambda row: sign * row[base.metric] if _is_number(row.get(base.metric)) else math.inf)
    finished = [row for row in rows if row.get("checkpoint_path") and _is_number(row.get(base.metric))]
    if not finished:
        errors = [row["error"] for row in rows if row.get("error")]
        raise BusnetError("no trial reported a checkpoint" + (f"; first error: {errors[0]}" if errors else ""))
    pick = max if mode(base.metric) == "max" else min
    best = pick(finished, key=lambda row: row[base.metric])
    best_uri = storage.join(base.out, "best")
    publish_checkpoint(ray.train.Checkpoint(best["checkpoint_path"], filesystem=fs), best_uri)
    results_uri = storage.join(base.out, "tune_results")
    _save_results(rows, best, base, options, results_uri)
    return TuneOutcome(rows=rows, best=best, best_uri=best_uri, results_uri=results_uri)


def _trial_row(result, metric: str, mode: str) -> dict:
    """One trial at its best epoch: id, w1/alpha/gamma, epochs run, that epoch's metrics and checkpoint."""
    row = {
        "trial": result.metrics.get("trial_id") if result.metrics else None,
        **{k: result.config.get(k) for k in SEARCH_RANGES},
    }
    if result.error is not None:
        from jobs.train.driver import failure_summary

        row["error"] = failure_summary(result.error)
    history = result.metrics_dataframe
    if history is None or metric not in history or history[metric].dropna().empty:
        return row
    history = history.dropna(subset=[metric])
    at_best = history.loc[history[metric].idxmax() if mode == "max" else history[metric].idxmin()]
    row.update(
        epochs=int(history["epoch"].max()),
        best_epoch=int(at_best["epoch"]),
        **{k: float(at_best[k]) for k in TABLE_METRICS if k in at_best and _is_number(at_best[k])},
        threshold=float(at_best["threshold"]),
        checkpoint_path=at_best.get("checkpoint_path"),
    )
    row["trial"] = row["trial"] or at_best.get("trial_id")
    return row


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


def _columns(rows: list[dict]) -> list[str]:
    order = ["trial", *SEARCH_RANGES, "epochs", "best_epoch", *TABLE_METRICS, "threshold", "checkpoint_path", "error"]
    return [c for c in order if any(c in row for row in rows)]


def format_table(rows: list[dict], metric: str) -> str:
    """The results table for the console: one line per trial, best first by `metric`."""
    columns = [c for c in _columns(rows) if c != "checkpoint_path"]

    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))

    body = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in body)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in body]
    return "\n".join(lines)


def describe(outcome: TuneOutcome, metric: str) -> str:
    """What `busnet tune` prints at the end: the table, where the results are, the best trial."""
    best = outcome.best
    return (
        f"{format_table(outcome.rows, metric)}\n"
        f"results: {outcome.results_uri}.csv, {outcome.results_uri}.json\n"
        f"best trial {best['trial']} (w1={best['w1']:.3g}, alpha={best['alpha']:.3g}, gamma={best['gamma']:.3g}, "
        f"{metric}={best[metric]:.4g}): {outcome.best_uri}"
    )


def _save_results(rows: list[dict], best: dict, base: TrainConfig, options: TuneOptions, results_uri: str) -> None:
    import csv

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(rows), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    storage.write_bytes(f"{results_uri}.csv", buffer.getvalue().encode())
    document = {
        "metric": base.metric,
        "mode": mode(base.metric),
        "search": options.search,
        "search_ranges": options.ranges(),
        "samples": options.samples,
        "epochs": base.epochs,
        "best": best,
        "trials": rows,
    }
    storage.write_bytes(f"{results_uri}.json", json.dumps(document, indent=1, default=str).encode())
