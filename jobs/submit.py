"""Ray job submission: ``zoo submit NAME [overrides] --address http://HOST:8265`` /
``zoo.submit(...)`` runs the same training as a Ray job on a running cluster.

The spec is resolved and validated here (a typo fails before anything is uploaded) and shipped
as ``run_spec.json`` in the job's working directory, with this package's code as ``py_modules``
in its runtime env (the cluster needs torch and Ray, not diffusion-zoo). The job's driver is
``python -m jobs.entry run_spec.json``, which calls ``zoo.train`` on the cluster
(``RAY_ADDRESS`` is set there). ``follow`` streams the job's logs until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import ZooError


class JobFailedError(ZooError):
    """A submitted job ended in FAILED or STOPPED."""


@dataclass
class SubmittedJob:
    job_id: str
    address: str
    status: str | None = None

    def __repr__(self) -> str:
        return f"SubmittedJob({self.job_id!r}, address={self.address!r}, status={self.status!r})"


JOB_ENV = {"RAY_DEDUP_LOGS": "0"}
# the loggers of Ray's job SDK and packaging, which log each upload and the end of the log stream at INFO
# (Ray sets INFO on them)
SDK_LOGGERS = ("ray.dashboard.modules.dashboard_sdk", "ray._private.runtime_env.packaging", "ray.dashboard.modules.job.sdk")


@contextlib.contextmanager
def quiet(names: tuple[str, ...]):
    """Those loggers at WARNING while the block runs where they are at Ray's own INFO (or unset);
    a level the user chose (DEBUG, say) stays."""
    loggers = [(lg, lg.level) for lg in map(logging.getLogger, names) if lg.level in (logging.NOTSET, logging.INFO)]
    for lg, _ in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in loggers:
            lg.setLevel(level)


IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", "runs", ".pytest_cache")


def submit(model, *, address: str, resume: bool | str = False, follow: bool = True, working_dir: str | None = None,
           runtime_env: dict[str, Any] | None = None, env: dict[str, str] | None = None,
           entrypoint_num_cpus: float | None = None, out=None, **overrides: Any) -> SubmittedJob:
    """Submit ``zoo.train(model, **overrides)`` as a Ray job to the cluster whose dashboard is at
    ``address`` (http://HOST:8265). ``working_dir`` adds your files to the job's working
    directory; ``runtime_env`` adds to its runtime env (pip, env_vars, ...); ``env`` sets
    environment variables. With ``follow`` (default) the job's logs stream to ``out`` (stdout)
    until it ends and a FAILED/STOPPED job raises JobFailedError."""
    from ray.job_submission import JobSubmissionClient

    from jobs.cluster import code_runtime_env
    from zoo.run import resolve_run

    run = resolve_run(model, overrides)
    if "://" not in run.train.output and not Path(run.train.output).is_absolute():
        warnings.warn(f"output={run.train.output!r} is relative: the run is written in the job's working directory on "
                      "the cluster; pass output=s3://... (or a shared path) to keep it", stacklevel=2)
    staging = Path(tempfile.mkdtemp(prefix="zoo-job-"))
    try:
        if working_dir:
            shutil.copytree(working_dir, staging, ignore=IGNORE, dirs_exist_ok=True)
        (staging / "run_spec.json").write_text(run.model_dump_json(indent=1))
        renv = {**code_runtime_env(), **(runtime_env or {}), "working_dir": str(staging)}
        # the job's driver prints its workers' lines as they come, into the run's ray.log
        # (jobs.ray_log): Ray's deduplication held repeated lines back and printed them when the
        # driver exited, after the run's log was closed, into the job's own logs
        renv["env_vars"] = {**JOB_ENV, **renv.get("env_vars", {}), **(env or {})}
        resume_arg = "" if not resume else (" --resume latest" if resume is True else f" --resume {resume}")
        client = JobSubmissionClient(address)
        with quiet(SDK_LOGGERS):  # Ray's notices of each package it uploads
            job_id = _retry_until_agent(lambda: client.submit_job(
                entrypoint=f"python -m jobs.entry run_spec.json{resume_arg}",
                runtime_env=renv,
                entrypoint_num_cpus=entrypoint_num_cpus,
                metadata={"zoo_model": run.name, "zoo_spec_hash": run.hash()},
            ))
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # uploaded by submit_job
    job = SubmittedJob(job_id, address)
    out = out or sys.stdout
    print(f"job: {job_id}", file=out, flush=True)
    if follow:
        with quiet(SDK_LOGGERS):  # and of the log stream's end
            job.status = wait(client, job_id, out)
        if job.status != "SUCCEEDED":
            raise JobFailedError(f"job {job_id} on {address} ended {job.status} (logs: `ray job logs {job_id} "
                                 f"--address {address}`)")
    return job


def _retry_until_agent(submit, timeout_s: float = 90.0) -> str:
    """A cluster that just started has no job agent for a few seconds: retry that, only that."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return submit()
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def wait(client, job_id: str, out) -> str:
    """Stream the job's logs until it ends; its final status."""

    async def follow() -> None:
        async for lines in client.tail_job_logs(job_id):
            out.write(lines)
            out.flush()

    asyncio.run(follow())
    return str(client.get_job_status(job_id).value)
