"""The tree is the data flow: imports go down it, never back up, and no module imports itself back.

Layers, lowest first (jobs/README.md draws the same flow):
  shared plumbing (jobs.errors, jobs.storage, jobs.runtime, jobs.tracking, jobs.progress) <- models
  <- jobs.data <- jobs.train <- jobs.evaluate <- serve <- the CLI, its commands, the benchmarks and the demo.
serve sits above the batch stages only so that nothing below may import it; it may itself use nothing
but models and the shared plumbing. The graph is grimp's (import-linter's engine): every import
statement counts, the lazy ones inside functions too.
"""

from __future__ import annotations

import grimp
import pytest

PLUMBING = ("jobs.errors", "jobs.storage", "jobs.runtime", "jobs.tracking", "jobs.progress")
LAYERS = (
    PLUMBING,
    ("models",),
    ("jobs.data",),
    ("jobs.train",),
    ("jobs.evaluate",),
    ("serve",),
    ("jobs.cli", "jobs.commands", "jobs.bench", "jobs.demo"),
)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("models", "jobs", "serve")


def _layer_of(module: str) -> int | None:
    for index, members in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return index
    return None


def test_every_module_has_a_layer(graph):
    homeless = sorted(m for m in graph.modules if _layer_of(m) is None and m not in ("jobs", "models", "serve"))
    assert not homeless, f"modules outside every layer (add them to LAYERS): {homeless}"


def test_imports_go_down_the_data_flow(graph):
    upward = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            low, high = _layer_of(importer), _layer_of(imported)
            if low is not None and high is not None and high > low:
                upward.append(f"{importer} -> {imported}")
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)


def test_serve_uses_only_models_and_the_shared_plumbing(graph):
    allowed = ("models", "serve", *PLUMBING)
    wrong = [
        f"{importer} -> {imported}"
        for importer in sorted(graph.modules)
        if importer.startswith("serve")
        for imported in sorted(graph.find_modules_directly_imported_by(importer))
        if not any(imported == a or imported.startswith(a + ".") for a in allowed)
    ]
    assert not wrong, "serve imports beyond models and the shared plumbing:\n" + "\n".join(wrong)


def test_no_import_cycles(graph):
    cycles = set()
    for importer in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(importer):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.add(" -> ".join((importer, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))
