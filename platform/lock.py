"""Print the lock of busnet's runtime dependencies: every package busnet needs, at the version installed here.

    .venv/bin/python platform/lock.py > constraints.txt

Walks the installed requirement tree from busnet's own metadata (extras included, markers evaluated for this
interpreter), so the lock holds exactly the packages the image installs, at the versions the tests ran with.
Not a module of busnet: this folder is not a package (it would shadow the standard `platform`).
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEADER = """\
# The lock of every runtime dependency of busnet (setup.sh and platform/Containerfile install with -c this file).
# Generated from a working venv by `.venv/bin/python platform/lock.py > constraints.txt`; do not edit by hand.
# Python {python}; torch is installed first and by itself (setup.sh) so that pip never picks another torch.
"""


def _needed(requirement: Requirement, extras: set[str]) -> bool:
    """Whether a requirement applies to this interpreter with these extras asked for."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras or {""})


def runtime_closure(root: str = "busnet") -> dict[str, str]:
    """Installed name -> version of every package `root` needs, itself excluded."""
    versions: dict[str, str] = {}
    pending: list[tuple[str, set[str]]] = [(root, set())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        dist = metadata.distribution(name)
        if name != root:
            versions[name] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            if _needed(requirement, extras):
                pending.append((canonicalize_name(requirement.name), set(requirement.extras)))
    return versions


def lock_text() -> str:
    python = ".".join(map(str, sys.version_info[:2]))
    pins = "".join(f"{name}=={version}\n" for name, version in sorted(runtime_closure().items()))
    return HEADER.format(python=python) + pins


if __name__ == "__main__":
    sys.stdout.write(lock_text())
