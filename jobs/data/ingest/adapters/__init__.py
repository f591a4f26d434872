"""Source adapters: one module per dataset layout; the module's name is the source's name.

An adapter module defines `scan(root: Path, source: str) -> Iterator[Found]` (jobs.data.ingest.found):
a Candidate for each image with its label, masks and case, a Reject for each file it cannot use
(or one for the root when the layout is not what it expects), a Skipped for files left out on purpose.
Adding a source = adding a module here; modules starting with "_" are helpers.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from pathlib import Path

from jobs.data.ingest.found import Found
from jobs.errors import BusnetError

Scanner = Callable[[Path, str], Iterator[Found]]


def names() -> list[str]:
    """The source names `busnet ingest --source NAME=PATH` accepts."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def scanner(name: str) -> Scanner:
    if name not in names():
        raise BusnetError(f"unknown source {name!r}; known sources: {', '.join(names())}")
    return importlib.import_module(f"{__name__}.{name}").scan
