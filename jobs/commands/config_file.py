"""`--config FILE.yaml`: a command's flags written down once, checked like the flags themselves.

The file's keys are the command's flag names (`batch_size` or `batch-size`); a flag given on the
command line wins over the file. An unknown key, a value of the wrong type or outside the flag's
choices is refused with one line naming the file, the key and what is allowed, before anything runs.
The effective configuration (every flag's value, however it was set) is what a run saves beside its
results (`config.yaml`) and what `--resume` compares.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from jobs import storage
from jobs.errors import BusnetError

SAVED_NAME = "config.yaml"  # the effective configuration, saved in the run's folder
NOT_CONFIG = ("help", "config", "json", "version")  # flags that say how to run, not what


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE.yaml",
        help="read flags from this YAML file (keys: the flag names, e.g. epochs: 12); flags given win",
    )


def apply(parser: argparse.ArgumentParser, path: str) -> None:
    """Make the file's values `parser`'s defaults, after checking each against its flag."""
    try:
        values = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise BusnetError(f"--config {path}: cannot read it ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise BusnetError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if values is None:
        return
    if not isinstance(values, dict):
        raise BusnetError(f"--config {path}: expected a mapping of flag names to values, got {type(values).__name__}")
    actions = _actions(parser)
    for key, value in values.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            allowed = ", ".join(sorted(actions))
            raise BusnetError(f"--config {path}: unknown key {key!r}; allowed: {allowed}")
        action = actions[dest]
        checked = _check(path, key, value, action)
        parser.set_defaults(**{dest: checked})
        action.required = False  # given by the file


def effective(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """Every configurable flag's value after parsing: what a run saves and `--resume` compares."""
    return {dest: _plain(getattr(args, dest)) for dest in _actions(parser) if hasattr(args, dest)}


def announce(command: str, config: dict[str, Any]) -> None:
    """The effective configuration, one line on stderr as the work starts: `epochs=12, lr=0.001, ...`."""
    shown = ", ".join(f"{key}={value}" for key, value in config.items() if value is not None)
    print(f"busnet {command}: configuration: {shown}", file=sys.stderr, flush=True)


def save(config: dict[str, Any], folder: str) -> str:
    uri = storage.join(folder, SAVED_NAME)
    storage.write_bytes(uri, yaml.safe_dump(config, sort_keys=False).encode())
    return uri


def load_saved(folder: str) -> dict[str, Any] | None:
    uri = storage.join(folder, SAVED_NAME)
    if not storage.exists(uri):
        return None
    return yaml.safe_load(storage.read_bytes(uri).decode()) or {}


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        action.dest: action
        for action in parser._actions
        if action.option_strings and action.dest not in NOT_CONFIG and not action.dest.startswith("_")
    }


def _check(path: str, key: Any, value: Any, action: argparse.Action) -> Any:
    def refuse(allowed: str) -> BusnetError:
        return BusnetError(f"--config {path}: {key}: {value!r} is not allowed; expected {allowed}")

    if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise refuse("true or false")
        return value
    if action.nargs not in (None, "?") or isinstance(action, argparse._AppendAction):
        if not isinstance(value, list):
            raise refuse("a list")
        return [_one(item, action, refuse) for item in value]
    return _one(value, action, refuse)


def _one(value: Any, action: argparse.Action, refuse) -> Any:
    kind = action.type or str
    if value is None:
        if action.default is None:
            return None
        raise refuse(_kind_name(kind))
    if isinstance(value, (bool, dict, list)):
        raise refuse(_kind_name(kind))
    if kind is float and isinstance(value, int):
        value = float(value)
    elif kind in (int, float, str):
        if not isinstance(value, kind):
            raise refuse(_kind_name(kind))
    else:  # a parsing function (e.g. ingest's NAME=PATH)
        try:
            value = kind(str(value))
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise refuse(str(exc)) from None
    if action.choices is not None and value not in action.choices:
        raise refuse("one of " + ", ".join(map(str, action.choices)))
    return value


def _kind_name(kind: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string"}.get(kind, "a value")


def _plain(value: Any) -> Any:
    """YAML-safe: tuples as lists."""
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value
