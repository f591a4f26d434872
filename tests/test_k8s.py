"""The platform image and the KubeRay manifests: every overlay renders and validates.

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
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml

from jobs.cli import build_parser
from tests.kustomize_lite import build

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = sorted(p.name for p in (ROOT / "k8s" / "overlays").iterdir())
CRD_DIR = ROOT.parent / "shared" / "kuberay-crd-schemas"
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


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> list[dict]:
    return build(ROOT / "k8s" / "overlays" / request.param)


def _by_kind(objects, kind):
    return [obj for obj in objects if obj["kind"] == kind]


def test_every_overlay_has_the_whole_platform(rendered):
    kinds = sorted(obj["kind"] for obj in rendered)
    assert kinds == ["ConfigMap", "RayCluster", "RayJob", "RayJob", "RayService"]
    for obj in rendered:
        assert obj["metadata"]["namespace"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_python_build_equals_kubectl_kustomize(overlay):
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(yaml.safe_load_all(out), key=key) == sorted(build(ROOT / "k8s" / "overlays" / overlay), key=key)


def test_builtin_kinds_validate(rendered):
    example_secret = yaml.safe_load((ROOT / "k8s" / "base" / "secret.example.yaml").read_text())
    for obj in [o for o in rendered if not o["apiVersion"].startswith("ray.io/")] + [example_secret]:
        kubernetes_validate.validate(obj, "1.30", strict=True)


@pytest.mark.skipif(not CRD_DIR.is_dir(), reason="KubeRay CRD schemas not present")
def test_kuberay_kinds_validate_against_crd_schemas(rendered):
    for obj in rendered:
        if obj["kind"] in CRD_FILES:
            schema = _closed(json.loads((CRD_DIR / CRD_FILES[obj["kind"]]).read_text()))
            jsonschema.validate(obj, schema)


def test_crd_validation_catches_a_typo(rendered):
    if not CRD_DIR.is_dir():
        pytest.skip("KubeRay CRD schemas not present")
    cluster = copy.deepcopy(_by_kind(rendered, "RayCluster")[0])
    cluster["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cluster, _closed(json.loads((CRD_DIR / "raycluster_v1.json").read_text())))


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
    for overlay in OVERLAYS:
        for obj in build(ROOT / "k8s" / "overlays" / overlay):
            if obj["kind"] == "RayCluster":
                assert obj["spec"]["rayVersion"] == ray.__version__


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
    for overlay in OVERLAYS:
        for obj in build(ROOT / "k8s" / "overlays" / overlay):
            assert obj["kind"] != "Secret", "Secrets are created by the operator, never shipped"
            if obj["kind"] == "ConfigMap":
                assert not any("KEY" in key or "SECRET" in key for key in obj["data"])
