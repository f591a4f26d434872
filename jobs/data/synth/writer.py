"""Write a synthetic dataset in BUSI's folder layout, with case ids in cases.csv."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from jobs.data.synth.anatomy import make_anatomy
from jobs.data.synth.lesion import DEFAULT_DIFFICULTY, Lesion, draw_lesion, imprint, rasterize, view_of
from jobs.data.synth.scanner import draw_settings, field_of_view, scan
from jobs.errors import BusnetError

CLASS_NAMES = ("benign", "malignant")
PARAMS_FILE = "synth.json"
CASES_FILE = "cases.csv"
FORMAT_VERSION = 2  # 2: difficulty, BUSI-sized lesions
CANVAS_MARGIN = 0.3  # the case's breast is this much wider than one view, to shift views over it


def generate(
    out_dir: str | Path,
    n: int,
    seed: int,
    *,
    min_size: int = 300,
    max_size: int = 800,
    malignant_fraction: float = 0.5,
    images_per_case: tuple[int, int] = (1, 4),
    difficulty: float = DEFAULT_DIFFICULTY,
    force: bool = False,
    progress: bool = False,
) -> dict:
    """Write `n` synthetic B-mode images with lesion masks to `out_dir`; return summary counts.

    Layout: `benign/benign (N).png`, `benign/benign (N)_mask.png`, `malignant/malignant (N).png`, ...,
    `cases.csv` (image, case_id) and `synth.json` (the parameters). The same seed and options give
    byte-identical files. `difficulty` in [0, 1]: how far the classes' BI-RADS traits overlap
    (`jobs.data.synth.lesion`). An existing non-empty folder is refused unless it holds a previous
    `busnet synth` output with the same parameters, or `force` is set; our own files are then replaced.
    """
    params = _validated(n, seed, min_size, max_size, malignant_fraction, images_per_case, difficulty)
    out = Path(out_dir)
    _prepare(out, params, force)

    rng = np.random.default_rng(seed)
    case_sizes, case_labels = _plan_cases(rng, params)
    counters = {0: 0, 1: 0}
    rows = []
    with tqdm(total=n, desc="synth", unit="img", disable=not progress) as bar:
        for case_index, (count, label) in enumerate(zip(case_sizes, case_labels)):
            case_id = f"synth-{case_index + 1:05d}"
            case_rng = np.random.default_rng([seed, case_index])
            for image, mask in _case_images(case_rng, label, count, min_size, max_size, difficulty):
                counters[label] += 1
                name = f"{CLASS_NAMES[label]} ({counters[label]})"
                folder = out / CLASS_NAMES[label]
                Image.fromarray(image, "L").save(folder / f"{name}.png", compress_level=1)
                Image.fromarray(mask.astype(np.uint8) * 255, "L").save(folder / f"{name}_mask.png", compress_level=1)
                rows.append((f"{CLASS_NAMES[label]}/{name}.png", case_id))
                bar.update(1)

    with open(out / CASES_FILE, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["image", "case_id"])
        writer.writerows(rows)
    (out / PARAMS_FILE).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    return {
        "out_dir": str(out),
        "images": n,
        "cases": len(case_sizes),
        "benign": counters[0],
        "malignant": counters[1],
        "benign_cases": int(sum(1 for label in case_labels if label == 0)),
        "malignant_cases": int(sum(1 for label in case_labels if label == 1)),
    }


def _validated(
    n: int,
    seed: int,
    min_size: int,
    max_size: int,
    malignant_fraction: float,
    images_per_case: tuple[int, int],
    difficulty: float,
) -> dict:
    if int(n) != n or n <= 0:
        raise BusnetError(f"n must be a positive number of images, got {n}")
    if min_size < 64:
        raise BusnetError(f"min_size must be at least 64 px, got {min_size}")
    if max_size < min_size + 8:
        raise BusnetError(
            f"max_size must exceed min_size by at least 8 px (images are not square), "
            f"got min_size={min_size}, max_size={max_size}"
        )
    if not 0 <= malignant_fraction <= 1:
        raise BusnetError(f"malignant_fraction must be within 0..1, got {malignant_fraction}")
    if not 0 <= difficulty <= 1:
        raise BusnetError(f"difficulty must be within 0..1, got {difficulty}")
    low, high = images_per_case
    if not 1 <= low <= high:
        raise BusnetError(f"images_per_case must be MIN MAX with 1 <= MIN <= MAX, got {low} {high}")
    return {
        "format_version": FORMAT_VERSION,
        "n": int(n),
        "seed": int(seed),
        "min_size": int(min_size),
        "max_size": int(max_size),
        "malignant_fraction": float(malignant_fraction),
        "images_per_case": [int(low), int(high)],
        "difficulty": float(difficulty),
    }


def _prepare(out: Path, params: dict, force: bool) -> None:
    """Refuse to write over somebody else's files; clear our own previous output."""
    if out.exists() and not out.is_dir():
        raise BusnetError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        previous = out / PARAMS_FILE
        try:
            same = json.loads(previous.read_text()) == params
        except (OSError, ValueError):
            same = False
        if not same:
            raise BusnetError(
                f"{out} is not empty and does not hold a `busnet synth` output with these "
                f"parameters; choose another folder or pass --force to replace it"
            )
    for name in CLASS_NAMES:
        shutil.rmtree(out / name, ignore_errors=True)
        (out / name).mkdir(parents=True)
    for name in (CASES_FILE, PARAMS_FILE):
        (out / name).unlink(missing_ok=True)


