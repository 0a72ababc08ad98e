"""The embedded local Ray cluster: one Ray on this machine that ends with this process, no
dashboard, every port on loopback (127.0.0.1), workers at nice 0. ``zoo.train`` (jobs.cluster),
``zoo.serve`` (serve.run) and ``zoo.evaluate(workers=N)`` start this one when no cluster is
running and none is named, so nothing the zoo starts on its own listens beyond this machine.
"""

from __future__ import annotations

import contextlib
import os

_started: dict | None = None  # set when this process started the cluster: {"resize": bool}

# Ray Train parts a one-machine cluster that ends with this process has no use for. Each is an
# actor, i.e. one more Python process to start (seconds on a loaded 2-core machine):
EMBEDDED_TRAIN_ENV = {
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",  # watches cloud nodes for preemption notices
    "RAY_TRAIN_METRICS_ENABLED": "0",  # Prometheus metrics for a dashboard the cluster does not run
}


def start(num_cpus: int, *, resize: bool = True, log_to_driver: bool = True) -> None:
    """Start the embedded cluster with ``num_cpus`` logical CPUs. ``resize``: a later run that
    needs more may restart it larger (jobs.cluster.ensure does for zoo.train); else it keeps its
    size and a run it cannot place is refused (a test session's shared cluster)."""
    global _started
    import ray

    for key, value in EMBEDDED_TRAIN_ENV.items():  # before Ray Train reads them; the user's own win
        os.environ.setdefault(key, value)
    with loopback_only(), _without_auth_notice():
        # every worker's output reaches this process (jobs.ray_log puts a run's in its log file);
        # workers start at nice 0 rather than Ray's 15, and each train worker sets the spec's level
        ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=log_to_driver,
                 _node_ip_address=LOOPBACK, _system_config={"worker_niceness": 0})
    _started = {"resize": resize}


def started_here() -> dict | None:
    """{"resize": bool} when the running cluster is the embedded one this process started."""
    import ray

    return _started if ray.is_initialized() else None


def shutdown() -> None:
    """End the embedded cluster this process started (a no-op for one it joined)."""
    global _started
    import ray

    if _started is not None:
        ray.shutdown()
        _started = None


# Ray turns token authentication on for a new local cluster (generating ~/.ray/auth_token once)
# and logs a notice that says so; the embedded cluster keeps it on, without the notice
AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


@contextlib.contextmanager
def _without_auth_notice():
    import logging

    log = logging.getLogger(AUTH_NOTICE_LOGGER)
    before = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(before)


LOOPBACK = "127.0.0.1"
# Ray 2.60 binds its servers (GCS, raylet, object manager, core workers, agents) to the node's IP.
# That IP is what services.get_node_ip_address() returns, which is the loopback address only
# when this switch is off (Ray's own setting for clusters that never leave one machine, the
# default on macOS and Windows); ``_node_ip_address="127.0.0.1"`` alone is turned back into the
# machine's routable IP. The switch is read at import (by this process) and from the
# environment (by the processes ray.init starts), so both are set while the cluster starts, and
# restored after: a later cluster joined by address must see this machine's real IP.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def loopback_only():
    from ray._private import ray_constants

    before_env, before = os.environ.get(LOCAL_ONLY_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOCAL_ONLY_ENV], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
        if before_env is None:
            os.environ.pop(LOCAL_ONLY_ENV, None)
        else:
            os.environ[LOCAL_ONLY_ENV] = before_env
