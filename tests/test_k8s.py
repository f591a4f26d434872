"""The platform image and the KubeRay manifests: every overlay's steps render and validate.

Each overlay of k8s/overlays is rendered step by step by the real `kubectl kustomize` (tests/k8s_render.py).
Built-in kinds against Kubernetes' own schemas (kubernetes-validate), KubeRay kinds against the
KubeRay v1 CRD schemas with unknown fields rejected, one cluster definition behind every workload, the
RayService's serveConfigV2 equal to serve/config.yaml with the ConfigMap's model, versions equal to what
setup.sh installs, every container under the restricted pod security profile, the serving pods on
read-only credentials, and constraints.txt the lock of the installed runtime dependencies. What the
entrypoints do is tests/test_k8s_entrypoints.py; how the steps deploy, tests/test_k8s_deploy.py.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
import runpy

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml

from tests.conftest import shared_path
from tests.k8s_render import OVERLAY_NAMES, RAY_KINDS, ROOT, by_kind, cluster_spec, config, overlay_objects

CRD_FILES = {"RayCluster": "raycluster_v1.json", "RayJob": "rayjob_v1.json", "RayService": "rayservice_v1.json"}
CLUSTER_LABEL = "busnet.io/cluster"


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


@pytest.fixture(scope="module", params=OVERLAY_NAMES)
def rendered(request) -> list[dict]:
    """Every object the overlay's steps apply."""
    return overlay_objects(request.param)


def _workloads(objects) -> list[dict]:
    return [obj for obj in objects if obj["kind"] in RAY_KINDS]


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, jsonschema.protocols.Validator]:
    """Validators of the KubeRay v1 CRD schemas by kind, closed so that unknown fields fail.

    Built once, and without meta-validating the large schemas as `jsonschema.validate` does on every call
    (seconds each; validating an object takes milliseconds).
    """
    folder = shared_path("kuberay-crd-schemas")
    schemas = {kind: _closed(json.loads((folder / name).read_text())) for kind, name in CRD_FILES.items()}
    return {kind: jsonschema.validators.validator_for(schema)(schema) for kind, schema in schemas.items()}


_by_kind = by_kind


def test_every_overlay_has_every_workload_once(rendered):
    names = sorted((obj["kind"], obj["metadata"]["name"]) for obj in _workloads(rendered))
    assert names == [
        ("RayCluster", "busnet-cluster"),
        ("RayJob", "busnet-evaluate"),
        ("RayJob", "busnet-train"),
        ("RayJob", "busnet-tune"),
        ("RayService", "busnet-serve"),
    ]


TRAINING_SECRET, SERVING_SECRET = "busnet-s3", "busnet-s3-serve"


def _ray_containers(cluster_spec: dict) -> list[dict]:
    return [cluster_spec["headGroupSpec"]["template"]["spec"]["containers"][0]] + [
        group["template"]["spec"]["containers"][0] for group in cluster_spec["workerGroupSpecs"]
    ]


def _secrets(container: dict) -> list[str]:
    return [source["secretRef"]["name"] for source in container.get("envFrom", []) if "secretRef" in source]


def _without_own_label(spec: dict) -> dict:
    """The cluster spec less the label that names its workload (each NetworkPolicy selects its own)."""
    spec = copy.deepcopy(spec)
    for template in [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]:
        template.get("metadata", {}).get("labels", {}).pop(CLUSTER_LABEL, None)
    return spec


def test_one_cluster_definition(rendered):
    """Every workload of every step runs the same cluster, the overlay's patches included; the
    RayService's only differences are its read-only Secret and its workers' readiness probe."""
    cluster = _without_own_label(_by_kind(rendered, "RayCluster")[0]["spec"])
    for job in _by_kind(rendered, "RayJob"):
        assert _without_own_label(job["spec"]["rayClusterSpec"]) == cluster, job["metadata"]["name"]
    serving = _without_own_label(_by_kind(rendered, "RayService")[0]["spec"]["rayClusterConfig"])
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
    for job in _by_kind(rendered, "RayJob"):  # the submitter talks to the dashboard: configuration, no keys
        for container in job["spec"]["submitterPodTemplate"]["spec"]["containers"]:
            assert _secrets(container) == [] and "env" not in container


