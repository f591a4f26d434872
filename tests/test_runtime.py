"""jobs.runtime: what the local Ray's workers are given, and that no credential is written into Ray's
runtime env (which Ray logs in world-readable files and keeps in job records)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from jobs.runtime import _forwarded_env

REPO = Path(__file__).resolve().parents[1]
SECRET, TOKEN = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-not-a-real-key", "FwoGZXIvYXdzEJr-session-token-0042"


def test_only_non_secret_settings_are_forwarded(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("BUSNET_DEBUG", "1")
    forwarded = _forwarded_env()
    assert {"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "BUSNET_DEBUG"} <= forwarded.keys()
    assert not {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"} & forwarded.keys()


SCRIPT = """
import json, os, ray
from jobs.runtime import init_ray
init_ray(num_cpus=1)

@ray.remote
def seen():
    return os.environ.get("AWS_SECRET_ACCESS_KEY"), ray.get_runtime_context().runtime_env
secret, runtime_env = ray.get(seen.remote())
print(json.dumps({"secret": secret, "runtime_env": runtime_env}))
ray.shutdown()
"""


def test_a_local_ray_keeps_credentials_out_of_its_runtime_env_and_logs():
    """Before: every AWS_* variable went into the runtime env, the secret key and session token too."""
    with tempfile.TemporaryDirectory(prefix="bn-") as short:  # Ray's socket paths must stay under 107 bytes
        _check_a_local_ray(Path(short))


def _check_a_local_ray(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "HOME": str(tmp_path),
        "RAY_TMPDIR": str(tmp_path / "ray"),
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
        "AWS_DEFAULT_REGION": "eu-west-1",
        "RAY_AUTH_MODE": "disabled",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["secret"] == SECRET  # the workers still reach S3: they inherit the environment
    assert found["runtime_env"]["env_vars"]["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert SECRET not in json.dumps(found["runtime_env"]) and TOKEN not in json.dumps(found["runtime_env"])
    leaked = [
        path.name
        for path in (tmp_path / "ray").rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and (SECRET.encode() in path.read_bytes() or TOKEN.encode() in path.read_bytes())
    ]
    assert not leaked
