"""The torch process group of a run on the embedded cluster, on loopback only.

Ray Train's TorchConfig meets its workers through a TCPStore that rank 0 serves on every
interface (``::``, port MASTER_PORT), and gloo and NCCL listen on the interface the host name
resolves to. The embedded cluster is one machine whose Ray listens on 127.0.0.1 alone
(zoo.local_cluster), so its runs meet through a FileStore in a temporary folder of that machine
(no port at all) and pin gloo's and NCCL's sockets to the loopback interface. Everything else is
Ray Train's own set-up (its backend choice, env vars, timeouts and shutdown).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass

from ray.train.torch.config import (
    TorchConfig,
    _set_torch_distributed_env_vars,
    _setup_torch_process_group,
    _TorchBackend,
)


def loopback_interface() -> str:
    """The name of this machine's loopback interface ('lo' on Linux, 'lo0' on macOS)."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address.startswith("127.") for a in addrs):
            return name
    raise RuntimeError("this machine has no loopback interface with an IPv4 address (127.x)")


def _pin_sockets(interface: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = interface
    os.environ["NCCL_SOCKET_IFNAME"] = interface


class _LoopbackBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig) -> None:
        import ray

        backend = backend_config.backend or ("nccl" if worker_group.get_resources_per_worker().get("GPU", 0) else "gloo")
        self._folder = tempfile.mkdtemp(prefix="zoo-pg-")  # a new one per worker group (a restart too)
        worker_group.execute(_pin_sockets, interface=loopback_interface())
        worker_group.execute(_set_torch_distributed_env_vars)
        ray.get([worker_group.execute_single_async(i, _setup_torch_process_group, backend=backend, world_rank=i,
                                                   world_size=len(worker_group), init_method=f"file://{self._folder}/store",
                                                   timeout_s=backend_config.timeout_s)
                 for i in range(len(worker_group))])

    def on_shutdown(self, worker_group, backend_config) -> None:
        try:
            super().on_shutdown(worker_group, backend_config)
        finally:
            shutil.rmtree(getattr(self, "_folder", ""), ignore_errors=True)


@dataclass
class LoopbackTorchConfig(TorchConfig):
    """TorchConfig whose process group listens on no port beyond loopback (one machine only)."""

    @property
    def backend_cls(self):
        return _LoopbackBackend
