"""ingest(): sources in their own layouts -> one published busnet dataset.

Nothing lost, nothing let in: a missing source root stops the ingestion before any work; every file
an adapter sees is a row, a Reject or a Skipped; an image or mask that resolves outside its source
root (symlink, `..`) is rejected unread. Deterministic: candidates are processed in image-id order
(source name + path inside the source); an image listed twice keeps its first listing, or is
rejected when the listings disagree on the label; copies of one image (same decoded pixels,
jobs.data.ingest.duplicates) keep the first, or are all rejected when their labels disagree; splits
are seeded: the same input always gives the same rows, splits and content hash. Cases whose images
disagree on the label are rejected (or kept, by policy) and reported, and an explicit check over
the final assignment refuses any case or image on two sides of a split/fold.
With `folds_from` the benchmark's predefined folds are used as listed instead of drawn ones.
The dataset is staged in a local temporary folder and published with jobs.storage.publish_dir,
so a crash never leaves something a reader takes for a whole dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from jobs import storage
from jobs.data import splits
from jobs.data.dataset import MANIFEST
from jobs.data.ingest import adapters, cases, manifest
from jobs.data.ingest.duplicates import Duplicates
from jobs.data.ingest.encode import encode
from jobs.data.ingest.folds import read_folds
from jobs.data.ingest.found import Candidate, Reject, Skipped, escapes
from jobs.data.ingest.writer import ShardWriter, add_splits
from jobs.errors import BusnetError


def _local_sources(sources: Mapping[str, str | Path] | Iterable[tuple[str, str | Path]]) -> list[tuple[str, Path]]:
    pairs = list(sources.items()) if isinstance(sources, Mapping) else list(sources)
    if not pairs:
        raise BusnetError("no --source given (e.g. --source busi=/data/Dataset_BUSI_with_GT)")
    names = [name for name, _ in pairs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BusnetError(f"source {repeated[0]!r} given twice; give each source once")
    resolved = []
    for name, path in sorted(pairs, key=lambda pair: pair[0]):
        adapters.scanner(name)  # unknown names fail before any work
        if storage.is_remote(str(path)):
            raise BusnetError(f"--source {name}={path}: sources are read from local folders or files")
        resolved.append((name, storage.local_path(path)))
    return resolved


def _ordered_map(pool: Executor, fn: Callable, items: Sequence, window: int) -> Iterator:
    """pool.map with at most `window` results in flight (bounded memory), in input order."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class _Rejects:
    """Collects rejects in the order found; with strict, the first one stops the ingestion."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.items: list[dict] = []

    def add(self, reject: Reject) -> None:
        if self.strict:
            raise BusnetError(f"{reject.file}: {reject.reason} (--strict)")
        self.items.append(reject.to_dict())


def _check_roots(sources: list[tuple[str, Path]]) -> None:
    """A source that is not there is a typo or an unmounted disk, not an empty dataset: stop."""
    for name, root in sources:
        if not root.exists():
            raise BusnetError(f"--source {name}={root}: not found")


def _escaping(candidate: Candidate, root: Path) -> Reject | None:
    """A Reject when the image or a mask resolves outside the source root (a symlink or `..` out)."""
    for path in (candidate.image, *candidate.masks):
        if escapes(path, root):
            what = "image" if path == candidate.image else f"mask {path}"
            reason = f"{what} resolves outside the source root {root} (symlink or '..'): not read"
            return Reject(candidate.source, str(candidate.image), reason)
    return None


def _scan(sources: list[tuple[str, Path]], rejects: _Rejects) -> tuple[list[Candidate], dict[str, Counter]]:
    candidates: dict[str, Candidate] = {}
    conflicting: set[str] = set()  # image ids listed with different labels: rejected, and not kept
    skipped: dict[str, Counter] = defaultdict(Counter)
    for name, root in sources:
        base = root if root.is_dir() else root.parent  # the folder source's root is a table file
        for item in adapters.scanner(name)(root, name):
            if isinstance(item, Skipped):
                skipped[item.source][item.reason] += 1
            elif isinstance(item, Reject):
                rejects.add(item)
            elif (outside := _escaping(item, base)) is not None:
                rejects.add(outside)
            elif item.image_id in conflicting:
                continue  # its file is rejected already
            elif item.image_id not in candidates:
                candidates[item.image_id] = item
            elif candidates[item.image_id].label != item.label:  # no listing overrides another
                conflicting.add(item.image_id)
                del candidates[item.image_id]
                rejects.add(Reject(name, str(item.image), "listed more than once, with different labels"))
            else:
                rejects.add(Reject(name, str(item.image), "duplicate image: listed more than once"))
    return [candidates[k] for k in sorted(candidates)], skipped


def ingest(
    sources: Mapping[str, str | Path] | Iterable[tuple[str, str | Path]],
    out: str,
    *,
    val: float = 0.1,
    test: float = 0.2,
    folds: int = 5,
    seed: int = 0,
    strict: bool = False,
    shard_mb: float = 64.0,
    workers: int | None = None,
    progress: bool = True,
    mixed_label_cases: str = "reject",
    folds_from: str | Path | None = None,
) -> dict:
    """Ingest `sources` ({name: path}, names from jobs.data.ingest.adapters) into the dataset at `out`.

    Returns the manifest (also written as <out>/manifest.json). Raises BusnetError on bad
    arguments, an unusable output URI, an empty result, (strict) the first reject, or fold files
    (`folds_from`, jobs.data.ingest.folds) that put a case on two sides.
    """
    resolved = _local_sources(sources)
    if shard_mb <= 0:
        raise BusnetError(f"--shard-mb {shard_mb}: must be positive")
    if folds_from is None:
        splits.check(val=val, test=test, folds=folds)
    _check_roots(resolved)
    storage.check_bucket(out)  # a bad URI, missing bucket or unreachable endpoint fails before any work
    storage.check_publishable(out)  # so does a folder busnet would not publish into
    rejects = _Rejects(strict)
    candidates, skipped = _scan(resolved, rejects)
    candidates, mixed_rejects, mixed = cases.apply_mixed_policy(candidates, mixed_label_cases)
    for reject in mixed_rejects:
        rejects.add(reject)
    workers = workers or min(8, os.cpu_count() or 1)

    with tempfile.TemporaryDirectory(prefix="busnet-ingest-") as tmp:
        spool = ShardWriter(Path(tmp) / "spool", max_bytes=int(shard_mb * 1024 * 1024))
        meta: list[dict] = []
        duplicates = Duplicates()
        with (
            ThreadPoolExecutor(workers) as pool,
            tqdm(total=len(candidates), desc="ingest", unit="img", disable=not progress) as bar,
        ):
            for candidate, row in zip(candidates, _ordered_map(pool, encode, candidates, 4 * workers)):
                bar.update()
                found = [row] if isinstance(row, Reject) else duplicates.check(candidate, row)
                for reject in found:
                    rejects.add(reject)
                if not found:
                    spool.add(row)
                    meta.append(_meta(row))
        spool.close()
        meta = [m for m in meta if m["image_id"] not in duplicates.dropped]
        if not meta:
            raise BusnetError(
                f"no images ingested ({len(rejects.items)} rejected); "
                + (
                    f"first: {rejects.items[0]['file']}: {rejects.items[0]['reason']}"
                    if rejects.items
                    else "the sources hold no labelled images"
                )
            )
        split, fold, sides, folds_report = _assign(meta, val, test, folds, seed, folds_from)
        crossed = cases.crossings(meta, {"split": split, **{f"fold {k}": side for k, side in enumerate(sides)}})
        if crossed:
            where, ids = next(iter(crossed.items()))
            raise BusnetError(f"integrity check: {where} on two sides: {', '.join(ids[:10])}")
        integrity = {
            "cases": cases.images_per_case(meta),
            "mixed_label_cases": mixed,
            "crosses_split": {},  # checked: nothing (else the ingestion stopped above)
            "folds": folds_report,
        }
        staging = Path(tmp) / "dataset"
        files = add_splits(spool, staging, split, fold, sides, drop=duplicates.dropped)
        params = {
            "sources": {name: str(path) for name, path in resolved},
            "val": val,
            "test": test,
            "folds": len(sides),
            "seed": seed,
            "strict": strict,
            "shard_mb": shard_mb,
            "mixed_label_cases": mixed_label_cases,
            "folds_from": None if folds_from is None else str(folds_from),
        }
        result = manifest.build(
            meta,
            split,
            fold,
            sides,
            rejects=rejects.items,
            skipped=skipped,
            integrity=integrity,
            params=params,
            files=files,
        )
        (staging / MANIFEST).write_text(json.dumps(result, indent=1) + "\n")
        storage.publish_dir(staging, out)
    return result


def _assign(
    meta: list[dict], val: float, test: float, folds: int, seed: int, folds_from: str | Path | None
) -> tuple[list[str], list[int], list[list[str]], dict | None]:
    """(split, fold, each fold's sides, folds report): drawn by case, or the predefined folds as listed."""
    if folds_from is not None:
        sides, report = read_folds(Path(folds_from).expanduser(), meta)
        split, fold = splits.from_fold_sides(sides)
        return split, fold, sides, report
    split, fold = splits.assign(
        [m["case_id"] for m in meta], [m["label"] for m in meta], val=val, test=test, folds=folds, seed=seed
    )
    return split, fold, splits.fold_sides(split, fold, folds), None


def _meta(row: dict) -> dict:
    mask_sha = hashlib.sha256(row["mask"]).hexdigest() if row["mask"] is not None else ""
    kept = (*manifest.META_FIELDS, "name", "crop", "pixels_sha256")
    return {**{k: row[k] for k in kept if k in row}, "mask_sha256": mask_sha}
