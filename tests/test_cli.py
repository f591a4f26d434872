"""One grammar for every command: the documented examples parse, help names only real flags, --json
prints one object, --version, --config files, explicit --resume, promote/rollback, masks as files."""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs import cli, storage
from jobs.commands import resume

ROOT = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _markdown_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / name for name in listed.stdout.split()]


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) of every parser that takes flags: `train`, `models list`, `bench data`, ..."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaves(child, (*path, name))


def busnet_commands(text: str, *, fenced: bool = True) -> list[str]:
    """`busnet ...` examples as a text writes them, with their `\\` continuations: the lines of code blocks
    (``` fences in Markdown; in a --help text, `fenced=False`, lines indented by two spaces)."""
    found, lines, inside, index = [], text.splitlines(), False, 0
    while index < len(lines):
        line = lines[index]
        if fenced and line.strip().startswith("```"):
            inside = not inside
        pattern = r"^\s*(?:\$ )?(?:\.venv/bin/)?(busnet\s.*)$" if fenced else r"^  (busnet\s.*)$"
        match = re.match(pattern, line) if inside or not fenced else None
        if match:
            command = match.group(1).rstrip()
            while command.endswith("\\") and index + 1 < len(lines):
                index += 1
                command = command[:-1].rstrip() + " " + lines[index].strip()
            found.append(command)
        index += 1
    return found


def busnet_mentions(text: str) -> list[str]:
    """`busnet ...` in backticks: a command and maybe some of its flags, named in prose."""
    return re.findall(r"`(busnet [^`]+)`", text)


def _mention_error(mention: str) -> str | None:
    """Why a mention is wrong: a command that does not exist, or a flag that command lacks."""
    parser, words = cli.build_parser(), _argv(mention)
    while words and not words[0].startswith("-"):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:  # the command's own arguments (predict's IMAGE files)
            break
        if words[0] not in subs[0].choices:
            return f"no command {words[0]!r}"
        parser = subs[0].choices[words.pop(0)]
    unknown = [
        w.split("=")[0] for w in words if w.startswith("--") and w.split("=")[0] not in parser._option_string_actions
    ]
    return f"{parser.prog} has no {', '.join(unknown)}" if unknown else None


def _argv(command: str) -> list[str]:
    """The arguments of one `busnet ...` line, up to a shell operator or comment."""
    words = []
    for word in shlex.split(command, comments=True)[1:]:
        if word in ("|", "&&", "&", ";", ">", "2>&1") or word.startswith((">", "|")):
            break
        words.append(word)
    return words


def _parse_error(argv: list[str]) -> str | None:
    """Why `busnet` refuses these arguments, or None."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.build_parser().parse_args(argv)
        except SystemExit as exc:
            return None if exc.code == 0 else stderr.getvalue().strip().splitlines()[-1]
    return None


def _texts() -> list[tuple[str, str, bool]]:
    """(where, text, fenced) of every *.md of the repository and every command's --help."""
    texts = [(path.relative_to(ROOT).as_posix(), path.read_text(), True) for path in _markdown_files()]
    for words, parser in _leaves(cli.build_parser()):
        texts.append((f"busnet {' '.join(words)} --help", parser.format_help(), False))
    return texts


def test_every_documented_example_parses():
    examples = [(where, c) for where, text, fenced in _texts() for c in busnet_commands(text, fenced=fenced)]
    assert len(examples) > 30  # the extraction finds the examples at all
    wrong = [
        f"{where}: {command}\n    {error}" for where, command in examples if (error := _parse_error(_argv(command)))
    ]
    assert not wrong, "examples that `busnet` refuses:\n" + "\n".join(wrong)


def test_every_mentioned_command_and_flag_exists():
    mentions = [(where, m) for where, text, _ in _texts() for m in busnet_mentions(text)]
    assert len(mentions) > 30
    wrong = [f"{where}: `{mention}`: {error}" for where, mention in mentions if (error := _mention_error(mention))]
    assert not wrong, "mentions of commands or flags that do not exist:\n" + "\n".join(wrong)


