"""Output for people: a bar on a terminal and lines in a log (jobs.progress), Ray's own noise hidden and
nothing printed after a command's summary (jobs.runtime)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import pytest

from jobs import progress

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_without_a_terminal_the_progress_is_a_line_every_few_seconds(monkeypatch, capsys):
    monkeypatch.delenv(progress.ENV, raising=False)
    assert progress.decide() is False  # pytest captures stdout: a log, not a terminal
    lines = []
    meter = progress.Meter(40, "images predicted", lines.append)
    meter.add(10)  # under LINE_EVERY_S since the start: no line yet
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    meter.add(20)
    meter.add(10)
    meter.close()
    assert [line.split(" (")[0] for line in lines] == ["  30/40 images predicted", "  40/40 images predicted"]
    assert capsys.readouterr().err == ""  # no bar


def test_on_a_terminal_the_progress_is_a_bar_with_an_eta(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV, "1")  # what decide() sets when stdout and stderr are a terminal
    monkeypatch.setenv("RAY_TQDM_PATCH_PRINT", "0")  # tqdm_ray would replace this test process's print
    lines = []
    meter = progress.Meter(4, "images predicted", lines.append)
    for _ in range(4):
        meter.add(1)
    meter.close()  # draws the last state (tqdm_ray draws at most once a second before)
    drawn = ANSI.sub("", capsys.readouterr().err)
    assert lines == [] and re.search(r"images predicted: +100%\|.*\| 4\.00/4\.00 \[", drawn), drawn


# A command's shape: hide Ray's noise, decide on bars, start Ray; then work in Ray workers that draw a bar,
# print busnet's epoch lines (alike but for their numbers: Ray's deduplication merged such lines and printed
# the merged one at exit) and make Ray's C++ core worker log an error line; then the summary.
COMMAND = """
import sys, time, numpy as np
from jobs import progress
from jobs.runtime import init_ray, quiet_ray
quiet_ray(verbose=False)  # as jobs.cli does: before anything imports ray
progress.decide()
import ray
init_ray(num_cpus=2)

@ray.remote(max_restarts=1)
class Restartable:
    def __init__(self, weights):
        self.size = weights.size

@ray.remote
def epoch(number):
    bar = progress.bar(3, f"run epoch {number}/2", "batch")
    for _ in range(3):
        bar.update(1)
    bar.close()
    # constructor arguments in the object store and max_restarts > 0: "E ... core_worker.cc:... Actor with ..."
    ray.get(Restartable.remote(np.zeros(200_000)).__ray_ready__.remote())
    sys.stdout.write(f"[busnet train] epoch {number}/2  loss 0.{number}\\n")
    sys.stdout.flush()
    time.sleep(2)  # as training goes on after its line (report, checkpoint): Ray streams worker output behind

ray.get([epoch.remote(1), epoch.remote(2)])
print("SUMMARY", flush=True)
"""


def _on_a_terminal(script: str, env: dict[str, str], cwd: Path, timeout_s: float = 300) -> str:
    """What `script` prints on a terminal (a pty 120 columns wide), with the colours taken out."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    terminal = {"stdin": child, "stdout": child, "stderr": child}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=cwd, **terminal)
    os.close(child)
    output, deadline = b"", time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if select.select([main], [], [], 1.0)[0]:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(main)
    process.kill()
    assert process.wait() == 0, output.decode(errors="replace")[-3000:]
    return ANSI.sub("", output.decode(errors="replace"))


@pytest.mark.timeout(360)
def test_a_command_on_a_terminal_draws_bars_hides_ray_noise_and_ends_with_its_summary():
    """Before: no bar; the C++ core_worker.cc line shown; the second epoch line merged into the first
    ("[repeated 2x across cluster]") and that printed after the summary."""
    with tempfile.TemporaryDirectory(prefix="bn-") as short:  # Ray's socket paths must stay under 107 bytes
        home = Path(short)
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "HOME": str(home),
            "RAY_TMPDIR": str(home / "ray"),
            "RAY_AUTH_MODE": "disabled",
        }
        shown = _on_a_terminal(COMMAND, env, home)
    assert re.search(r"run epoch 1/2: +100%\|", shown) and re.search(r"run epoch 2/2: +100%\|", shown), shown
    assert "core_worker.cc" not in shown and "repeated" not in shown, shown
    assert "[busnet train] epoch 1/2  loss 0.1" in shown and "[busnet train] epoch 2/2  loss 0.2" in shown
    lines = [line.strip() for line in shown.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[-1] == "SUMMARY", lines[-5:]
