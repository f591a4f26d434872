"""busnet tune: Ray Tune over w1/alpha/gamma, each trial a Ray Train run; table, CSV/JSON, best/."""
from __future__ import annotations

import csv
import json

import pytest

from jobs.errors import BusnetError
from jobs.train import TrainConfig
from jobs.tune import SEARCH_RANGES, TuneOptions, tune_run


def _base(data: str, out) -> TrainConfig:
    return TrainConfig(data=data, out=str(out), preset="tiny", input_size=64, epochs=2, lr=1e-3, workers=1,
                       cpus_per_worker=0.5, keep=1, metric="val_loss")


@pytest.mark.slow
def test_tune_trials_table_and_best_checkpoint(ray_local, synthetic_dataset, tmp_path):
    outcome = tune_run(_base(synthetic_dataset, tmp_path), TuneOptions(samples=2, max_concurrent=1, grace_period=2))

    rows = list(csv.DictReader((tmp_path / "tune_results.csv").open()))
    saved = json.loads((tmp_path / "tune_results.json").read_text())
    assert len(rows) == len(saved["trials"]) == 2
    trial_ids = {row["trial"] for row in rows}
    assert len(trial_ids) == 2 and "" not in trial_ids
    for row in saved["trials"]:
        for name, (low, high) in SEARCH_RANGES.items():
            assert low <= row[name] <= high
        assert row["epochs"] == 2 and row["best_epoch"] in (1, 2)
        assert (tmp_path / "trials" / f"trial-{row['trial']}").is_dir()  # each trial is a Train run folder
    best_loss = min(row["val_loss"] for row in saved["trials"])
    assert saved["best"]["val_loss"] == best_loss == outcome.best["val_loss"]

    best = tmp_path / "best"
    assert (best / "_COMPLETE").exists()
    assert {p.name for p in best.iterdir()} == {"model.safetensors", "config.json", "metrics.json",
                                               "lineage.json", "_COMPLETE"}
    metrics = json.loads((best / "metrics.json").read_text())
    lineage = json.loads((best / "lineage.json").read_text())
    assert metrics["val_loss"] == pytest.approx(best_loss)  # the published checkpoint is the best epoch's
    assert lineage["trial_id"] == outcome.best["trial"]
    assert lineage["hyperparameters"]["w1"] == pytest.approx(outcome.best["w1"])

    from models import load_checkpoint

    model, config = load_checkpoint(str(best))
    assert config["threshold"] == pytest.approx(outcome.best["threshold"])


def test_hyperopt_without_the_package_says_how_to_get_it(synthetic_dataset, tmp_path):
    import importlib.util

    if importlib.util.find_spec("hyperopt") is not None:
        pytest.skip("hyperopt is installed here")
    with pytest.raises(BusnetError, match="pip install hyperopt"):
        tune_run(_base(synthetic_dataset, tmp_path), TuneOptions(search="hyperopt"))
