"""How an overlay deploys: one namespace, one workload per step, names KubeRay will not clash on, the served
model set once, every Ray pod behind a NetworkPolicy that admits only its own cluster (evaluated here for
every pair of pods), token auth, the image set once and built by platform/image.py, and k8s/README.md's
commands checked against what the overlays render. No cluster: kustomize renders (tests/k8s_render.py).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from jobs.cli import build_parser
from tests.k8s_render import (
    DASHBOARD_PORT,
    OVERLAY_NAMES,
    OVERLAYS,
    RAY_KINDS,
    ROOT,
    SERVE_PORT,
    by_kind,
    cluster_spec,
    config,
    kuberay_services,
    overlay_objects,
    ray_pod_templates,
    render,
    steps,
)

WORKLOAD_STEPS = ("cluster", "train", "tune", "evaluate", "serve")
STEP_ORDER = ("namespace", "bucket", "cluster", "train", "tune", "evaluate", "serve")  # k8s/README.md's order
OPERATOR = ("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"})  # helm's labels (README)
INGRESS_NAMESPACE = "ingress-nginx"  # where serving traffic comes from (k8s/README.md)
# The ports a Ray pod listens on: GCS, dashboard, Ray client, Serve, the dashboard agent (job submissions).
RAY_PORTS = (6379, DASHBOARD_PORT, 10001, SERVE_PORT, 52365)


def _workloads(objects):
    return [obj for obj in objects if obj["kind"] in RAY_KINDS]


def _namespace(overlay: str) -> str:
    namespaces = {obj["metadata"].get("namespace") for obj in overlay_objects(overlay) if obj["kind"] != "Namespace"}
    assert len(namespaces) == 1, f"{overlay}: objects in {sorted(map(str, namespaces))}"
    return namespaces.pop()


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_one_namespace_per_overlay_made_by_its_first_step(overlay):
    namespace = _namespace(overlay)
    made = [obj for obj in overlay_objects(overlay) if obj["kind"] == "Namespace"]
    assert [obj["metadata"]["name"] for obj in made] == [namespace]
    assert made[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert len({_namespace(o) for o in OVERLAY_NAMES}) == len(OVERLAY_NAMES), "two overlays share a namespace"


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_each_step_applies_one_workload(overlay):
    """Applying a step starts one thing: the standalone cluster, one RayJob, or the RayService."""
    names = {step.name for step in steps(OVERLAYS / overlay)}
    assert set(WORKLOAD_STEPS) | {"namespace"} <= names <= set(STEP_ORDER)
    for step in steps(OVERLAYS / overlay):
        workloads = _workloads(render(step))
        assert len(workloads) == (step.name in WORKLOAD_STEPS), f"{overlay}/{step.name}: {len(workloads)} workloads"


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_service_names_are_unique_in_the_namespace(overlay):
    """KubeRay's Services (<name>-head-svc for a RayCluster, RayJob and RayService, <name>-serve-svc) and the
    overlay's own never share a name: two owners of one Service fight over it."""
    objects = overlay_objects(overlay)
    names = [name for w in _workloads(objects) for name in kuberay_services(w)]
    names += [obj["metadata"]["name"] for obj in by_kind(objects, "Service")]
    assert [name for name, count in Counter(names).items() if count > 1] == []


def test_the_served_model_is_set_in_one_place(tmp_path):
    """Changing BUSNET_MODEL_URI in the ConfigMap is all it takes to serve another model, in every overlay."""
    copy = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", copy)
    (configmap,) = [p for p in copy.rglob("*.yaml") if "BUSNET_MODEL_URI:" in p.read_text()]
    text = configmap.read_text()
    old = re.search(r"BUSNET_MODEL_URI: (\S+)", text).group(1)
    configmap.write_text(text.replace(f"BUSNET_MODEL_URI: {old}", "BUSNET_MODEL_URI: s3://elsewhere/model-7"))
    for overlay in OVERLAY_NAMES:
        (service,) = [s for step in steps(copy / "overlays" / overlay) for s in by_kind(render(step), "RayService")]
        checkpoints = re.findall(r"checkpoint: \"?([^\s\"]+)", service["spec"]["serveConfigV2"])
        assert checkpoints == ["s3://elsewhere/model-7"], overlay
    assert old not in "".join(p.read_text() for p in copy.rglob("*.yaml") if p != configmap)


