"""The `zoo` CLI mirrors the API and reports bad input as errors, not tracebacks."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.conftest import tiny_overrides
from zoo.cli import app

runner = CliRunner()


def test_list_and_describe():
    r = runner.invoke(app, ["list", "ddpm-*"])
    assert r.exit_code == 0 and "ddpm-digits" in r.stdout and "ddpm-cifar" in r.stdout
    r = runner.invoke(app, ["describe", "ddpm-digits"])
    assert r.exit_code == 0 and json.loads(r.stdout)["model"]["backbone"]["kind"] == "unet"


def test_errors_are_messages():
    r = runner.invoke(app, ["describe", "ddpm-digitz"])
    assert r.exit_code == 2 and "did you mean 'ddpm-digits'" in r.stderr
    r = runner.invoke(app, ["train", "ddpm-digits", "steps=-1"])
    assert r.exit_code == 2 and "train.steps" in r.stderr
    r = runner.invoke(app, ["train", "ddpm-cifar"])
    assert r.exit_code == 2 and "needs training data" in r.stderr


@pytest.mark.heavy
def test_train_then_sample(tmp_path):
    pairs = [f"{k}={json.dumps(v)}" for k, v in tiny_overrides(steps=2).items()]
    r = runner.invoke(app, ["train", "ddpm-digits", *pairs, "--output", str(tmp_path), "--no-progress"])
    assert r.exit_code == 0, r.output
    ck = next(line.split()[-1] for line in r.stdout.splitlines() if line.startswith("checkpoint:"))
    out = tmp_path / "grid.png"
    r = runner.invoke(app, ["sample", ck, "--n", "4", "--steps", "3", "--solver", "ddpm", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_submit_quiets_rays_upload_notices_and_keeps_a_level_the_user_chose():
    """`zoo submit` lowers Ray's job-SDK loggers from their INFO to WARNING while it uploads and
    follows (tests/test_submit.py checks the output of a real job), restores them after, and
    leaves a logger the user set to DEBUG as it is."""
    import logging

    from jobs.submit import SDK_LOGGERS, quiet

    sdk, packaging, job = map(logging.getLogger, SDK_LOGGERS)
    before = [lg.level for lg in (sdk, packaging, job)]
    packaging.setLevel(logging.DEBUG)
    try:
        with quiet(SDK_LOGGERS):
            assert not sdk.isEnabledFor(logging.INFO) and not job.isEnabledFor(logging.INFO)
            assert packaging.level == logging.DEBUG
        assert sdk.level == before[0] and job.level == before[2] and packaging.level == logging.DEBUG
    finally:
        packaging.setLevel(before[1])
