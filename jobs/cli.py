"""`busnet`: one console script, one thin module per command under `jobs/commands/`.

Each command module defines `add_arguments(parser)` and `run(args) -> dict` and keeps heavy imports
(ray, torch) inside `run`, so that `busnet --help` is instant. `run` prints what people read and
returns its summary, which `--json` prints as the one JSON object on stdout (everything else then
goes to stderr); a summary with a non-zero "failed" exits 1. Every command also takes `--verbose`
(Ray's own logs, hidden otherwise) and, where a module sets `CONFIG_FILE`, `--config FILE.yaml` (the command prints
the effective configuration once its checks pass: `config_file.announce`). Failures print one
line and exit non-zero; set BUSNET_DEBUG=1 to see the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import traceback
from importlib import metadata

from jobs.commands import config_file
from jobs.runtime import VERBOSE_HELP

# The order in which `busnet --help` lists the commands; a command appears once its module exists.
COMMAND_ORDER = (
    "synth",
    "ingest",
    "train",
    "tune",
    "evaluate",
    "cv",
    "ablation",
    "models",
    "weights",
    "serve",
    "predict",
    "export",
    "bench",
    "demo",
)


def _command_modules() -> dict:
    found = {}
    for name in COMMAND_ORDER:
        try:
            found[name] = importlib.import_module(f"jobs.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"jobs.commands.{name}":
                raise
    return found


def version() -> str:
    try:
        return metadata.version("busnet")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="busnet",
        description="Train, tune, evaluate and serve Hybrid-MT-ESTAN (breast ultrasound) on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"busnet {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _command_modules().items():
        summary = (module.__doc__ or name).strip().splitlines()[0].replace("%", "%%")
        command = sub.add_parser(
            name,
            help=summary,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if getattr(module, "CONFIG_FILE", False):
            config_file.add_config_flag(command)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
        for leaf in leaf_parsers(command):
            _add_common_flags(leaf)
    return parser


def leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers that take flags: `parser` itself, or each of its sub-commands' (models list, bench data)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for action in subs for child in action.choices.values() for leaf in leaf_parsers(child)]


def _add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object (the summary) on stdout, only that")
    if "--verbose" not in parser._option_string_actions:
        parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    parser.set_defaults(_parser=parser)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed arguments; `--config FILE` values become the flags' defaults, so given flags win."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    given = [
        w.split("=", 1)[1] if "=" in w else (words[i + 1] if i + 1 < len(words) else "")
        for i, w in enumerate(words)
        if w == "--config" or w.startswith("--config=")
    ]
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if given and words and words[0] in commands and "--config" in commands[words[0]]._option_string_actions:
        config_file.apply(commands[words[0]], given[-1])  # before parsing: the file may give required flags
    return parser.parse_args(words)


def main(argv: list[str] | None = None) -> int:
    command = "busnet"
    try:
        args = parse(argv)
        command = f"busnet {args.command}"
        from jobs import progress
        from jobs.runtime import quiet_ray

        quiet_ray(args.verbose)  # every command, before anything imports ray.data
        progress.decide()  # bars on a terminal, lines in a log: before --json moves stdout, before Ray starts
        stdout = sys.stdout
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            summary = args._run(args) or {}
        if args.json:
            print(json.dumps(summary, default=str), file=stdout, flush=True)
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, not a traceback
        if os.environ.get("BUSNET_DEBUG"):
            traceback.print_exc()
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{command}: error: {message}", file=sys.stderr)
        return 1
    return 1 if summary.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
