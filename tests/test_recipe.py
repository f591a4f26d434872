"""The training recipe's parts: recipes fill unset flags, schedule, optimizers, EMA, selection, early stopping."""

from __future__ import annotations

import math

import pytest
import torch

from jobs.train.config import RECIPES, TrainConfig
from jobs.train.recipe import build_ema, build_optimizer, learning_rate, selection_score, should_stop


def _run(**given) -> TrainConfig:
    return TrainConfig(data="d", out="o", **given)


def test_recipes_fill_only_what_is_not_given():
    paper = _run(recipe="paper")
    assert (paper.lr, paper.batch_size, paper.schedule, paper.warmup_epochs, paper.clip_grad) == (
        1e-5,
        4,
        "constant",
        0.0,
        0.0,
    )
    ours = _run()
    assert {name: getattr(ours, name) for name in RECIPES["busnet"]} == RECIPES["busnet"]
    assert _run(recipe="paper", schedule="cosine").schedule == "cosine"
    with pytest.raises(ValueError, match="recipe"):
        _run(recipe="fast")


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_schedule_warms_up_peaks_and_decays(schedule):
    run = _run(lr=1e-3, warmup_epochs=2, schedule=schedule)
    per_epoch, total = 10, 100
    rates = [learning_rate(step, total, run, per_epoch) for step in range(total)]
    assert rates[0] == pytest.approx(1e-3 / 25)
    assert all(a < b for a, b in zip(rates[:20], rates[1:21]))  # rising through the warm-up
    assert max(rates) == pytest.approx(1e-3) and rates[20] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[20:], rates[21:]))  # then never rising
    assert rates[-1] == pytest.approx(1e-5)


def test_the_papers_recipe_keeps_its_learning_rate():
    run = _run(recipe="paper")
    assert {learning_rate(step, 50, run, 5) for step in range(50)} == {1e-5}


def test_adamw_decays_weights_but_not_biases_or_norms():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    assert isinstance(build_optimizer(model, _run()), torch.optim.Adam)
    adamw = build_optimizer(model, _run(optimizer="adamw", weight_decay=0.1))
    decayed, plain = adamw.param_groups
    assert isinstance(adamw, torch.optim.AdamW) and (decayed["weight_decay"], plain["weight_decay"]) == (0.1, 0.0)
    assert [tuple(p.shape) for p in decayed["params"]] == [(4, 3, 3, 3)]
    assert len(plain["params"]) == 3  # conv bias, BN weight and bias


def test_ema_follows_the_weights_slowly():
    model = torch.nn.Linear(2, 1)
    assert build_ema(model, 0.0) is None
    ema = build_ema(model, 0.9)
    ema.update_parameters(model)  # the first update copies the weights
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update_parameters(model)
    assert torch.allclose(ema.module.weight, start + 0.1)


def test_selection_score_combines_both_tasks_and_smooths_over_epochs():
    raw, smoothed = selection_score({"val_auc": 0.9, "val_dsc": 0.5}, [], smooth=3)
    assert raw == smoothed == pytest.approx(0.7)
    raw, smoothed = selection_score({"val_auc": 1.0, "val_dsc": 0.9}, [0.2, 0.3, 0.4], smooth=3)
    assert raw == pytest.approx(0.95) and smoothed == pytest.approx((0.3 + 0.4 + 0.95) / 3)
    assert selection_score({"val_auc": 0.8}, [0.6], smooth=1) == (0.8, 0.8)  # classification-only variants
    _, smoothed = selection_score({"val_auc": math.nan, "val_dsc": 0.5}, [0.6], smooth=2)
    assert smoothed == pytest.approx(0.6)  # an undefined AUC does not poison the window


def test_early_stopping_waits_for_patience_epochs_without_progress():
    assert not should_stop([0.5, 0.6, 0.6, 0.6], patience=0)
    assert not should_stop([0.5, 0.6, 0.6], patience=2)
    assert should_stop([0.5, 0.6, 0.6, 0.55], patience=2)
    assert not should_stop([0.5, 0.6, 0.6, 0.61], patience=2)
