"""The same image twice: the first copy is kept and the others rejected, unless the copies disagree.

"The same" means the same decoded pixels (encode's `pixels_sha256`), so one image stored in two
containers (PNG and BMP, a PNG saved again with other compression) is one image and cannot land on
two sides of a split. Copies that carry different labels are all rejected, the kept first one too:
which label is right cannot be told, and keeping the first would make file order decide it (real
BUSI has such a pair: `malignant (145).png` is byte-identical to `benign (433).png`).
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.data.dataset import LABELS
from jobs.data.ingest.found import Candidate, Reject


@dataclass
class _First:
    candidate: Candidate
    sha256: str
    labels: set[int]


class Duplicates:
    """Feed rows in a fixed order; `dropped` names kept rows that a later copy turned into rejects."""

    def __init__(self) -> None:
        self._first: dict[str, _First] = {}  # pixels sha256 -> the first copy
        self.dropped: set[str] = set()

    def check(self, candidate: Candidate, row: dict) -> list[Reject]:
        """The rejects this row causes; none: a new image, to be kept."""
        first = self._first.get(row["pixels_sha256"])
        if first is None:
            self._first[row["pixels_sha256"]] = _First(candidate, row["sha256"], {row["label"]})
            return []
        same = "bytes" if row["sha256"] == first.sha256 else "pixels"
        first.labels.add(row["label"])
        kept = first.candidate
        if len(first.labels) == 1:
            return [Reject(candidate.source, str(candidate.image), f"duplicate image: same {same} as {kept.image_id}")]
        labels = " and ".join(LABELS[label] for label in sorted(first.labels))
        why = f"conflicting labels, every copy rejected: same {same} as {{}}, labelled {labels}"
        rejects = [Reject(candidate.source, str(candidate.image), why.format(kept.image_id))]
        if kept.image_id not in self.dropped:
            self.dropped.add(kept.image_id)
            rejects.append(Reject(kept.source, str(kept.image), why.format(candidate.image_id)))
        return rejects
