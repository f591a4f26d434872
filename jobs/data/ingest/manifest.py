"""manifest.json: what an ingestion produced (counts, rejects, content hash, parameters, shards).

The content hash covers every row's identity, labels, image and mask digests, size, split and fold,
in row order: two datasets with the same hash hold the same rows in the same splits.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence

from jobs.data.dataset import FORMAT_VERSION, LABELS, SPLITS

# Per row, what the hash and the counts need (the image bytes are not kept in memory).
META_FIELDS = ("image_id", "source", "case_id", "label", "sha256", "mask_sha256", "height", "width")


def content_hash(meta: Sequence[dict], split: Sequence[str], fold: Sequence[int]) -> str:
    digest = hashlib.sha256()
    for row, s, f in zip(meta, split, fold):
        digest.update(json.dumps([*(row[k] for k in META_FIELDS), s, int(f)]).encode() + b"\n")
    return digest.hexdigest()


def _tally(rows: list[tuple[dict, str]]) -> dict:
    labels = Counter(LABELS[m["label"]] for m, _ in rows)
    return {
        "images": len(rows),
        "cases": len({m["case_id"] for m, _ in rows}),
        **{name: labels.get(name, 0) for name in LABELS},
    }


def counts(
    meta: Sequence[dict],
    split: Sequence[str],
    fold: Sequence[int],
    rejects: Sequence[dict],
    skipped: dict[str, Counter],
) -> dict:
    by_source, by_split, by_fold = defaultdict(list), defaultdict(list), defaultdict(list)
    for row, s, f in zip(meta, split, fold):
        by_source[row["source"]].append((row, s))
        by_split[s].append((row, s))
        if s != "test":
            by_fold[str(f)].append((row, s))
    sources = {}
    for name, rows in sorted(by_source.items()):
        sources[name] = {**_tally(rows), "with_mask": sum(1 for m, _ in rows if m["mask_sha256"])}
    return {
        **_tally([(m, s) for m, s in zip(meta, split)]),
        "by_source": sources,
        "by_split": {s: _tally(by_split.get(s, [])) for s in SPLITS},
        "by_fold": {f: _tally(rows) for f, rows in sorted(by_fold.items(), key=lambda kv: int(kv[0]))},
        "rejected": dict(sorted(Counter(r["source"] for r in rejects).items())),
        "skipped": {name: dict(sorted(c.items())) for name, c in sorted(skipped.items())},
    }


def build(
    meta: Sequence[dict],
    split: Sequence[str],
    fold: Sequence[int],
    *,
    rejects: list[dict],
    skipped: dict[str, Counter],
    params: dict,
    files: list[str],
) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "num_rows": len(meta),
        "content_hash": content_hash(meta, split, fold),
        "counts": counts(meta, split, fold, rejects, skipped),
        "rejects": rejects,
        "params": params,
        "files": files,
    }


def summary(manifest: dict, max_rejects: int = 20) -> str:
    """A short human summary of a manifest: per source and split, and the first rejects."""
    c = manifest["counts"]
    lines = [f"{'':12} {'images':>7} {'cases':>6} {'benign':>7} {'malign.':>7}"]
    for name, t in [*c["by_source"].items(), *c["by_split"].items(), ("total", c)]:
        lines.append(f"{name:12} {t['images']:7d} {t['cases']:6d} {t['benign']:7d} {t['malignant']:7d}")
    for name, reasons in c["skipped"].items():
        lines.append(f"skipped {name}: " + ", ".join(f"{n} {why}" for why, n in reasons.items()))
    rejects = manifest["rejects"]
    lines.append(f"{len(rejects)} rejected" + (":" if rejects else ""))
    lines += [f"  {r['source']}: {r['file']}: {r['reason']}" for r in rejects[:max_rejects]]
    if len(rejects) > max_rejects:
        lines.append(f"  ... {len(rejects) - max_rejects} more in manifest.json")
    lines.append(
        f"{manifest['num_rows']} rows in {len(manifest['files'])} shard(s); "
        f"content hash {manifest['content_hash'][:16]}"
    )
    return "\n".join(lines)