def test_ray_token_auth_is_on_in_every_cluster():
    for overlay in OVERLAY_NAMES:
        for workload in _workloads(overlay_objects(overlay)):
            assert cluster_spec(workload).get("authOptions", {}).get("mode") == "token", workload["metadata"]["name"]


# --- NetworkPolicies, evaluated as Kubernetes does --------------------------------------------------------


def _selects(selector: dict, labels: dict) -> bool:
    """A LabelSelector: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, present = labels.get(expr["key"]), expr["key"] in labels
        ok = {
            "In": present and value in expr.get("values", []),
            "NotIn": not present or value not in expr.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[expr["operator"]]
        if not ok:
            return False
    return True


def _peer_admits(peer: dict, policy_namespace: str, source: tuple[str, dict]) -> bool:
    namespace, labels = source
    if "ipBlock" in peer:
        return True  # an address range admits pods too: treated as open
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}):
            return False
    elif namespace != policy_namespace:
        return False
    return _selects(peer.get("podSelector", {}), labels)


def admitted(policies: list[dict], destination: tuple[str, dict], source: tuple[str, dict], port: int) -> bool:
    """Whether a pod (namespace, labels) may open `port` on `destination` under these NetworkPolicies."""
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == destination[0]
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _selects(p["spec"]["podSelector"], destination[1])
    ]
    if not selecting:
        return True  # not isolated
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and not any(p.get("port") in (port, None) for p in ports):
                continue
            if "from" not in rule or any(_peer_admits(x, destination[0], source) for x in rule["from"]):
                return True
    return False


def _pods(objects: list[dict], namespace: str) -> dict[str, tuple[str, dict]]:
    """The pods of the overlay's workloads as KubeRay labels them (common/pod.go labelPod; the submitter:
    rayjob_controller.go getSubmitterTemplate), plus pods from elsewhere."""
    pods = {}
    for workload in _workloads(objects):
        name, templates = workload["metadata"]["name"], ray_pod_templates(cluster_spec(workload))
        for i, template in enumerate(templates):
            own = template.get("metadata", {}).get("labels", {})
            kuberay = {"ray.io/cluster": f"{name}-xxxxx", "ray.io/node-type": "head" if i == 0 else "worker"}
            pods[f"{name}/{'head' if i == 0 else f'worker{i}'}"] = (namespace, own | kuberay)
        if workload["kind"] == "RayJob":
            own = workload["spec"].get("submitterPodTemplate", {}).get("metadata", {}).get("labels", {})
            kuberay = {"ray.io/originated-from-cr-name": name, "ray.io/originated-from-crd": "RayJob"}
            pods[f"{name}/submitter"] = (namespace, own | kuberay)
    pods["operator"] = OPERATOR
    pods["ingress"] = (INGRESS_NAMESPACE, {"app.kubernetes.io/name": "ingress-nginx"})
    pods["other pod of the namespace"] = (namespace, {"app": "debug"})
    pods["pod of another namespace"] = ("default", {"app": "debug"})
    return pods


def _expected_ports(destination: str, source: str, kinds: dict[str, str]) -> set[int]:
    """What may reach a Ray pod: its own cluster everything, its submitter the dashboard, the operator the
    dashboard and Serve, the ingress Serve on the RayService's pods; nothing else."""
    workload = destination.split("/")[0]
    if source.split("/")[0] == workload:
        return {DASHBOARD_PORT} if source.endswith("/submitter") else set(RAY_PORTS)
    if source == "operator":
        return {DASHBOARD_PORT, SERVE_PORT}
    if source == "ingress" and kinds[workload] == "RayService":
        return {SERVE_PORT}
    return set()


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_every_ray_pod_admits_only_its_own_cluster(overlay):
    objects = overlay_objects(overlay)
    policies = by_kind(objects, "NetworkPolicy")
    pods = _pods(objects, _namespace(overlay))
    kinds = {w["metadata"]["name"]: w["kind"] for w in _workloads(objects)}
    wrong = []
    for destination, dest_pod in pods.items():
        if destination.split("/")[0] not in kinds or destination.endswith("/submitter"):
            continue  # a Ray pod only
        for source, source_pod in pods.items():
            expected = _expected_ports(destination, source, kinds)
            got = {port for port in RAY_PORTS if admitted(policies, dest_pod, source_pod, port)}
            if got != expected:
                wrong.append(f"{source} -> {destination}: ports {sorted(got)}, expected {sorted(expected)}")
    assert wrong == []