def test_the_example_extraction_sees_a_wrong_flag():
    text = (
        "run `busnet train --no-such-flag` or `busnet trian`; busnet trains\n"
        "```\nbusnet models list --checkpoint c \\\n  --bad\n```\n  busnet synth --out o --n 1"
    )
    assert busnet_commands(text) == ["busnet models list --checkpoint c --bad"]
    assert busnet_commands(text, fenced=False) == ["busnet synth --out o --n 1"]
    assert busnet_mentions(text) == ["busnet train --no-such-flag", "busnet trian"]
    assert _parse_error(_argv(busnet_commands(text)[0])) and _parse_error(_argv("busnet synth --out o --n 1")) is None
    assert [_mention_error(m) for m in busnet_mentions(text)] == [
        "busnet train has no --no-such-flag",
        "no command 'trian'",
    ]


def test_help_texts_name_only_flags_that_exist():
    """A flag named in a command's help is its own, or one of the command the same line names (`busnet X`)."""
    parser = cli.build_parser()
    leaves = {words: leaf for words, leaf in _leaves(parser)}
    flags_of = {words: set(leaf._option_string_actions) for words, leaf in leaves.items()}
    wrong = []
    for words, leaf in leaves.items():
        for line in leaf.format_help().splitlines():
            if "curl " in line:  # curl's own flags
                continue
            named = [
                tuple(m.split())
                for m in re.findall(
                    r"busnet ((?:[a-z]+)(?: (?:list|promote|rollback|data|train|serve|predict))?)", line
                )
            ]
            allowed = flags_of[words].union(*(flags_of.get(n, flags_of.get(n[:1], set())) for n in named))
            wrong += [
                f"busnet {' '.join(words)}: {flag} in {line.strip()!r}"
                for flag in FLAG.findall(line)
                if flag not in allowed
            ]
    assert not wrong, "help texts naming flags their command lacks:\n" + "\n".join(wrong)


def test_one_meaning_per_flag_name():
    """--workers is Ray Train's workers only, --out is a folder, --checkpoint names a checkpoint everywhere."""
    for words, leaf in _leaves(cli.build_parser()):
        options = leaf._option_string_actions
        if "--workers" in options:
            assert "train" in options["--workers"].help.lower() or "ddp" in options["--workers"].help.lower(), words
        if "--out" in options:
            assert "file" not in (options["--out"].metavar or "").lower(), words
        assert "--json" in options and "--verbose" in options, words
    models = cli.build_parser().parse_args(["models", "list", "--checkpoint", "c"])
    assert models.checkpoint == "c"


# Library parameters that commands fill from their flags: a literal default there would be a second home.
FLAG_FILLED = ("batch_size", "n_bootstrap", "n_resamples", "bootstrap")


