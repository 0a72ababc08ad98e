"""Callbacks: user code that runs inside every training worker (Ray pickles them there), e.g.
to log to an experiment tracker from rank 0 or to inject faults in tests.

    class Print(Callback):
        def on_step_end(self, step, rank, metrics):
            if rank == 0 and metrics:
                print(step, metrics["loss"])

    zoo.train("ddpm-digits", callbacks=[Print()])

They observe; they do not change what is trained (resume stays bit-identical). An exception in
a callback fails the worker like any other error (and is retried under ``max_failures``).
"""

from __future__ import annotations

from typing import Any


class Callback:
    def on_train_start(self, step: int, rank: int) -> None:
        """Before the first step of this attempt (``step`` > 0 when resuming)."""

    def on_step_end(self, step: int, rank: int, metrics: dict[str, Any] | None) -> None:
        """After optimizer step ``step`` (1-based count of steps done); ``metrics`` on log steps."""

    def on_checkpoint(self, step: int, rank: int, url: str | None) -> None:
        """After the checkpoint of ``step`` is complete in storage (``url`` on rank 0)."""
