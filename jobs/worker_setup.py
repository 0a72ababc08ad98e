"""Set-up of every worker process of the embedded cluster (Ray's ``worker_process_setup_hook``).

Ray runs the hook in each process it starts: train workers, Ray Train's controller and
bookkeeping actors, Ray Data's readers, Serve replicas. It is found by reference, so this module
imports nothing of the zoo: importing the ``zoo`` package loads torch and the catalog (seconds of
CPU), which a process that never builds a model must not pay on a 2-core machine.
"""

from __future__ import annotations

import logging


def quiet_without_dashboard() -> None:
    """The embedded cluster has no dashboard, hence no State API, so Ray Train's placement-group
    cleaner (which watches the controller through that API) would warn every second that it
    cannot; the cluster ends with this process, so it has nothing to clean."""
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)
