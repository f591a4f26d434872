"""BUSI's folder layout, shared by the busi and synthetic adapters.

    <root>/benign/benign (N).png  + benign (N)_mask.png [+ benign (N)_mask_1.png ...]
    <root>/malignant/...
    <root>/normal/...             (no lesion: skipped and counted, as in the paper)
The root may also be the folder that holds `Dataset_BUSI_with_GT/`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from jobs.data.ingest.found import Candidate, Found, Reject, Skipped, is_image, same_name_rejects

CLASSES = {"benign": 0, "malignant": 1}
SKIPPED = ("normal",)
_MASK = re.compile(r"^(?P<stem>.+)_mask(_\d+)?$", re.IGNORECASE)


def resolve_root(root: Path) -> Path:
    inner = root / "Dataset_BUSI_with_GT"
    return inner if inner.is_dir() and not (root / "benign").is_dir() else root


def scan_busi(root: Path, source: str, cases: dict[str, str] | None = None) -> Iterator[Found]:
    """Candidates from a BUSI layout; `cases` maps 'benign/benign (3).png' to a case id."""
    root = resolve_root(root)
    if not root.is_dir() or not any((root / c).is_dir() for c in CLASSES):
        yield Reject(source, str(root), "unknown layout: expected benign/ and malignant/ folders (BUSI layout)")
        return
    for skipped in SKIPPED:
        for path in sorted((root / skipped).glob("*")) if (root / skipped).is_dir() else []:
            if is_image(path) and not _MASK.match(path.stem):
                yield Skipped(source, str(path), f"{skipped}/ (no lesion)")
    for folder, label in CLASSES.items():
        directory = root / folder
        if not directory.is_dir():
            continue
        named: dict[str, list[Path]] = {}
        masks: dict[str, list[Path]] = {}
        for path in sorted(p for p in directory.iterdir() if not p.name.startswith(".")):
            match = _MASK.match(path.stem)
            if not is_image(path):
                yield Reject(source, str(path), "not an image file (BUSI layout)")
            elif match:
                masks.setdefault(match["stem"], []).append(path)
            else:
                named.setdefault(path.stem, []).append(path)
        images = {stem: paths[0] for stem, paths in named.items() if len(paths) == 1}
        for stem, paths in sorted(named.items()):
            if len(paths) > 1:  # a.png + a.jpg: which one its mask belongs to cannot be told
                yield from same_name_rejects(source, stem, paths)
                yield from (
                    Reject(source, str(m), f"mask of the ambiguous image name {stem}") for m in masks.pop(stem, [])
                )
        for stem in sorted(set(masks) - set(images)):
            for path in masks[stem]:
                yield Reject(source, str(path), f"mask without its image {stem}.png")
        for stem, path in sorted(images.items()):
            key = f"{folder}/{path.name}"
            case = cases.get(key) if cases else None
            yield Candidate(source, key, path, label, case=case, masks=tuple(masks.get(stem, ())))
