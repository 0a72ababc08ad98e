"""The driver of a submitted job: ``python -m jobs.entry run_spec.json [--resume latest|URL]``."""

from __future__ import annotations

import argparse

from jobs.train import train
from zoo.specs import RunSpec


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jobs.entry")
    p.add_argument("spec", help="a RunSpec as JSON (written by zoo.submit)")
    p.add_argument("--resume", default=None)
    args = p.parse_args(argv)
    with open(args.spec) as f:
        run = RunSpec.model_validate_json(f.read())
    resume = False if args.resume is None else (True if args.resume == "latest" else args.resume)
    result = train(run, resume=resume, progress=True)
    print(f"run:        {result.dir}")
    print(f"checkpoint: {result.checkpoint}")
    if result.grid:
        print(f"samples:    {result.grid}")


if __name__ == "__main__":
    main()