def test_the_policy_check_sees_an_open_pod():
    policies = [
        {
            "metadata": {"namespace": "n"},
            "spec": {"podSelector": {"matchLabels": {"a": "1"}}, "policyTypes": ["Ingress"], "ingress": [{}]},
        }
    ]
    assert admitted(policies, ("n", {"a": "1"}), ("elsewhere", {}), 8265)  # a rule without `from`: anyone
    assert admitted([], ("n", {"a": "2"}), ("elsewhere", {}), 8265)  # no policy selects it: anyone
    policies[0]["spec"]["ingress"] = [{"from": [{"podSelector": {}}], "ports": [{"port": 8000}]}]
    assert not admitted(policies, ("n", {"a": "1"}), ("n", {}), 8265)
    assert admitted(policies, ("n", {"a": "1"}), ("n", {}), 8000)


# --- the image ---------------------------------------------------------------------------------------------


def _images(objects: list[dict]) -> set[str]:
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                found.update(c["image"] for c in node["containers"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for workload in _workloads(objects):
        walk(workload)
    return found


def _image_py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "platform" / "image.py"), *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_the_image_is_set_once_and_built_by_platform_image_py(overlay):
    (image,) = _images(overlay_objects(overlay))  # every Ray pod and submitter: one image
    done = _image_py(str(OVERLAYS / overlay), "--dry-run")
    assert done.returncode == 0, done.stderr
    (build,) = [shlex.split(line) for line in done.stdout.splitlines()]
    assert build[:4] == ["docker", "build", "-f", "platform/Containerfile"] and build[-3:] == ["-t", image, "."]
    variant = "gpu" if any("nvidia.com/gpu" in str(w) for w in _workloads(overlay_objects(overlay))) else "cpu"
    assert build[build.index("--build-arg") + 1].endswith(f"-{variant}")


def test_image_py_pushes_and_loads_exactly_that_image_or_says_why_not():
    done = _image_py(str(OVERLAYS / "gpu"), "--push", "--load", "kind", "--engine", "podman", "--dry-run")
    (image,) = _images(overlay_objects("gpu"))
    assert [shlex.split(line)[:2] for line in done.stdout.splitlines()] == [
        ["podman", "build"],
        ["podman", "push"],
        ["kind", "load"],
    ]
    assert done.stdout.splitlines()[1:] == [f"podman push {image}", f"kind load docker-image {image}"]
    no_registry = _image_py(str(OVERLAYS / "local"), "--push", "--dry-run")
    assert no_registry.returncode == 2 and no_registry.stdout == ""
    assert "names no registry" in no_registry.stderr and "profile/kustomization.yaml" in no_registry.stderr
    missing = _image_py(str(ROOT / "k8s"), "--dry-run")
    assert missing.returncode == 2 and "no such file" in missing.stderr


# --- k8s/README.md: every command, checked against what it acts on -----------------------------------------


def _sections() -> dict[str, list[str]]:
    """The README's `##` sections: the command lines of their shell code blocks (continuations joined)."""
    sections, current, in_code, lang = {}, "", False, ""
    for line in (ROOT / "k8s" / "README.md").read_text().splitlines():
        if line.startswith("```"):
            in_code, lang = not in_code, line[3:].strip()
            continue
        if in_code and lang not in ("json", "text"):
            commands = sections.setdefault(current, [])
            if commands and commands[-1].endswith("\\"):
                commands[-1] = commands[-1][:-1] + line.strip()
            elif line.strip():
                commands.append(line.strip())
        elif line.startswith("## "):
            current = line[3:]
            sections.setdefault(current, [])
    return sections


def _section_overlays(commands: list[str]) -> set[str]:
    return {m for c in commands for m in re.findall(r"k8s/overlays/(\w+)", c)}


def test_readme_has_a_sequence_for_every_overlay():
    single = [_section_overlays(commands) for commands in _sections().values()]
    assert set(OVERLAY_NAMES) <= {overlay for overlays in single if len(overlays) == 1 for overlay in overlays}


@pytest.mark.parametrize("section", [s for s, c in _sections().items() if _section_overlays(c)])
def test_readme_commands_act_on_what_the_overlay_renders(section):
    commands = _sections()[section]
    overlays = _section_overlays(commands)
    assert len(overlays) == 1, f"one overlay per README section, so that its namespace is clear: {overlays}"
    (overlay,) = overlays
    objects = overlay_objects(overlay)
    namespace, cfg = _namespace(overlay), config(objects)
    services = {n for w in _workloads(objects) for n in kuberay_services(w)} | {
        o["metadata"]["name"] for o in by_kind(objects, "Service")
    }
    jobs = {o["metadata"]["name"] for o in by_kind(objects, "RayJob") + by_kind(objects, "Job")}
    applied, created = [], set()
    for command in commands:
        words = shlex.split(command.replace("$(", "( "), comments=True)
        for i, word in enumerate(words):
            if word in ("-n", "--namespace") and "kubectl" in words[:i]:
                assert words[i + 1] == namespace, f"{command}: namespace {words[i + 1]}, the overlay's is {namespace}"
            if word in ("rayjob", "rayservice", "raycluster") and words[i - 1] in ("get", "delete"):
                assert any(w["metadata"]["name"] == words[i + 1] for w in _workloads(objects)), command
            if word.startswith(("svc/", "job/")):
                assert word[4:] in (services if word.startswith("svc/") else jobs), f"{command}: no {word}"
            if word.startswith("s3://"):
                under = [v for v in cfg.values() if word == v or word.startswith(v.rstrip("/") + "/")]
                assert under, f"{command}: {word} is none of busnet-config's URIs"
        if words[:2] == ["kubectl", "apply"] or words[:2] == ["kubectl", "delete"]:
            step = Path(words[words.index("-k") + 1])
            assert step.parent == Path("k8s/overlays") / overlay and (ROOT / step) in steps(OVERLAYS / overlay)
            render(ROOT / step)  # renders
            if words[1] == "apply":
                applied.append(step.name)
        if words[:4] == ["kubectl", "-n", namespace, "create"] and words[4] == "secret":
            created.add(words[6])
        if words[0] == "busnet":
            args = build_parser().parse_args(words[1:])  # exits (fails) on a wrong flag
            if args.command == "ingest":
                assert args.out == cfg["BUSNET_DATA_URI"], command
        if words[:2] == ["python", "platform/image.py"]:
            done = _image_py(*words[2:], "--dry-run")
            assert done.returncode == 0 and f" -t {next(iter(_images(objects)))} ." in done.stdout, command
    ordered = [step for step in applied if step != "cluster"]  # the optional cluster: any time after the namespace
    assert ordered == sorted(ordered, key=STEP_ORDER.index) and applied[0] == "namespace", applied
    assert set(WORKLOAD_STEPS) - {"cluster", "train"} <= set(applied), "tune or train, evaluate, serve: all shown"
    # Every Secret a pod of the overlay names is one the section makes (busnet-pull: a private registry's).
    missing = _secret_names(objects) - created - {"busnet-pull"}
    assert not missing, f"{overlay}: Secrets the pods use but the README does not create in {namespace}: {missing}"


def _secret_names(node) -> set[str]:
    """The Secrets that pods name: envFrom, env valueFrom, imagePullSecrets, secret volumes."""
    names = set()
    if isinstance(node, dict):
        for key in ("secretRef", "secretKeyRef"):
            if isinstance(node.get(key), dict):
                names.add(node[key]["name"])
        names.update(s["name"] for s in node.get("imagePullSecrets", []))
        if isinstance(node.get("secret"), dict):
            names.add(node["secret"]["secretName"])
        for value in node.values():
            names |= _secret_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _secret_names(value)
    return names


# --- the local overlay's bucket ----------------------------------------------------------------------------


def _fake_mc(folder: Path, attach_fails: bool) -> None:
    """`mc` on PATH: records its argv; `admin user info` names the policy; `policy attach` may fail (re-run)."""
    script = folder / "mc"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\nargs = sys.argv[1:]\n"
        f"open({str(folder / 'calls')!r}, 'a').write(json.dumps(args) + '\\n')\n"
        "if 'info' in args: print('AccessKey: busnet-serve\\nPolicyName: busnet-serve')\n"
        f"sys.exit(1 if {attach_fails} and 'attach' in args else 0)\n"
    )
    script.chmod(0o755)


