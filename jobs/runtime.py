"""Start or join Ray the same way for every command.

With RAY_ADDRESS set, join that cluster. Otherwise start a local Ray bound to 127.0.0.1 with at
least 4 logical CPUs: on a 2-core machine, Train workers and Tune trials would otherwise reserve
every CPU and leave Ray Data none (the `backpressured:tasks(ResourceBudget)` hang).

The local Ray runs its dashboard (on 127.0.0.1, a free port) because Ray Train's
PlacementGroupCleaner asks the State API, which the dashboard serves, whether a training controller
is still alive: without it, each Tune trial that ASHA stops keeps its workers' CPUs reserved for
good, and the cleaner logs a warning every second.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os

LOCAL_MIN_CPUS = 4
LOCAL_OBJECT_STORE_BYTES = 500_000_000
START_ATTEMPTS = 2
# Lines busnet's code prints in Ray workers (epoch lines, "randomly initialised"): never held back by Ray's
# log deduplication, which merges lines that differ only in their numbers (two trials' "epoch 3/12" lines
# became one "[repeated 2x across cluster]") and prints what it held when the driver disconnects, after
# the command's summary.
OWN_LINES = r"\[busnet |randomly initialised"
# Ray's notices that tell a busnet user nothing, hidden unless --verbose (Ray's log files keep them).
RAY_NOISE = "|".join(
    (
        # Ray's C++ log lines ("[time E pid tid] core_worker.cc:2465: ...") that workers print: e.g. that an
        # actor's constructor arguments live in the object store (Train's PreemptionWatcher, Ray Data's actor
        # pools). RAY_BACKEND_LOG_LEVEL would also hide the driver's own, but every process then announces it.
        r"^\[[-\d: ,]+ [EWI] \d+ \d+\] \w+\.cc:\d+: ",
        r"^\[\w+\.cc : \d+\] RAW: ",  # abseil's, e.g. "[mutex.cc : 452] RAW: Lock blocking" on a busy machine
        # Tune ends a trial by killing its Train controller; Train's cleaner then frees the trial's CPUs, as it should
        r"Detected that the Ray Train controller actor \(\w+\) is dead",
        r"worker processes have been started on node",  # the raylet: more workers starting than cores
        r"ServeController\.graceful_shutdown failed",  # the controller Serve's shutdown killed, "retried"
    )
)
_quiet = False  # set by quiet_ray: what Ray prints while the process exits is dropped
VERBOSE_HELP = "show Ray's own logs, warnings and notices (hidden by default)"  # every command's --verbose


def init_ray(num_cpus: int | None = None, object_store_memory: int | None = None) -> None:
    """Connect to RAY_ADDRESS, or start a local single-node Ray on 127.0.0.1 (idempotent)."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        # Inside a Ray job the job's runtime env applies; a remote cluster has its own storage settings.
        ray.init(address=os.environ["RAY_ADDRESS"])
        _exit_quietly()
        return
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo on one machine: loopback only
    # A Train worker's `print` (tqdm_ray's bar updates among them, jobs.progress) goes to its stdout, which
    # Ray shows on the driver, not through Ray Train's logger, which wraps each update in a log record.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    options = dict(
        # "local": always a Ray of our own; without it Ray joins another local Ray it finds (two busnet
        # commands at once on one machine) and then refuses num_cpus.
        address="local",
        num_cpus=num_cpus or max(LOCAL_MIN_CPUS, os.cpu_count() or 1),
        object_store_memory=object_store_memory or LOCAL_OBJECT_STORE_BYTES,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=free_port(),
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": _forwarded_env(), "worker_process_setup_hook": "jobs.runtime.point_at_own_cluster"},
        logging_level="WARNING",
    )
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            ray.init(**options)
            _exit_quietly()
            return
        except Exception as exc:
            # Ray gives a node 30 s to start, which an overloaded machine can miss; and the dashboard's
            # free port can be taken by another process before Ray binds it: both deserve one more try.
            retry = any(why in str(exc) for why in ("timed out during startup", "already occupied"))
            if not retry or attempt == START_ATTEMPTS:
                raise
            ray.shutdown()
            options["dashboard_port"] = free_port()


def point_at_own_cluster() -> None:
    """Run in every worker of a local Ray: set RAY_ADDRESS to this cluster. Ray's State API, which
    Train's PlacementGroupCleaner asks from a detached actor, otherwise finds every Ray on the machine
    ("Found multiple active Ray instances") and fails; the stopped trials' CPUs then stay reserved."""
    import ray

    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


def quiet_ray(verbose: bool = False) -> None:
    """Keep Ray's and MLflow's own chatter (Ray Data's execution plans, deprecation warnings of its
    actors, C++ log lines, the raylet's notices, Tune's timing hints) off the console unless `verbose`,
    and busnet's own worker lines out of Ray's log deduplication (`OWN_LINES`) always. Call before
    anything imports ray (its constants read the environment then) and before `init_ray` (Ray's
    processes inherit the environment). Ray Train's own logs follow `RunConfig(logging_config=...)`."""
    global _quiet
    os.environ.setdefault("RAY_DEDUP_LOGS_ALLOW_REGEX", OWN_LINES)
    if verbose:
        return
    _quiet = True
    os.environ.setdefault("RAY_DEDUP_LOGS_SKIP_REGEX", RAY_NOISE)
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")  # busnet prints its own progress
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # not "Creating initial MLflow database tables"
    # Tune's console reporter prints its banners ("View detailed results here", a TensorBoard hint) at any
    # RunConfig(verbose=...); the legacy one follows verbose=0 (jobs.train.tune), and busnet prints its own lines.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Notices, not problems: Ray Data's that its bars are off (as asked above), and ray.init's that a
    # new local Ray uses token authentication (its default).
    for name in ("ray.data._internal.progress", "ray._private.authentication.authentication_token_setup"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # "The `process_trial_result` operation took 0.9 s, which may be a performance bottleneck": a hint to
    # Tune's developers, four lines per reported epoch on a busy machine.
    logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)


def _exit_quietly() -> None:
    """Unless `verbose`, disconnect quietly at exit; registered after ray's own exit hook, so run before it."""
    if _quiet:
        atexit.register(_disconnect_quietly)


def _disconnect_quietly() -> None:
    """At exit: disconnect from Ray with its output dropped. The command has printed its summary; what
    Ray prints while disconnecting (the log lines its deduplication held back, late notices) would come
    after it."""
    import ray

    if not ray.is_initialized():
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        ray.shutdown()


def free_port(preferred: int | None = None) -> int:
    """A TCP port free on 127.0.0.1 right now: `preferred` when it is free, else any free one."""
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred or 0))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _forwarded_env() -> dict[str, str]:
    """Storage, weight-cache (Hugging Face: HF_HOME, HF_HUB_OFFLINE) and threading settings that Ray
    workers must see as the driver does; never a secret.

    Ray writes a runtime env into its logs (world-readable files under its temp dir) and job records,
    so credentials stay out of it: a local Ray's workers inherit them from this process's environment
    (the raylet is its child), and a cluster's pods get theirs from their own Secret (k8s/)."""
    names = [n for n in os.environ if n.startswith(("AWS_", "BUSNET_", "HF_")) and not _secret(n)]
    names += ["GLOO_SOCKET_IFNAME"]
    return {n: os.environ[n] for n in names if n in os.environ}


def _secret(name: str) -> bool:
    """A variable that may hold a credential (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, ...)."""
    return any(word in name.upper() for word in ("SECRET", "TOKEN", "PASSWORD", "CREDENTIAL", "KEY"))
