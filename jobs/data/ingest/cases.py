"""Case-level integrity: cases whose images disagree on the label, and nothing shared across splits.

A case (patient / lesion) is the unit of splitting: a second view of a lesion the model trained on
must not be in its validation or test data, and neither may the same pixels under another file name.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from jobs.data.dataset import LABELS
from jobs.data.ingest.found import Candidate, Reject
from jobs.errors import BusnetError

MIXED_POLICIES = ("reject", "keep")


def mixed_label_cases(candidates: Sequence[Candidate]) -> dict[str, dict[str, int]]:
    """{case id: {benign: n, malignant: n}} for each case whose images carry both labels."""
    labels: dict[str, Counter] = defaultdict(Counter)
    for candidate in candidates:
        labels[candidate.case_id][LABELS[candidate.label]] += 1
    return {case: dict(sorted(count.items())) for case, count in sorted(labels.items()) if len(count) > 1}


def apply_mixed_policy(candidates: list[Candidate], policy: str) -> tuple[list[Candidate], list[Reject], list[dict]]:
    """(kept candidates, rejects, report): with "reject" every image of a mixed-label case is left out."""
    if policy not in MIXED_POLICIES:
        raise BusnetError(f"--mixed-label-cases {policy!r}: expected one of {', '.join(MIXED_POLICIES)}")
    mixed = mixed_label_cases(candidates)
    report = [{"case_id": case, **labels, "policy": policy} for case, labels in mixed.items()]
    if policy == "keep" or not mixed:
        return candidates, [], report
    rejects = [
        Reject(c.source, str(c.image), f"case {c.case_id} mixes benign and malignant images (--mixed-label-cases)")
        for c in candidates
        if c.case_id in mixed
    ]
    return [c for c in candidates if c.case_id not in mixed], rejects, report


def crossings(meta: Sequence[dict], sides: dict[str, Sequence[str]]) -> dict[str, list[str]]:
    """What crosses a split boundary, per assignment: {"<assignment>: case": ids, "<assignment>: image": ids}.

    `sides` maps an assignment's name ("split", "fold 0", ...) to each row's side ("" = unused there).
    Cases are compared by case_id, images by the sha256 of their decoded pixels.
    """
    found: dict[str, list[str]] = {}
    for name, side in sides.items():
        for what, key in (("case", "case_id"), ("image", "pixels_sha256")):
            seen: dict[str, set[str]] = defaultdict(set)
            ids: dict[str, list[str]] = defaultdict(list)
            for row, s in zip(meta, side):
                if s:
                    seen[row[key]].add(s)
                    ids[row[key]].append(row["image_id"] if what == "image" else row["case_id"])
            crossed = sorted({ids[k][0] for k, s in seen.items() if len(s) > 1})
            if crossed:
                found[f"{name}: {what}"] = crossed
    return found


def images_per_case(meta: Sequence[dict]) -> dict[str, dict]:
    """Per source: cases, and the distribution of images per case ({images in a case: cases})."""
    per_case: dict[str, Counter] = defaultdict(Counter)
    for row in meta:
        per_case[row["source"]][row["case_id"]] += 1
    report = {}
    for source, sizes in sorted(per_case.items()):
        spread = sorted(Counter(sizes.values()).items())
        report[source] = {"cases": len(sizes), "images_per_case": {str(n): k for n, k in spread}}
    return report