def _plan_cases(rng: np.random.Generator, params: dict) -> tuple[list[int], list[int]]:
    """Images per case and each case's label; labels keep the malignant share near the target."""
    low, high = params["images_per_case"]
    fraction = params["malignant_fraction"]
    sizes, labels, malignant, total = [], [], 0, 0
    while total < params["n"]:
        count = min(int(rng.integers(low, high + 1)), params["n"] - total)
        label = int(malignant + count / 2 <= fraction * (total + count)) if 0 < fraction < 1 else int(fraction == 1)
        sizes.append(count)
        labels.append(label)
        malignant += count * label
        total += count
    return sizes, labels


def _image_size(rng: np.random.Generator, min_size: int, max_size: int) -> tuple[int, int]:
    """(height, width) within min..max, never square; most are landscape, some portrait."""
    long_side = int(rng.integers(min_size + max(1, (max_size - min_size) // 6), max_size + 1))
    short_side = int(np.clip(round(long_side * rng.uniform(0.62, 0.92)), min_size, long_side - max(2, long_side // 20)))
    short_side = max(short_side, min_size)
    return (short_side, long_side) if rng.random() < 0.8 else (long_side, short_side)


def _case_images(rng: np.random.Generator, label: int, count: int, min_size: int, max_size: int, difficulty: float):
    """Yield `count` (image uint8 [H, W], mask bool [H, W]) views of one case's lesion."""
    height, width = _image_size(rng, min_size, max_size)
    canvas_width = int(width * (1 + CANVAS_MARGIN))
    anatomy = make_anatomy(rng, height, canvas_width)
    lesion = draw_lesion(rng, label, width, difficulty)
    lesion = _fit(lesion, height, width)
    for _ in range(count):
        offset = int(rng.integers(0, canvas_width - width + 1))
        view = view_of(lesion, rng)
        top, bottom = anatomy.zone("glandular")
        center_col = float(np.clip(view.center_x * canvas_width - offset, 0.2 * width, 0.8 * width))
        col = int(center_col) + offset
        half_height = view.half_width * view.aspect
        row = top[col] + view.depth * (bottom[col] - top[col])
        row = float(np.clip(row, top[col] + 0.5 * half_height, height - 1.1 * half_height - 2))
        row = max(row, 0.06 * height + half_height)
        echo = anatomy.echo_db[:, offset : offset + width]
        settings = draw_settings(rng, height)
        mask = rasterize(view, (row, center_col), (height, width))
        mask &= field_of_view(settings, height, width).astype(bool)
        if not mask.any():  # keep at least the centre pixel
            mask[int(row), int(center_col)] = True
        echo = imprint(echo, mask, view, rng)
        yield scan(echo, settings, rng), mask


def _fit(lesion: Lesion, height: int, width: int) -> Lesion:
    """Shrink a lesion that would not fit in the image."""
    reach = float(lesion.radius.max())
    half_width = min(lesion.half_width, 0.3 * width / reach, 0.35 * height / (lesion.aspect * reach))
    return replace(lesion, half_width=max(half_width, 3.0))
