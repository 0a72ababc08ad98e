"""The `zoo` CLI mirrors the API and reports bad input as errors, not tracebacks."""

from __future__ import annotations

import json

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


def test_train_then_sample(tmp_path):
    pairs = [f"{k}={json.dumps(v)}" for k, v in tiny_overrides(steps=2).items()]
    r = runner.invoke(app, ["train", "ddpm-digits", *pairs, "--output", str(tmp_path), "--no-progress"])
    assert r.exit_code == 0, r.output
    ck = next(line.split()[-1] for line in r.stdout.splitlines() if line.startswith("checkpoint:"))
    out = tmp_path / "grid.png"
    r = runner.invoke(app, ["sample", ck, "--n", "4", "--steps", "3", "--solver", "ddpm", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