def test_library_functions_take_their_defaults_from_the_one_constant():
    """evaluate/predict's batch size and bootstrap resamples: a module constant that the flags use too."""
    retyped = []
    for path in sorted(p for folder in ("jobs", "serve", "models") for p in (ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            arguments = node.args.posonlyargs + node.args.args
            pairs = [*zip(arguments[len(arguments) - len(node.args.defaults) :], node.args.defaults)]
            pairs += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None]
            retyped += [
                f"{path.relative_to(ROOT)}: {node.name}({argument.arg}={default.value})"
                for argument, default in pairs
                if argument.arg in FLAG_FILLED and isinstance(default, ast.Constant) and type(default.value) is int
            ]
    assert not retyped, "defaults retyped instead of named once:\n" + "\n".join(retyped)
    from jobs.evaluate.inference import INFERENCE_BATCH
    from jobs.evaluate.intervals import BOOTSTRAP_RESAMPLES

    for argv in (["evaluate", "--data", "d", "--checkpoint", "c", "--out", "o"], ["predict"]):
        args = cli.parse(argv)
        assert (args.batch_size, args.bootstrap) == (INFERENCE_BATCH, BOOTSTRAP_RESAMPLES)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and re.fullmatch(r"busnet \S+.*\n", capsys.readouterr().out)


# ---------- --config FILE.yaml ----------


def _write(path: Path, values: dict) -> str:
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_config_file_values_are_defaults_that_flags_override(tmp_path):
    config = _write(tmp_path / "run.yaml", {"data": "d", "out": "o", "epochs": 5, "lr": 0.002, "input-size": 64})
    args = cli.parse(["train", "--config", config, "--epochs", "3"])
    assert (args.data, args.out, args.epochs, args.lr, args.input_size) == ("d", "o", 3, 0.002, 64)
    assert args.calibrate is True  # on by default; a file or --no-calibrate turns it off, the flag wins
    uncalibrated = _write(tmp_path / "off.yaml", {"data": "d", "out": "o", "calibrate": False})
    assert cli.parse(["train", "--config", uncalibrated]).calibrate is False
    assert cli.parse(["train", "--config", uncalibrated, "--calibrate"]).calibrate is True
    assert cli.parse(["train", "--data", "d", "--out", "o", "--no-calibrate"]).calibrate is False
    serve = cli.parse(["serve", "--config", _write(tmp_path / "serve.yaml", {"checkpoint": "c", "port": 9000})])
    assert (serve.checkpoint, serve.port) == ("c", 9000)


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ({"epoch": 3}, "unknown key 'epoch'; allowed: "),
        ({"epochs": "three"}, "epochs: 'three' is not allowed; expected an integer"),
        ({"epochs": True}, "epochs: True is not allowed; expected an integer"),
        ({"preset": "huge"}, "preset: 'huge' is not allowed; expected one of "),
        ({"gpu": "yes"}, "gpu: 'yes' is not allowed; expected true or false"),
        ({"calibrate": 1}, "calibrate: 1 is not allowed; expected true or false"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_file_key_and_what_is_allowed(tmp_path, capsys, values, said):
    config = _write(tmp_path / "bad.yaml", {"data": "d", "out": "o", **values})
    assert cli.main(["train", "--config", config]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"busnet: error: --config {config}: ") and said in error[0]


def test_config_only_where_it_belongs():
    assert _parse_error(["synth", "--config", "x.yaml", "--out", "o", "--n", "1"]) is not None
    for command in ("train", "tune", "cv", "ablation", "serve"):
        assert "--config" in dict(_leaves(cli.build_parser()))[(command,)]._option_string_actions


# ---------- --resume ----------


def test_a_reused_run_needs_resume_and_the_same_data_and_configuration(synthetic_dataset, tmp_path):
    from jobs.data.dataset import open_dataset

    run, dataset = str(tmp_path / "runs" / "a"), open_dataset(synthetic_dataset)
    config = {"data": synthetic_dataset, "epochs": 3, "lr": 0.001, "verbose": False}
    with pytest.raises(Exception, match="--resume: there is no run"):
        resume.start(run, config, dataset, resume=True)
    resume.start(run, config, dataset, resume=False)
    resume.start(run, {**config, "lr": 0.002}, dataset, resume=False)  # nothing trained yet: still free
    (Path(run) / "epoch-0001").mkdir()
    (Path(run) / "epoch-0001" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(Exception, match="already holds a run: pass --resume"):
        resume.start(run, config, dataset, resume=False)
    with pytest.raises(Exception, match=r"configuration differs.*lr 0.002 -> 0.001"):
        resume.start(run, config, dataset, resume=True)
    resume.start(run, {**config, "lr": 0.002, "epochs": 4, "verbose": True}, dataset, resume=True)
    saved = json.loads((Path(run) / resume.DATASET_FILE).read_text())
    (Path(run) / resume.DATASET_FILE).write_text(json.dumps({**saved, "content_hash": "0" * 64}))
    with pytest.raises(Exception, match="the dataset changed"):
        resume.start(run, {**config, "lr": 0.002}, dataset, resume=True)
    assert (Path(run) / "epoch-0001" / "model.safetensors").read_bytes() == b"x"  # nothing of the run touched


# ---------- --json, models promote / rollback ----------


def _json(capsys, argv: list[str]) -> dict:
    code = cli.main([*argv, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)  # one object, nothing else on stdout


def test_synth_ingest_models_and_export_print_one_json_object(tmp_path, capsys):
    from models import build_model, save_checkpoint

    synth = ["synth", "--out", str(tmp_path / "s"), "--n", "20", "--images-per-case", "1", "1", "--max-size", "320"]
    assert _json(capsys, synth)["images"] == 20
    ingest = _json(capsys, ["ingest", "--source", f"synthetic={tmp_path / 's'}", "--out", str(tmp_path / "d")])
    assert len(ingest["content_hash"]) == 64 and ingest["rejected"] == 0

    uri = str(tmp_path / "best")
    versions = []
    model = build_model("tiny")
    for index in range(3):
        folder = save_checkpoint(model, tmp_path / f"c{index}")
        versions.append(storage.publish_dir(folder, uri, keep=None).rsplit("/", 1)[1])
    listed = _json(capsys, ["models", "list", "--checkpoint", uri])
    assert listed["current"] == versions[2] and [v["version"] for v in listed["versions"]] == versions
    assert _json(capsys, ["models", "rollback", "--checkpoint", uri])["current"] == versions[1]
    assert (
        _json(capsys, ["models", "rollback", "--checkpoint", uri, "--version", versions[0]])["current"] == versions[0]
    )
    assert _json(capsys, ["models", "promote", "--checkpoint", uri, "--version", versions[2]])["current"] == versions[2]
    assert cli.main(["models", "rollback", "--checkpoint", uri, "--version", versions[2]]) == 1
    assert "not a complete version older than the current one" in capsys.readouterr().err
    assert cli.main(["models", "promote", "--checkpoint", uri, "--version", "v-nope"]) == 1
    assert "no complete version 'v-nope'" in capsys.readouterr().err
    assert [name for name, _ in storage.versions(uri)] == versions  # nothing deleted

    exported = _json(capsys, ["export", "--checkpoint", uri, "--out", str(tmp_path / "onnx")])
    assert exported["file"].endswith("onnx/model.onnx") and exported["bytes"] > 0


def test_the_json_summary_alone_is_on_stdout_in_a_child_process(tmp_path):
    """As a user's shell sees it: stdout parses as one JSON object, progress lines are on stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "synth", "--out", str(tmp_path / "s"), "--n", "2", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["images"] == 2 and "wrote 2 images" in done.stderr


def test_setup_refuses_a_python_older_than_the_lock_needs(tmp_path):
    """Before it creates or installs anything: one line naming the version needed and the one found."""
    fake = tmp_path / "python3.10"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "Python 3.10.12" && exit 0\nexit 1\n')
    fake.chmod(0o755)
    done = subprocess.run(
        ["bash", str(ROOT / "setup.sh"), "--test"],
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert "need Python 3.11 or newer" in done.stderr and "Python 3.10.12" in done.stderr
    wrong = subprocess.run(["bash", str(ROOT / "setup.sh"), "--tests"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "usage: ./setup.sh [--test]" in wrong.stderr


@pytest.mark.slow
def test_train_json_resume_and_predict_masks_from_the_command_line(ray_local, synthetic_dataset, tmp_path, capsys):
    """One short run through the CLI: --json, the saved configuration, --resume, then masks as files."""
    out, name = str(tmp_path / "runs"), "r1"
    argv = ["train", "--data", synthetic_dataset, "--out", out, "--name", name, "--epochs", "1", "--input-size", "64"]
    argv += ["--cpus-per-worker", "0.5", "--no-track"]
    summary = _json(capsys, argv)
    assert summary["best"].endswith("runs/r1/best") and summary["metrics"]["epoch"] == 1
    saved = yaml.safe_load((tmp_path / "runs" / name / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["data"] == synthetic_dataset and saved["name"] == name

    assert cli.main(argv) == 1  # the name is taken
    assert "pass --resume" in capsys.readouterr().err
    assert cli.main([*argv, "--resume", "--lr", "0.01"]) == 1
    assert "the configuration differs from the run's (lr None -> 0.01)" in capsys.readouterr().err
    config = tmp_path / "again.yaml"
    config.write_text(yaml.safe_dump({**saved, "epochs": 2, "resume": True}))
    assert _json(capsys, ["train", "--config", str(config)])["metrics"]["epoch"] in (1, 2)

    predictions = tmp_path / "predictions"
    result = _json(
        capsys,
        ["predict", "--checkpoint", summary["best"], "--data", synthetic_dataset, "--out", str(predictions)]
        + ["--split", "test", "--format", "masks", "--overlay", str(tmp_path / "overlays"), "--bootstrap", "0"],
    )
    rows = list(csv.DictReader((predictions / "predictions.csv").open()))
    assert len(rows) == result["images"] == result["files"]["masks"] == result["files"]["overlays"] > 0
    from PIL import Image

    for row in rows:
        mask = Image.open(predictions / row["mask_file"])
        overlay = Image.open(tmp_path / "overlays" / Path(row["mask_file"]).name.replace("_mask.png", ".overlay.png"))
        assert mask.mode == "L" and set(mask.getdata()) <= {0, 255} and overlay.size == mask.size
        assert row["label"] in ("benign", "malignant") and 0 <= float(row["malignant_probability"]) <= 1
