"""The drawn k-fold protocol over the whole dataset, derived at read time from the `fold` column.

An ingested dataset with drawn splits has k case-disjoint folds over train+val (`fold` 0..k-1) and
the held-out test split (`fold` -1): k+1 case-disjoint, label-stratified groups that cover every
row. Fold "kKof<k+1>" (K = 0..k) of this protocol tests on group K, validates on group K+1 (cyclically)
and trains on the other k-1 groups, so every image is tested exactly once, by a model that never
saw its case. No format change: the groups are the stored `fold` values, read through the filter.
"""

from __future__ import annotations

from ray.data.expressions import Expr, col

from jobs.data.dataset import TEST_FOLD
from jobs.errors import BusnetError

PREFIX = "k"  # fold "k2of6": fold 2 of this protocol's 6 (an int fold is one of the dataset's stored sides)


def name(index: int, folds: int) -> str:
    """Protocol fold `index` (0..k) of a dataset with `folds` = k stored folds."""
    return f"{PREFIX}{index}of{folds + 1}"


def parse(fold: str) -> tuple[int, int]:
    """(K, k + 1) of fold "kKof<k+1>"; BusnetError for anything else."""
    index, _, total = fold.removeprefix(PREFIX).partition("of")
    if not (fold.startswith(PREFIX) and index.isdigit() and total.isdigit() and int(index) < int(total)):
        raise BusnetError(f"fold {fold!r}: expected an integer or kKofN (fold K of the N-fold protocol)")
    return int(index), int(total)


def check(fold: str, folds: int) -> None:
    """BusnetError unless `fold` is a protocol fold of a dataset with `folds` stored folds."""
    if parse(fold)[1] != folds + 1:
        raise BusnetError(
            f"no fold {fold!r}: the dataset's k-fold protocol has folds {name(0, folds)}..{name(folds, folds)}"
        )


def split_filter(split: str, fold: str) -> Expr:
    """Rows of `split` in protocol fold `fold`: test group K, val group K+1 (cyclically), train the rest."""
    index, total = parse(fold)
    ring = [*range(total - 1), TEST_FOLD]  # the stored folds, then the held-out test split
    test, val = ring[index], ring[(index + 1) % total]
    if split == "test":
        return col("fold") == test
    if split == "val":
        return col("fold") == val
    return (col("fold") != test) & (col("fold") != val)
