"""busnet tune: options refused before any trial starts. The search itself, its table and best/ are
checked end to end in tests/test_demo.py (the demo's tune stage), so the suite runs one search."""

from __future__ import annotations

import pytest

from jobs.errors import BusnetError
from jobs.train.config import TrainConfig, TuneOptions
from jobs.train.tune import tune_run


def _base(data: str, out) -> TrainConfig:
    return TrainConfig(
        data=data,
        out=str(out),
        preset="tiny",
        input_size=64,
        epochs=2,
        lr=1e-3,
        workers=1,
        cpus_per_worker=0.5,
        keep=1,
        select="val_loss",
    )


def test_hyperopt_without_the_package_says_how_to_get_it(synthetic_dataset, tmp_path):
    import importlib.util

    if importlib.util.find_spec("hyperopt") is not None:
        pytest.skip("hyperopt is installed here")
    with pytest.raises(BusnetError, match="pip install hyperopt"):
        tune_run(_base(synthetic_dataset, tmp_path), TuneOptions(search="hyperopt"))


@pytest.mark.parametrize(
    "options, message",
    [
        (TuneOptions(samples=0), "must be at least 1"),
        (TuneOptions(grace_period=0), "must be at least 1"),
        (TuneOptions(search="grid"), "choose one of random, optuna, hyperopt"),
        (TuneOptions(search_space="beta=0:1"), "'beta=0:1': unknown loss weight; choose from w1, alpha, gamma"),
        (TuneOptions(search_space="gamma=2:1"), "need 0 <= LOW <= HIGH"),
        (TuneOptions(search_space="gamma=-1:1"), "need 0 <= LOW <= HIGH"),
        (TuneOptions(search_space="gamma=nan:1"), "need 0 <= LOW <= HIGH"),
        (TuneOptions(search_space="gamma=1"), "two numbers"),
    ],
)
def test_bad_options_are_refused_before_any_trial(synthetic_dataset, tmp_path, options, message):
    with pytest.raises(BusnetError, match=message):
        tune_run(_base(synthetic_dataset, tmp_path), options)
    assert not (tmp_path / "tune").exists()


def test_more_concurrent_trials_than_the_cluster_holds_is_refused(ray_local, synthetic_dataset, tmp_path):
    with pytest.raises(BusnetError, match="8 concurrent trial"):
        tune_run(_base(synthetic_dataset, tmp_path), TuneOptions(samples=8, max_concurrent=8))
    assert not (tmp_path / "tune").exists()