@pytest.mark.parametrize("attach_fails", [False, True], ids=["first run", "re-run"])
def test_the_local_bucket_gets_a_read_only_serving_user(tmp_path, attach_fails):
    """minio-setup's script (run by /bin/sh as the Job does, `mc` recorded) makes the bucket of the URIs and
    gives busnet-s3-serve a policy that reads the served model and nothing of the dataset or weights."""
    objects = render(OVERLAYS / "local" / "bucket")
    cfg = config(overlay_objects("local"))
    (job,) = by_kind(objects, "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    policy_map = next(v["configMap"]["name"] for v in job["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    policy_data = next(o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"] == policy_map)["data"]
    (policy_text,) = policy_data.values()
    env = {var["name"]: f"value-of-{var['name']}" for var in container["env"]} | {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    _fake_mc(tmp_path, attach_fails)
    done = subprocess.run([*container["command"], *container["args"]], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    calls = [json.loads(line)[2:] for line in (tmp_path / "calls").read_text().splitlines()]  # less --config-dir
    bucket = cfg["BUSNET_DATA_URI"].split("/")[2]
    assert ["mb", "--ignore-existing", f"local/{bucket}"] in calls
    assert ["admin", "user", "add", "local", "value-of-SERVE_USER", "value-of-SERVE_PASSWORD"] in calls
    create = next(c for c in calls if c[:3] == ["admin", "policy", "create"])
    assert create[4] == "busnet-serve" and create[5].startswith("/policy/")
    readable = [
        r.removeprefix("arn:aws:s3:::").removesuffix("*")
        for s in json.loads(policy_text)["Statement"]
        if "s3:GetObject" in s["Action"]
        for r in s["Resource"]
    ]
    model, data = (cfg[k].removeprefix("s3://") + "/" for k in ("BUSNET_MODEL_URI", "BUSNET_DATA_URI"))
    assert any(model.startswith(prefix) for prefix in readable)
    assert not any(data.startswith(p) or cfg["BUSNET_WEIGHTS_URI"][5:].startswith(p) for p in readable)
    assert {a for s in json.loads(policy_text)["Statement"] for a in s["Action"]} == {"s3:GetObject", "s3:ListBucket"}
