"""Case-level, label-stratified, seeded train/val/test splits and cross-validation folds.

Images of one case (patient) never straddle train/val/test or two folds: a model must not be
validated on a second view of a lesion it trained on. The test split is held out first (a share of
the cases, stratified by each case's label), then val from the rest; folds cover train+val only
(StratifiedGroupKFold over images grouped by case), test rows get fold TEST_FOLD (-1).
Cases are sorted before splitting, so the same rows and seed always give the same assignment.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, train_test_split

from jobs.data.dataset import TEST_FOLD
from jobs.errors import BusnetError


def case_labels(case_ids: Sequence[str], labels: Sequence[int]) -> dict[str, int]:
    """Each case's label: the majority of its images' labels (a tie counts as malignant)."""
    votes: dict[str, Counter] = defaultdict(Counter)
    for case, label in zip(case_ids, labels):
        votes[case][int(label)] += 1
    return {case: int(count[1] >= count[0]) for case, count in sorted(votes.items())}


def _hold_out(cases: list[str], labels: list[int], share: float, seed: int, what: str) -> set[str]:
    """A seeded share of the cases, stratified by label when every class has enough cases."""
    if share <= 0:
        return set()
    if len(cases) < 2:
        raise BusnetError(f"too few cases ({len(cases)}) to hold out a {what} split; use --{what} 0")
    try:
        _, held = train_test_split(cases, test_size=share, random_state=seed, stratify=labels)
    except ValueError:  # a class with a single case, or fewer held-out cases than classes
        _, held = train_test_split(cases, test_size=share, random_state=seed)
    return set(held)


def check(*, val: float, test: float, folds: int) -> None:
    """BusnetError for shares or a fold count that no data could satisfy."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise BusnetError(f"--val {val} and --test {test} must be shares in [0, 1) summing to less than 1")
    if folds < 2:
        raise BusnetError(f"--folds {folds}: need at least 2 folds")


def assign(
    case_ids: Sequence[str], labels: Sequence[int], *, val: float, test: float, folds: int, seed: int
) -> tuple[list[str], list[int]]:
    """(split, fold) for each row, given each row's case id and label."""
    check(val=val, test=test, folds=folds)
    by_case = case_labels(case_ids, labels)
    cases = list(by_case)
    test_cases = _hold_out(cases, [by_case[c] for c in cases], test, seed, "test")
    rest = [c for c in cases if c not in test_cases]
    val_cases = _hold_out(rest, [by_case[c] for c in rest], val / (1 - test), seed, "val")
    split = ["test" if c in test_cases else "val" if c in val_cases else "train" for c in case_ids]

    fold = [TEST_FOLD] * len(case_ids)
    rows = [i for i, s in enumerate(split) if s != "test"]
    groups = np.array([case_ids[i] for i in rows])
    if len(set(groups)) < folds:
        raise BusnetError(
            f"--folds {folds} needs at least {folds} cases outside the test split; "
            f"there are {len(set(groups))}: lower --folds or --test"
        )
    order = np.argsort(groups, kind="stable")  # independent of the caller's row order
    y = np.array([int(labels[rows[i]]) for i in order])
    for k, members in enumerate(_folds(y, groups[order], folds, seed)):
        for m in members:
            fold[rows[order[m]]] = k
    return split, fold


def fold_sides(split: Sequence[str], fold: Sequence[int], folds: int) -> list[list[str]]:
    """Each fold's side of every row: its val side is fold K, its train side the other train|val rows, test stays."""
    return [
        ["test" if s == "test" else "val" if f == k else "train" for s, f in zip(split, fold)] for k in range(folds)
    ]


def from_fold_sides(sides: Sequence[Sequence[str]]) -> tuple[list[str], list[int]]:
    """(split, fold) columns of predefined folds: the first fold's sides, and the fold whose val side holds the row."""
    fold = [next((k for k, side in enumerate(sides) if side[i] == "val"), TEST_FOLD) for i in range(len(sides[0]))]
    return list(sides[0]), fold


def _folds(y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Each fold's row indices: stratified when each class can fill the folds, else only grouped."""
    x = np.zeros(len(y))
    try:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # "least populated class": expected on small data, see counts
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            return [members for _, members in splitter.split(x, y, groups)]
    except ValueError:  # every class has fewer images than folds
        splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        return [members for _, members in splitter.split(x, y, groups)]
