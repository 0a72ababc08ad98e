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
        if env:
            renv["env_vars"] = {**renv.get("env_vars", {}), **env}
        resume_arg = "" if not resume else (" --resume latest" if resume is True else f" --resume {resume}")
        client = JobSubmissionClient(address)
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
