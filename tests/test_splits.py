"""Case-level, stratified, seeded splits and folds (jobs.data.splits)."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from jobs.data.dataset import TEST_FOLD
from jobs.data.splits import assign, case_labels
from jobs.errors import BusnetError


def _rows(n_cases: int = 60, seed: int = 1) -> tuple[list[str], list[int]]:
    """Cases of 1-4 images; a third malignant; one case with mixed labels."""
    rng = random.Random(seed)
    cases, labels = [], []
    for c in range(n_cases):
        label = int(c % 3 == 0)
        for _ in range(rng.randint(1, 4)):
            cases.append(f"src/case-{c:03d}")
            labels.append(label)
    labels[0] = 1 - labels[0]  # a case whose images disagree must still stay in one split
    return cases, labels


def _by_case(cases, values) -> dict[str, set]:
    seen = defaultdict(set)
    for case, value in zip(cases, values):
        seen[case].add(value)
    return seen


def test_no_case_in_two_splits_or_folds_and_test_rows_have_no_fold():
    cases, labels = _rows()
    split, fold = assign(cases, labels, val=0.1, test=0.2, folds=5, seed=0)
    assert all(len(s) == 1 for s in _by_case(cases, split).values())
    assert all(len(f) == 1 for f in _by_case(cases, fold).values())
    assert {f for s, f in zip(split, fold) if s == "test"} == {TEST_FOLD}
    assert {f for s, f in zip(split, fold) if s != "test"} == set(range(5))
    assert set(split) == {"train", "val", "test"}


def test_shares_are_of_cases_and_stratified_by_label():
    cases, labels = _rows(n_cases=100)
    split, _ = assign(cases, labels, val=0.1, test=0.2, folds=5, seed=3)
    per_case = case_labels(cases, labels)
    split_of = {c: s for c, s in zip(cases, split)}
    test_cases = [c for c in per_case if split_of[c] == "test"]
    assert len(test_cases) == 20
    assert sum(per_case[c] for c in test_cases) in (6, 7, 8)  # ~1/3 malignant, as in the whole
    val_cases = [c for c in per_case if split_of[c] == "val"]
    assert len(val_cases) == 10 and 2 <= sum(per_case[c] for c in val_cases) <= 4


def test_same_seed_same_assignment_whatever_the_row_order():
    cases, labels = _rows()
    first = assign(cases, labels, val=0.1, test=0.2, folds=5, seed=7)
    order = list(range(len(cases)))
    random.Random(0).shuffle(order)
    shuffled = assign([cases[i] for i in order], [labels[i] for i in order], val=0.1, test=0.2, folds=5, seed=7)
    back = {order[j]: (shuffled[0][j], shuffled[1][j]) for j in range(len(order))}
    assert [back[i] for i in range(len(cases))] == list(zip(*first))
    other = assign(cases, labels, val=0.1, test=0.2, folds=5, seed=8)
    assert other != first


def test_case_label_is_the_majority_and_a_tie_is_malignant():
    assert case_labels(["a", "a", "a", "b", "b"], [0, 0, 1, 0, 1]) == {"a": 0, "b": 1}


def test_tiny_datasets_fall_back_to_unstratified_holdouts():
    # one malignant case: stratifying would fail, the split must still be made
    split, fold = assign(["a", "b", "c", "d"], [0, 0, 0, 1], val=0.0, test=0.25, folds=2, seed=0)
    assert split.count("test") == 1 and split.count("train") == 3
    assert {f for s, f in zip(split, fold) if s == "train"} == {0, 1}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"val": 0.5, "test": 0.5, "folds": 5}, "summing to less than 1"),
        ({"val": -0.1, "test": 0.2, "folds": 5}, "shares"),
        ({"val": 0.1, "test": 0.2, "folds": 1}, "at least 2 folds"),
        ({"val": 0.0, "test": 0.0, "folds": 5}, "needs at least 5 cases"),
    ],
)
def test_bad_parameters_are_one_line_errors(kwargs, message):
    with pytest.raises(BusnetError, match=message):
        assign(["a", "b", "c", "d"], [0, 1, 0, 1], seed=0, **kwargs)
