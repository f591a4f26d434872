"""A kustomize build in Python over the features k8s/ uses, so the manifests can be tested where
kubectl is not installed. Where kubectl is, tests/test_k8s.py checks both builds agree.

Supported: resources (files and kustomization folders), namespace, labels (metadata only), images,
JSON 6902 patches with a kind/name target, and replacements of whole fields. Anything else in a
kustomization raises, so the renderer can never silently differ from kustomize.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonpatch
import yaml

SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches", "replacements"}


def build(folder: str | Path) -> list[dict]:
    folder = Path(folder)
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise ValueError(f"{folder}: kustomize_lite does not support {sorted(unknown)}")
    objects: list[dict] = []
    for resource in kustomization.get("resources", []):
        path = folder / resource
        if path.is_dir():
            objects += build(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        _apply_patch(objects, patch)
    for image in kustomization.get("images", []):
        _set_image(objects, image)
    if "namespace" in kustomization:
        for obj in objects:
            obj.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    for label_set in kustomization.get("labels", []):
        if label_set.get("includeSelectors") or label_set.get("includeTemplates"):
            raise ValueError(f"{folder}: only metadata labels are supported")
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(label_set["pairs"])
    for replacement in kustomization.get("replacements", []):
        _replace(objects, replacement)
    return objects


def _matches(obj: dict, selector: dict) -> bool:
    return all((obj["metadata"]["name"] if key == "name" else obj.get(key)) == value for key, value in selector.items())


def _apply_patch(objects: list[dict], patch: dict) -> None:
    operations = jsonpatch.JsonPatch(yaml.safe_load(patch["patch"]))
    targets = [i for i, obj in enumerate(objects) if _matches(obj, patch["target"])]
    if not targets:
        raise ValueError(f"patch target {patch['target']} matches nothing")
    for index in targets:
        objects[index] = operations.apply(objects[index])


def _set_image(objects: list[dict], image: dict) -> None:
    def visit(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "image" and isinstance(value, str) and value.split(":")[0] == image["name"]:
                    name, _, tag = value.partition(":")
                    node[key] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(objects)


def _replace(objects: list[dict], replacement: dict) -> None:
    source = replacement["source"]
    found = [obj for obj in objects if _matches(obj, {k: v for k, v in source.items() if k != "fieldPath"})]
    if len(found) != 1:
        raise ValueError(f"replacement source {source} matches {len(found)} objects")
    value = found[0]
    for part in source["fieldPath"].split("."):
        value = value[part]
    for target in replacement["targets"]:
        for obj in (o for o in objects if _matches(o, target["select"])):
            for field_path in target["fieldPaths"]:
                *parents, last = field_path.split(".")
                node = obj
                for part in parents:
                    node = node[part]
                node[last] = copy.deepcopy(value)
