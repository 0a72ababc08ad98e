"""Which Ray cluster a run uses: the one this process already joined; the one ``address=`` or
``RAY_ADDRESS`` names; or an embedded local cluster started on the spot: one Ray on this machine
that ends with this process, no dashboard, every port on loopback (127.0.0.1), workers at nice 0
(each train worker then sets the spec's ``nice``), and enough logical CPUs that Ray Data has some
beside the train workers even on a 2-core machine, so nothing waits forever for a CPU."""

from __future__ import annotations

import contextlib
import logging
import math
import os

from jobs.worker_setup import quiet_without_dashboard
from zoo.errors import SpecError


_embedded: dict | None = None  # set when this process started the cluster: {"resize": bool}

# Ray Train parts a one-machine cluster that ends with this process has no use for. Each is an
# actor, i.e. one more Python process to start (seconds on a loaded 2-core machine):
EMBEDDED_TRAIN_ENV = {
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",  # watches cloud nodes for preemption notices
    "RAY_TRAIN_METRICS_ENABLED": "0",  # Prometheus metrics for a dashboard the cluster does not run
}


def ensure(address: str | None = None, *, cpus: float = 1.0, gpus: float = 0.0, progress: bool = True) -> str:
    """Join or start a cluster; returns how ('existing', 'address', 'embedded')."""
    import ray

    check_address(address)
    if ray.is_initialized():
        if _embedded is None:
            return "existing"
        have = ray.cluster_resources()
        if not _embedded["resize"] or (have.get("CPU", 0) >= cpus + 1 and have.get("GPU", 0) >= gpus):
            return "embedded"
        ray.shutdown()  # our own embedded cluster is too small for this run: start a larger one
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_address(address, "RAY_ADDRESS")
        if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:  # the driver of a submitted job: its runtime env holds
            ray.init(address=address, log_to_driver=progress)  # the code already
        else:
            ray.init(address=address, runtime_env=code_runtime_env(), log_to_driver=progress)
        return "address"
    start_embedded(max(os.cpu_count() or 1, math.ceil(cpus) + 1))  # +1: Ray Data's readers and decoders
    return "embedded"


def start_embedded(num_cpus: int, *, resize: bool = True, log_to_driver: bool = True) -> None:
    """Start the embedded cluster with ``num_cpus`` logical CPUs. ``resize``: a later run that
    needs more restarts it larger (what zoo.train does); else it keeps its size and a run it
    cannot place is refused (a test session's shared cluster)."""
    global _embedded
    import ray

    for key, value in EMBEDDED_TRAIN_ENV.items():  # before Ray Train reads them; the user's own win
        os.environ.setdefault(key, value)
    with loopback_only():
        # every worker's output reaches this process (jobs.ray_log puts it in the run's log file);
        # workers start at nice 0 rather than Ray's 15, and each train worker sets the spec's level
        ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=log_to_driver,
                 _node_ip_address=LOOPBACK, _system_config={"worker_niceness": 0},
                 runtime_env={"worker_process_setup_hook": quiet_without_dashboard})
    _embedded = {"resize": resize}


def shutdown() -> None:
    """End the embedded cluster this process started (a no-op for one it joined)."""
    global _embedded
    import ray

    if _embedded is not None:
        ray.shutdown()
        _embedded = None


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


def check_address(address: str | None, name: str = "address") -> None:
    if address and address.startswith(("http://", "https://")):
        raise SpecError(
            f"{name}={address!r} is a job submission (dashboard) address: use zoo.submit / `zoo submit` "
            "for it, or give zoo.train the cluster's own address (HOST:6379, ray://HOST:10001 or 'auto')")


def check_resources(cpus: float, gpus: float, how: str, data_cpus: float = 0.0) -> None:
    """Refuse a run the cluster can never place, or whose Ray Data readers would find no CPU
    beside the train workers: Ray would wait for the resources forever."""
    import ray

    have = ray.cluster_resources()
    if have.get("CPU", 0) >= cpus + data_cpus and have.get("GPU", 0) >= gpus:
        return
    data = f" + {data_cpus:g} for Ray Data to read and decode the shards" if data_cpus else ""
    msg = (f"the run asks for {cpus:g} CPUs{data} and {gpus:g} GPUs (workers x cpus_per_worker / gpus_per_worker) "
           f"but the Ray cluster has {have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs; lower workers or "
           "cpus_per_worker (fractions are fine)")
    if how == "address":  # an autoscaling cluster may grow to fit
        import warnings

        warnings.warn(msg + "; waiting for the cluster to scale up", stacklevel=3)
        return
    raise SpecError(msg)


def code_runtime_env() -> dict:
    """Ship this package's code to a cluster that may not have it (or an older version)."""
    import components
    import jobs
    from zoo import errors  # the zoo package's folder, named through a core module (not the facade)

    zoo_dir = os.path.dirname(errors.__file__)
    return {"py_modules": [zoo_dir] + [os.path.dirname(m.__file__) for m in (components, jobs)],
            "excludes": ["__pycache__", "*.pyc"]}
