"""The torch process group of a run on the embedded cluster, on loopback only.

Ray Train's TorchConfig meets its workers through a TCPStore that rank 0 serves on every
interface (``::``, port MASTER_PORT), and gloo and NCCL listen on the interface the host name
resolves to. The embedded cluster is one machine whose Ray listens on 127.0.0.1 alone
(zoo.local_cluster), so its runs meet through a FileStore in a temporary folder of that machine
(no port at all) and pin gloo's and NCCL's sockets to the loopback interface. Everything else is
Ray Train's own set-up (``ray.train.torch.config``: its env vars, process-group call, timeouts and
shutdown), called in the workers.

Ray Train's controller unpickles this config and runs the backend's ``on_start`` and
``on_shutdown``; it never touches a tensor. So this module imports neither torch nor
``ray.train.torch`` (which imports torch): the functions the workers run import it there. The
controller, one fresh process per run, starts without torch (about 3 s of CPU on 2 cores;
bench/ray_train_overhead.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass

from ray.train.backend import Backend, BackendConfig
from ray.train.v2._internal.util import TrainingFramework

logger = logging.getLogger(__name__)


def loopback_interface() -> str:
    """The name of this machine's loopback interface ('lo' on Linux, 'lo0' on macOS)."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address.startswith("127.") for a in addrs):
            return name
    raise RuntimeError("this machine has no loopback interface with an IPv4 address (127.x)")


# -- run in the workers ------------------------------------------------------------------------
def _pin_sockets(interface: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = interface
    os.environ["NCCL_SOCKET_IFNAME"] = interface


def _torch_env_vars() -> None:
    from ray.train.torch.config import _set_torch_distributed_env_vars

    _set_torch_distributed_env_vars()


def _process_group(**kwargs) -> None:
    from ray.train.torch.config import _setup_torch_process_group

    _setup_torch_process_group(**kwargs)


def _shutdown(destroy_process_group: bool) -> None:
    from ray.train.torch.config import _shutdown_torch

    _shutdown_torch(destroy_process_group=destroy_process_group)


# -- run in the controller ---------------------------------------------------------------------
class _LoopbackBackend(Backend):
    share_cuda_visible_devices: bool = True  # as Ray Train's torch backend

    def on_start(self, worker_group, backend_config: LoopbackTorchConfig) -> None:
        import ray

        backend = backend_config.backend or ("nccl" if worker_group.get_resources_per_worker().get("GPU", 0) else "gloo")
        self._folder = tempfile.mkdtemp(prefix="zoo-pg-")  # a new one per worker group (a restart too)
        worker_group.execute(_pin_sockets, interface=loopback_interface())
        worker_group.execute(_torch_env_vars)
        ray.get([worker_group.execute_single_async(i, _process_group, backend=backend, world_rank=i,
                                                   world_size=len(worker_group), init_method=f"file://{self._folder}/store",
                                                   timeout_s=backend_config.timeout_s)
                 for i in range(len(worker_group))])

    def on_shutdown(self, worker_group, backend_config) -> None:
        import ray
        from ray.exceptions import GetTimeoutError
        from ray.train.constants import DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S

        try:
            timeout = float(os.environ.get(TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S))
            try:
                ray.get(worker_group.execute_async(_shutdown, destroy_process_group=len(worker_group) > 1), timeout=timeout)
            except GetTimeoutError:
                logger.warning("Torch process group shutdown timed out after %s seconds", timeout)
        finally:
            shutil.rmtree(getattr(self, "_folder", ""), ignore_errors=True)


@dataclass
class LoopbackTorchConfig(BackendConfig):
    """Ray Train's TorchConfig (its backend and timeout fields), whose process group listens on
    no port beyond loopback (one machine only)."""

    backend: str | None = None
    timeout_s: int = 1800

    @property
    def backend_cls(self):
        return _LoopbackBackend

    @property
    def train_func_context(self):  # the worker's CUDA device, as TorchConfig's
        from ray.train.torch.config import TorchConfigContextManager

        return TorchConfigContextManager

    @property
    def framework(self):
        return TrainingFramework.TORCH

    def to_dict(self) -> dict:
        return {"backend": self.backend, "init_method": "file", "timeout_s": self.timeout_s}
