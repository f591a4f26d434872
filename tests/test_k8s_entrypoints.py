"""Every RayJob's entrypoint, run the way KubeRay and Ray run it, reaches busnet with the ConfigMap's URIs.

KubeRay v1.7 (ray-operator/controllers/ray/rayjob_controller.go configureSubmitterContainer and
common/job.go BuildJobSubmitCommand) gives the submitter pod the command `/bin/bash -ce -- SCRIPT`, where
SCRIPT is `until <health check> ... ; if ! ray job status ... ; then ray job submit --address ...
--no-wait --submission-id ID -- <entrypoint> ; fi ; ray job logs ...`, words joined by spaces: the
entrypoint goes through that bash, with the submitter container's environment only. `ray job submit`
joins the words it gets after `--` with subprocess.list2cmdline (ray/dashboard/modules/job/cli.py), and
the job supervisor runs that string with shell=True (/bin/sh) on the head, with the head's environment
(job_supervisor.py). Here: the real bash with the script built as KubeRay builds it, `ray` a recorder on
PATH, the recorded arguments parsed by Ray's own `ray job submit` command, the string run by the real
/bin/sh with the head container's environment as Kubernetes resolves it, `busnet` a recorder on PATH,
and the recorded argv parsed by busnet's own parser. No cluster, no network.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray.dashboard.modules.job.cli import submit as ray_job_submit

from jobs.cli import build_parser
from tests.k8s_render import OVERLAY_NAMES, ROOT, by_kind, config, container_env, overlay_objects

JOB_ID_SUFFIX = "x7k2p"  # utils/util.go GenerateRayJobId: `<name>-<5 random>`
SUBMITTER_PATH = "/usr/local/bin:/usr/bin:/bin"
# The example Secrets stand for the real ones (their keys are what the pods see; values do not matter here).
SECRETS = {
    s["metadata"]["name"]: s["stringData"]
    for s in yaml.safe_load_all(next((ROOT / "k8s").glob("**/secret.example.yaml")).read_text())
}


def _go_quote(text: str) -> str:
    """Go's strconv.Quote for the ASCII strings KubeRay quotes (JSON escapes them the same way)."""
    return json.dumps(text)


def submitter_script(job: dict, dashboard_url: str) -> str:
    """The submitter's bash script, as common/job.go BuildJobSubmitCommand (K8sJobMode) builds it."""
    spec = job["spec"]
    address = dashboard_url if dashboard_url.startswith("http://") else "http://" + dashboard_url
    job_id = f"{job['metadata']['name']}-{JOB_ID_SUFFIX}"
    health = (  # utils/constant.go BasePythonHealthCommand, RayDashboardGCSHealthPath, timeout 10 s
        'python -c "import urllib.request; '
        f"r=urllib.request.urlopen('{address}/api/gcs_healthz', timeout=10); "
        "exit(0 if b'success' in r.read() else 1)\""
    )
    cmd = ["until", health, ">/dev/null", "2>&1", ";", "do", "echo"]
    cmd += [_go_quote(f"Waiting for Ray Dashboard GCS to become healthy at {address} ..."), ";"]
    cmd += ["sleep", "2", ";", "done", ";"]
    cmd += ["if", "!", "ray", "job", "status", "--address", address, job_id, ">/dev/null", "2>&1", ";", "then"]
    cmd += ["ray", "job", "submit", "--address", address, "--no-wait"]
    if spec.get("runtimeEnvYAML"):
        cmd += ["--runtime-env-json", _go_quote(json.dumps(yaml.safe_load(spec["runtimeEnvYAML"])))]
    if spec.get("metadata"):
        cmd += ["--metadata-json", _go_quote(json.dumps(spec["metadata"]))]
    cmd += ["--submission-id", job_id]
    for key, flag in (("entrypointNumCpus", "--entrypoint-num-cpus"), ("entrypointNumGpus", "--entrypoint-num-gpus")):
        if spec.get(key, 0) > 0:
            cmd += [flag, f"{spec[key]:f}"]
    if spec.get("entrypointResources"):
        cmd += ["--entrypoint-resources", _go_quote(spec["entrypointResources"])]
    cmd += ["--", spec["entrypoint"].strip(), ";", "fi", ";", "ray", "job", "logs", "--address", address]
    cmd += ["--follow", job_id]
    return " ".join(cmd)


def _recorder(folder: Path, name: str, exit_code: int = 0) -> None:
    """An executable `name` in folder that appends its argv (JSON, one line per call) to folder/name.calls."""
    script = folder / name
    calls = folder / f"{name}.calls"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"with open({str(calls)!r}, 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"sys.exit({exit_code} if sys.argv[1:3] == ['job', 'status'] else 0)\n"
    )
    script.chmod(0o755)


