"""Start and stop the Serve app the same way for `busnet serve`, the demo and `busnet bench serve`.

Start: Ray (local on 127.0.0.1, or the cluster in RAY_ADDRESS), Serve's HTTP proxy on host:port
with a request timeout (`serve.settings.REQUEST_TIMEOUT_S`, as in serve/config.yaml), the app at
`/`; a failure is one line. Stop: on a joined cluster only our app goes (the cluster's
Serve and its other apps keep running); a local Serve is shut down with the process's Ray.
"""

from __future__ import annotations

import logging
import os
import socket

from ray import serve

from jobs.errors import BusnetError
from serve.app import APP_NAME
from serve.settings import REQUEST_TIMEOUT_S


def check_port(host: str, port: int) -> None:
    """One clear line when host:port is taken, instead of a proxy that never comes up."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise BusnetError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from exc


def start_app(
    app: serve.Application, host: str = "127.0.0.1", port: int = 8000, name: str = APP_NAME, log_level: str = "INFO"
) -> str:
    """Run `app` (from `serve.app.build_app`) at http://host:port/ and return that URL. `log_level` is
    Serve's (controller, proxy, the app's replicas and their access log); the demo asks for WARNING."""
    from jobs.runtime import init_ray

    if not os.environ.get("RAY_ADDRESS"):
        check_port(host, port)  # a joined cluster's proxy may already listen there: that is fine
    init_ray()
    logging.getLogger("ray.serve").setLevel(log_level)  # Serve's lines on this side too ("Started Serve ...")
    logging_config = {"log_level": log_level}
    http_options = {"host": host, "port": port, "request_timeout_s": REQUEST_TIMEOUT_S}
    serve.start(http_options=http_options, logging_config=logging_config)
    try:
        serve.run(app, name=name, route_prefix="/", blocking=False, logging_config=logging_config)
    except RuntimeError as exc:
        raise BusnetError(f"the Serve application did not start: {_last_line(exc)}") from exc
    return f"http://{host}:{port}"


def stop_app(name: str = APP_NAME) -> None:
    """Undo `start_app`: delete the app on a joined cluster, else shut the local Serve down."""
    import ray

    if not ray.is_initialized():
        return  # nothing started (Serve would start a Ray just to find nothing to stop)
    if os.environ.get("RAY_ADDRESS"):
        serve.delete(name)
    else:
        serve.shutdown()


def _last_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
