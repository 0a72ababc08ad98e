"""Ray Train's controller stops a run at a ZooError instead of retrying it.

A worker that fails with a ZooError (a NaN loss, bad data, a corrupt checkpoint) would fail the
same way after every restart, so the callback raises it on the controller, which ends the run
without spending ``max_failures``. The controller, one fresh process per run, unpickles this
callback: the module imports Ray Train's callback base and nothing of the zoo or torch
(``zoo.errors`` is loaded by the time a worker's exception reaches the controller: unpickling
the exception imported it).
"""

from __future__ import annotations

from ray.train.v2.api.callback import UserCallback


class StopOnZooError(UserCallback):
    def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
        from zoo.errors import ZooError

        for _, err in sorted(worker_exceptions.items()):  # in rank order
            if isinstance(err, ZooError):
                raise err