def _calls(folder: Path, name: str) -> list[list[str]]:
    path = folder / f"{name}.calls"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_as_kuberay_and_ray(job: dict, objects: list[dict], tmp: Path) -> list[str]:
    """The argv busnet gets from the RayJob: submitter bash -> `ray job submit` -> /bin/sh on the head."""
    namespace = job["metadata"]["namespace"]
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    _recorder(bin_dir, "python")  # the dashboard health check: healthy at once
    _recorder(bin_dir, "ray", exit_code=1)  # `ray job status`: not submitted yet
    _recorder(bin_dir, "busnet")

    # 1. The submitter pod: its container's env and envFrom, plus what configureSubmitterContainer adds.
    submitter = job["spec"].get("submitterPodTemplate", {}).get("spec", {}).get("containers", [{}])[0]
    dashboard = f"{job['metadata']['name']}-head-svc.{namespace}.svc.cluster.local:8265"
    env = container_env(submitter, objects, SECRETS) | {
        "PYTHONUNBUFFERED": "1",
        "RAY_DASHBOARD_ADDRESS": dashboard,
        "RAY_JOB_SUBMISSION_ID": f"{job['metadata']['name']}-{JOB_ID_SUFFIX}",
        "PATH": f"{bin_dir}:{SUBMITTER_PATH}",
    }
    script = submitter_script(job, dashboard)
    done = subprocess.run(["/bin/bash", "-ce", "--", script], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"the submitter's script failed: {done.stderr}"
    submits = [c for c in _calls(bin_dir, "ray") if c[:2] == ["job", "submit"]]
    assert len(submits) == 1, _calls(bin_dir, "ray")

    # 2. Ray's `ray job submit` (its own click command) takes the words after `--` and joins them.
    context = ray_job_submit.make_context("submit", submits[0][2:])
    entrypoint = subprocess.list2cmdline(context.params["entrypoint"])  # ray/dashboard/modules/job/cli.py

    # 3. The job supervisor on the head: Popen(entrypoint, shell=True) with the head container's env.
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head_env = container_env(head, objects, SECRETS) | {"PATH": f"{bin_dir}:{SUBMITTER_PATH}"}
    done = subprocess.run(["/bin/sh", "-c", entrypoint], env=head_env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"the entrypoint failed on the head: {done.stderr}"
    (argv,) = _calls(bin_dir, "busnet")
    return argv


# The ConfigMap key whose value each URI argument of each command must be.
URI_KEYS = {
    "train": {"data": "BUSNET_DATA_URI", "out": "BUSNET_TRAIN_URI"},
    "tune": {"data": "BUSNET_DATA_URI", "out": "BUSNET_TUNE_URI"},
    "evaluate": {"data": "BUSNET_DATA_URI", "checkpoint": "BUSNET_CANDIDATE_URI", "out": "BUSNET_EVAL_URI"},
}
WEIGHT_ARGS = ("pretrained",)


def _jobs():
    return [
        pytest.param(overlay, job["metadata"]["name"], id=f"{overlay}-{job['metadata']['name']}")
        for overlay in OVERLAY_NAMES
        for job in by_kind(overlay_objects(overlay), "RayJob")
    ]


@pytest.mark.parametrize(("overlay", "name"), _jobs())
def test_the_job_gets_the_configmaps_uris_on_the_head(overlay, name, tmp_path):
    objects = overlay_objects(overlay)
    (job,) = [j for j in by_kind(objects, "RayJob") if j["metadata"]["name"] == name]
    argv = run_as_kuberay_and_ray(job, objects, tmp_path)
    args = build_parser().parse_args(argv)  # exits (fails the test) on an unknown flag
    cfg = config(objects)
    for dest, key in URI_KEYS[argv[0]].items():
        assert getattr(args, dest) == cfg.get(key), f"{name}: --{dest} is {getattr(args, dest)!r}, not {key}"
    weights = cfg.get("BUSNET_WEIGHTS_URI", "?")
    for dest in WEIGHT_ARGS:  # pretrained weights: the one weights folder (busnet weights fetch)
        value = getattr(args, dest, None)
        assert value is None or value == weights, f"{name}: --{dest} is {value!r}, not {weights}"


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_train_and_tune_start_from_the_same_weights(overlay, tmp_path):
    objects = overlay_objects(overlay)
    weights = {}
    for job in by_kind(objects, "RayJob"):
        folder = tmp_path / job["metadata"]["name"]
        folder.mkdir()
        args = build_parser().parse_args(run_as_kuberay_and_ray(job, objects, folder))
        if args.command in ("train", "tune"):
            weights[args.command] = [getattr(args, dest) for dest in WEIGHT_ARGS]
    assert weights["train"] == weights["tune"]


def test_the_simulation_catches_a_variable_the_submitter_lacks(tmp_path):
    """The point of running the real shells: a "$VAR" the submitter pod does not have arrives empty."""
    objects = overlay_objects(OVERLAY_NAMES[0])
    job = next(j for j in by_kind(objects, "RayJob") if j["spec"]["entrypoint"].startswith("busnet train"))
    job["spec"]["submitterPodTemplate"]["spec"]["containers"][0].pop("envFrom", None)
    argv = run_as_kuberay_and_ray(job, objects, tmp_path)
    assert build_parser().parse_args(argv).data == ""