def test_serving_pods_serve_through_haproxy_as_busnet_serve_does(rendered, monkeypatch):
    """Each RayService pod's environment (its env and the ConfigMaps it takes) makes Serve run HAProxy, the
    ingress `busnet serve` takes by default; busnet in such a pod (a joined cluster) reports it. HAProxy
    answering KubeRay's /-/healthz probe is tests/test_serve.py's."""
    from serve.ingress import HAPROXY, use_ingress

    configmaps = {obj["metadata"]["name"]: obj.get("data", {}) for obj in _by_kind(rendered, "ConfigMap")}
    service = _by_kind(rendered, "RayService")[0]["spec"]["rayClusterConfig"]
    for container in _ray_containers(service):
        env = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(configmaps[source["configMapRef"]["name"]])
        env.update({item["name"]: item.get("value", "") for item in container.get("env", [])})
        monkeypatch.setenv("RAY_ADDRESS", "auto")  # inside the pod: the cluster's own Ray
        monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", env.get("RAY_SERVE_ENABLE_HA_PROXY", "0"))
        assert use_ingress() == HAPROXY, container["name"]


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
    """What keeps an object's pods from the restricted profile, or mounts an API token or an unbounded emptyDir
    (an empty list: nothing)."""
    problems = []
    for path, pod in _pod_specs(obj):
        pod_context = pod.get("securityContext", {})
        if pod_context.get("runAsUser") in (None, 0) or pod_context.get("seccompProfile") != {"type": "RuntimeDefault"}:
            problems.append(f"{path}: the pod sets no non-root runAsUser or no RuntimeDefault seccomp")
        if any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC")):
            problems.append(f"{path}: shares a host namespace")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{path}: mounts a Kubernetes API token (automountServiceAccountToken is not false)")
        for volume in pod.get("volumes", []):
            if not set(volume) - {"name"} <= RESTRICTED_VOLUME_TYPES:
                problems.append(f"{path}: volume {volume['name']} is not allowed")
            if "emptyDir" in volume and not volume["emptyDir"].get("sizeLimit"):
                problems.append(f"{path}: emptyDir {volume['name']} has no sizeLimit (it could fill the node)")
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
    examples = ROOT / "k8s" / "base" / "namespace" / "secret.example.yaml"
    example_secrets = list(yaml.safe_load_all(examples.read_text()))
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
    for spec in [cluster_spec(workload) for workload in _workloads(rendered)]:
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


def test_jobs_end_and_use_the_gpus_they_get(rendered):
    """Each RayJob tears its cluster down and is bounded in time and retries; it asks for GPUs (--gpu)
    exactly where its workers have them. (What the entrypoint receives: tests/test_k8s_entrypoints.py.)"""
    for job in _by_kind(rendered, "RayJob"):
        spec = job["spec"]
        assert spec["shutdownAfterJobFinishes"] is True
        assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
        assert "backoffLimit" in spec
        gpu_cluster = "gpu" in spec["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
        if not spec["entrypoint"].startswith("busnet evaluate"):  # evaluate has no --gpu: it uses what it finds
            assert ("--gpu" in spec["entrypoint"].split()) == gpu_cluster, job["metadata"]["name"]


def test_serve_config_is_the_one_in_serve(rendered):
    service = _by_kind(rendered, "RayService")[0]
    embedded = yaml.safe_load(service["spec"]["serveConfigV2"])
    source = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    model_uri = config(rendered)["BUSNET_MODEL_URI"]
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
    for obj in rendered:
        assert restricted_violations(obj) == [], obj["metadata"]["name"]
    containers = sum(len(pod["containers"]) for obj in _workloads(rendered) for _, pod in _pod_specs(obj))
    assert containers == 2 + 3 * (2 + 1) + 2  # head + worker of the RayCluster, each RayJob (+ submitter), RayService


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
        lambda c: c["workerGroupSpecs"][0]["template"]["spec"].pop("automountServiceAccountToken"),
        lambda c: c["headGroupSpec"]["template"]["spec"]["volumes"][1]["emptyDir"].pop("sizeLimit"),
    ],
)
def test_the_restricted_check_catches_a_weakened_pod(rendered, break_it):
    cluster = copy.deepcopy(_by_kind(rendered, "RayCluster")[0])
    break_it(cluster["spec"])
    assert restricted_violations(cluster)


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
