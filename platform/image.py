"""Build the platform image the manifests of a k8s overlay use, and push it or load it into a local cluster.

    python platform/image.py k8s/overlays/gpu --push          # build ghcr.io/.../busnet:0.1.0-gpu, push it
    python platform/image.py k8s/overlays/local --load kind   # build busnet:0.1.0-cpu, load it into kind
    python platform/image.py k8s/overlays/gpu --dry-run       # print the commands, run nothing

The image reference is the overlay's `images:` entry for `busnet` (OVERLAY/profile/kustomization.yaml),
the one place it is set, so the image built is the one the pods pull. Its tag ends in -cpu or -gpu, which
picks the Ray base image (platform/Containerfile's RAY_IMAGE, same Ray and Python, that variant).
Run from anywhere; the build context is the repository root. Not a module of busnet: platform/ is no package.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONTAINERFILE = ROOT / "platform" / "Containerfile"
IMAGE_NAME = "busnet"  # the name every manifest uses; the overlay's `images:` maps it to the real reference
LOADERS = {"kind": ["kind", "load", "docker-image"], "minikube": ["minikube", "image", "load"]}


def image_ref(overlay: Path) -> str:
    """`newName:newTag` of the overlay's `images:` entry for busnet (ValueError naming the file if none)."""
    profile = overlay / "profile" / "kustomization.yaml"
    if not profile.is_file():
        raise ValueError(f"{profile}: no such file; give an overlay folder such as k8s/overlays/gpu")
    entries = [e for e in yaml.safe_load(profile.read_text()).get("images", []) if e.get("name") == IMAGE_NAME]
    if len(entries) != 1 or not entries[0].get("newTag"):
        raise ValueError(f"{profile}: needs one `images:` entry with name {IMAGE_NAME} and a newTag")
    return f"{entries[0].get('newName', IMAGE_NAME)}:{entries[0]['newTag']}"


def ray_image(ref: str) -> str:
    """The Containerfile's Ray base image in the variant (cpu or gpu) that the tag ends with."""
    variant = ref.rsplit(":", 1)[1].rsplit("-", 1)[-1]
    if variant not in ("cpu", "gpu"):
        raise ValueError(f"image tag of {ref} must end in -cpu or -gpu (it picks the Ray base image)")
    default = re.search(r"^ARG RAY_IMAGE=(\S+)-(?:cpu|gpu)$", CONTAINERFILE.read_text(), re.MULTILINE)
    return f"{default.group(1)}-{variant}"


def has_registry(ref: str) -> bool:
    """Whether the reference names a registry host (`host.tld/...`, `host:port/...`, `localhost/...`)."""
    first, _, rest = ref.partition("/")
    return bool(rest) and ("." in first or ":" in first or first == "localhost")


def commands(overlay: Path, *, push: bool, load: str | None, engine: str = "docker") -> list[list[str]]:
    """The commands that build the overlay's image (then push or load it), in order."""
    ref = image_ref(overlay)
    build = [engine, "build", "-f", str(CONTAINERFILE.relative_to(ROOT)), "--build-arg", f"RAY_IMAGE={ray_image(ref)}"]
    steps = [[*build, "-t", ref, "."]]
    if push:
        if not has_registry(ref):
            profile = overlay / "profile" / "kustomization.yaml"
            raise ValueError(f"{ref} names no registry to push to: put yours in newName of {profile}")
        steps.append([engine, "push", ref])
    if load:
        steps.append([*LOADERS[load], ref])
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overlay", type=Path, help="a folder of k8s/overlays, e.g. k8s/overlays/gpu")
    parser.add_argument("--push", action="store_true", help="push the image to the registry in its name")
    parser.add_argument("--load", choices=sorted(LOADERS), help="load the image into a local cluster")
    parser.add_argument("--engine", default="docker", help="docker or podman (default docker)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    args = parser.parse_args(argv)
    try:
        steps = commands(args.overlay.resolve(), push=args.push, load=args.load, engine=args.engine)
    except ValueError as error:
        print(f"image.py: {error}", file=sys.stderr)
        return 2
    for step in steps:
        print(shlex.join(step), flush=True)
        if not args.dry_run:
            subprocess.run(step, cwd=ROOT, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
