"""manifest.json: what an ingestion produced (counts, rejects, content hash, parameters, shards).

The content hash covers every row's identity, labels, image and mask digests, size, split, fold and
per-fold sides, in row order: two datasets with the same hash hold the same rows in the same splits.
`integrity` reports cases per source, images per case, mixed-label cases, crops and the
cross-split check (jobs.data.ingest.cases).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence

from jobs.data.dataset import FORMAT_VERSION, LABELS, SPLITS

# Per row, what the hash and the counts need (the image bytes are not kept in memory).
META_FIELDS = ("image_id", "source", "case_id", "label", "sha256", "mask_sha256", "height", "width")


def content_hash(
    meta: Sequence[dict], split: Sequence[str], fold: Sequence[int], sides: Sequence[Sequence[str]]
) -> str:
    digest = hashlib.sha256()
    for i, (row, s, f) in enumerate(zip(meta, split, fold)):
        row_sides = [side[i] for side in sides]
        digest.update(json.dumps([*(row[k] for k in META_FIELDS), s, int(f), row_sides]).encode() + b"\n")
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
    sides: Sequence[Sequence[str]],
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
        crops = Counter(m["crop"] for m, _ in rows if m["crop"])
        sources[name] = {**_tally(rows), "with_mask": sum(1 for m, _ in rows if m["mask_sha256"])}
        sources[name].update({f"crop_{how}": n for how, n in sorted(crops.items())})
    return {
        **_tally([(m, s) for m, s in zip(meta, split)]),
        "by_source": sources,
        "by_split": {s: _tally(by_split.get(s, [])) for s in SPLITS},
        "by_fold": {f: _tally(rows) for f, rows in sorted(by_fold.items(), key=lambda kv: int(kv[0]))},
        "fold_sides": [
            {s: _tally([(m, s) for m, side_of in zip(meta, side) if side_of == s]) for s in SPLITS} for side in sides
        ],
        "rejected": dict(sorted(Counter(r["source"] for r in rejects).items())),
        "skipped": {name: dict(sorted(c.items())) for name, c in sorted(skipped.items())},
    }


def build(
    meta: Sequence[dict],
    split: Sequence[str],
    fold: Sequence[int],
    sides: Sequence[Sequence[str]],
    *,
    rejects: list[dict],
    skipped: dict[str, Counter],
    integrity: dict,
    params: dict,
    files: list[str],
) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "num_rows": len(meta),
        "content_hash": content_hash(meta, split, fold, sides),
        "counts": counts(meta, split, fold, sides, rejects, skipped),
        "integrity": integrity,
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
    for name, t in c["by_source"].items():
        crops = {k[5:]: v for k, v in t.items() if k.startswith("crop_")}
        if crops:
            lines.append(f"crops {name}: " + ", ".join(f"{n} {how}" for how, n in crops.items()))
    integrity = manifest["integrity"]
    for name, per in integrity["cases"].items():
        spread = ", ".join(f"{n} with {size}" for size, n in per["images_per_case"].items())
        lines.append(f"cases {name}: {per['cases']} ({spread} image(s))")
    for case in integrity["mixed_label_cases"]:
        lines.append(
            f"mixed-label case {case['case_id']}: {case.get('benign', 0)} benign, "
            f"{case.get('malignant', 0)} malignant ({'rejected' if case['policy'] == 'reject' else 'kept'})"
        )
    lines.append("no case and no identical image crosses a split boundary (checked for the split and every fold)")
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
