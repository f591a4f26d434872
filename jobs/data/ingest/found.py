"""What a source adapter reports for each file it looks at."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_LABELS = {"benign": 0, "b": 0, "0": 0, "malignant": 1, "m": 1, "1": 1}


@dataclass(frozen=True)
class Candidate:
    """An image to ingest, with everything its source says about it."""

    source: str
    key: str  # path inside the source (posix): unique there, the tail of the image id
    image: Path
    label: int
    case: str | None = None  # the source's case / patient id; None: the image is its own case
    masks: tuple[Path, ...] = ()  # several files are one lesion mask (their union)
    # (left, top, right, bottom) in pixels, applied once: an image already of the box's size is kept as is
    crop: tuple[int, int, int, int] | None = None
    name: str | None = None  # the source table's own name of the image (fold files use it); None: file stem
    frame: int | None = None  # which frame of a multi-frame file (DICOM), 1 = the first; None: its only/first

    @property
    def listed_name(self) -> str:
        return self.name if self.name else Path(self.key).stem

    @property
    def image_id(self) -> str:
        return f"{self.source}/{self.key}"

    @property
    def case_id(self) -> str:
        return f"{self.source}/{self.case if self.case else self.key}"


@dataclass(frozen=True)
class Reject:
    """A file left out, and why (recorded in the manifest; fatal with --strict)."""

    source: str
    file: str
    reason: str

    def to_dict(self) -> dict:
        return {"source": self.source, "file": self.file, "reason": self.reason}


@dataclass(frozen=True)
class Skipped:
    """A file left out on purpose (e.g. BUSI's normal/ images), counted by reason."""

    source: str
    file: str
    reason: str


Found = Candidate | Reject | Skipped


def parse_label(value: object) -> int | None:
    """0 benign / 1 malignant from the spellings datasets use (benign, B, 0, ...); None if unknown."""
    text = str(value).strip().lower() if value is not None else ""
    if text.endswith(".0"):  # spreadsheets turn 1 into 1.0
        text = text[:-2]
    return _LABELS.get(text)


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


@dataclass(frozen=True)
class NamedImages:
    """A folder's image files by name (file name without extension, or an adapter's key of it).

    A name that several files share (a.png + a.jpg, BUSIS's case0001.png + case1.png) is ambiguous:
    which file a table row means cannot be told, so none of them is used and each is a Reject, as is
    every other file there that is not an image. Every file of the folder is accounted for.
    """

    by_name: dict[str, Path]
    ambiguous: set[str]
    rejects: list[Reject]


def images_by_stem(directory: Path | None, source: str, key: Callable[[str], str] = str) -> NamedImages:
    """The image files of `directory` keyed by `key(stem)` (none if there is no folder)."""
    if directory is None or not directory.is_dir():
        return NamedImages({}, set(), [])
    files = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    rejects = [Reject(source, str(p), "not an image file") for p in files if p.is_file() and not is_image(p)]
    named: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        if is_image(path):
            named[key(path.stem)].append(path)
    ambiguous = {name for name, paths in named.items() if len(paths) > 1}
    for name in sorted(ambiguous):
        rejects += same_name_rejects(source, name, named[name])
    return NamedImages({n: paths[0] for n, paths in named.items() if n not in ambiguous}, ambiguous, rejects)


def same_name_rejects(source: str, name: str, paths: list[Path]) -> list[Reject]:
    files = ", ".join(p.name for p in paths)
    reason = f"{len(paths)} files named {name} ({files}): which one is meant is ambiguous, none is used"
    return [Reject(source, str(p), reason) for p in paths]


def subfolder(root: Path, *names: str) -> Path | None:
    """The first existing subfolder among spellings (releases differ: Original/ vs original/)."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def escapes(path: Path, root: Path) -> bool:
    """Whether `path`, every symlink followed, lies outside `root` (resolved alike): a table's `../x`,
    an absolute path or a symlink out of the source must not put a file from elsewhere in a dataset."""
    try:
        return not path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return True
