"""Which Ray cluster a run uses: the one this process already joined; the one ``address=`` or
``RAY_ADDRESS`` names; or an embedded local cluster started on the spot: one Ray on this machine
that ends with this process, no dashboard, every port on loopback (127.0.0.1), workers at nice 0
(each train worker then sets the spec's ``nice``), and enough logical CPUs that Ray Data has some
beside the train workers even on a 2-core machine, so nothing waits forever for a CPU."""

from __future__ import annotations

import math
import os

from zoo import local_cluster
from zoo.errors import SpecError


def ensure(address: str | None = None, *, cpus: float = 1.0, gpus: float = 0.0, progress: bool = True) -> str:
    """Join or start a cluster; returns how ('existing', 'address', 'embedded')."""
    import ray

    check_address(address)
    if ray.is_initialized():
        ours = local_cluster.started_here()
        if ours is None:
            return "existing"
        have = ray.cluster_resources()
        if not ours["resize"] or (have.get("CPU", 0) >= cpus + 1 and have.get("GPU", 0) >= gpus):
            return "embedded"
        local_cluster.shutdown()  # our own embedded cluster is too small for this run: start a larger one
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_address(address, "RAY_ADDRESS")
        if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:  # the driver of a submitted job: its runtime env holds
            ray.init(address=address, log_to_driver=progress)  # the code already
        else:
            ray.init(address=address, runtime_env=code_runtime_env(), log_to_driver=progress)
        return "address"
    local_cluster.start(max(os.cpu_count() or 1, math.ceil(cpus) + 1))  # +1: Ray Data's readers and decoders
    return "embedded"


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
