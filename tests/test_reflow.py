"""The new catalog entries, `zoo reflow` end to end on a tiny rf-digits, `zoo sample --solver
--grid`, and the errors that say what an entry needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import zoo
from tests.conftest import tiny_overrides
from zoo.cli import app
from zoo.pairs import flow_pairs

runner = CliRunner()


def test_issue_entries_are_in_the_catalog():
    assert {"edm-cifar", "edm-digits", "rf-afhq", "2-rf-afhq", "fm-cifar", "rf-digits", "2-rf-digits", "fm-digits"} <= set(zoo.list())
    edm = zoo.get("edm-cifar").model
    assert (edm.sampling.solver.kind, edm.sampling.grid.kind, edm.sampling.steps) == ("heun", "karras", 18)


def test_reflow_entry_without_pairs_says_where_they_come_from(tmp_path):
    with pytest.raises(zoo.DataError, match=r"2-rf-digits needs training data: pass data= reflow pairs .* trained rf-digits.*zoo reflow"):
        zoo.train("2-rf-digits", output=str(tmp_path), progress=False)
    r = runner.invoke(app, ["train", "2-rf-afhq"])
    assert r.exit_code == 2 and "trained rf-afhq" in r.stderr


def test_pairs_data_must_hold_noise(tmp_path):
    with pytest.raises(ValueError, match="no 'noise' column"):
        zoo.train("2-rf-digits", data="builtin:digits", output=str(tmp_path), progress=False, **tiny_overrides(steps=1))


@pytest.fixture(scope="module")
def tiny_rf(tmp_path_factory):
    out = tmp_path_factory.mktemp("rf")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    try:
        yield zoo.train("rf-digits", output=str(out), progress=False, **tiny_overrides(steps=2)), out
    finally:
        torch.set_num_threads(threads)


def test_flow_pairs_are_the_ode_map_of_their_noise(tiny_rf):
    run, _ = tiny_rf
    model = zoo.load(run.checkpoint)
    pairs = flow_pairs(model, 10, steps=3, batch_size=4)
    assert set(pairs) == {"noise", "latent"} and pairs["latent"].shape == (10, 1, 16, 16)
    # pair i depends on its index only, not on the batch it was made in
    one = flow_pairs(model, 10, steps=3, batch_size=10)
    torch.testing.assert_close(pairs["latent"], one["latent"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pairs["noise"], one["noise"])
    with pytest.raises(zoo.SpecError, match="deterministic"):
        flow_pairs(model, 4, solver="euler_maruyama")


def test_zoo_reflow_cli_trains_2_rf_on_pairs_from_the_1_rf(tiny_rf):
    run, out = tiny_rf
    pairs = [f"{k}={json.dumps(v)}" for k, v in tiny_overrides(steps=2).items()]
    r = runner.invoke(app, ["reflow", run.dir, *pairs, "--pairs", "32", "--sample-steps", "2", "--output", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    lines = dict(line.split(":", 1) for line in r.stdout.splitlines() if ":" in line)
    data = lines["pairs"].strip()
    cols = load_file(data)
    assert set(cols) == {"noise", "latent"} and len(cols["noise"]) == 32
    new = zoo.load(lines["checkpoint"].strip())
    assert new.name == "2-rf-digits" and new.spec.sampling.steps == 5
    spec = zoo.RunSpec.model_validate_json((Path(lines["run"].strip()) / "spec.json").read_text())
    assert spec.train.objective.coupling == "pairs" and spec.model.weights.endswith(Path(run.checkpoint).name)
    # k-step distillation of the reflowed flow, from the same command
    r = runner.invoke(app, ["reflow", lines["run"].strip(), *pairs, "--pairs", "32", "--sample-steps", "2", "--distill", "1",
                            "--output", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    spec = zoo.RunSpec.model_validate_json((Path(r.stdout.split("run:")[1].split()[0]) / "spec.json").read_text())
    assert spec.train.objective.kind == "rf_distill" and spec.train.objective.steps == 1


def test_training_starts_from_the_weights_it_is_given(tiny_rf, tmp_path):
    run, _ = tiny_rf
    src = zoo.load(run.checkpoint)
    tuned = zoo.train("rf-digits", weights=run.checkpoint, output=str(tmp_path), progress=False,
                      **tiny_overrides(steps=1, lr=1e-12, warmup_steps=0))  # workers=0: Ray Train's local mode
    tuned = zoo.load(tuned.dir)
    a, b = src.denoiser.state_dict(), tuned.denoiser.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_sample_cli_takes_solver_and_grid(tiny_rf, tmp_path):
    run, _ = tiny_rf
    out = tmp_path / "g.png"
    for solver, grid in (("heun", "karras"), ("{kind: euler, s_churn: 1.0}", "{kind: karras, sigma_max: 80}"), ("dpmpp_2m", "trailing")):
        r = runner.invoke(app, ["sample", run.checkpoint, "--n", "2", "--steps", "3", "--solver", solver, "--grid", grid, "--out", str(out)])
        if grid == "karras":  # rectified flow's sigma/alpha is infinite at t = 1: the error says what to do
            assert r.exit_code == 2 and "finite sigma_max" in r.stderr
            continue
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["sample", run.checkpoint, "--n", "2", "--solver", "heun3"])
    assert r.exit_code == 2 and "dpmpp_2m" in r.stderr


@pytest.mark.parametrize("solver", ["ddpm", "ddim", "euler", "heun", "dpmpp_2m", "euler_maruyama", "rf_euler", "rk45"])
def test_any_model_with_any_solver(solver):
    """model.sample(n, solver=...) for every solver on an EDM-preconditioned and a flow model."""
    for name, grid in (("edm-digits", "karras"), ("rf-digits", "uniform")):
        model = zoo.build(name, **{"backbone.channels": 8, "backbone.groups": 4})
        x = model.sample(2, steps=3, solver=solver, grid=grid, seed=0)
        assert x.shape == (2, 1, 16, 16) and torch.isfinite(x).all(), (name, solver)


def test_sharded_pairs_hold_the_same_columns(tiny_rf, tmp_path):
    """Large pair sets go to Parquet shards: the same noise and latents, row for row, readable
    by the streamed pipeline's decoder, visible only with their index."""
    from jobs.pack import iter_rows
    from jobs.shards import ShardIndex, decode_batch, read_index
    from jobs.reflow import write_pairs
    from zoo.pairs import iter_pairs

    run, _ = tiny_rf
    model = zoo.load(run.checkpoint)
    pairs = flow_pairs(model, 10, steps=2, batch_size=4)
    url = str(tmp_path / "pairs")
    write_pairs(iter_pairs(model, 10, steps=2, batch_size=4), url, shard_size=4)
    index = read_index(url)
    assert (index.rows, len(index.shards), index.columns) == (10, 3, ["key", "latent", "noise"])
    rows = [row for _, row in iter_rows(url, ["key", "latent", "noise"])]
    import numpy as np

    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in ("key", "latent", "noise")}
    batch["path"] = np.array(["shard"] * len(rows), dtype=object)
    out = decode_batch(batch, index=ShardIndex.model_validate(index.model_dump()), on_bad="error", url=url)
    order = [int(k.split("-")[1]) for k in batch["key"]]
    torch.testing.assert_close(torch.from_numpy(out["latent"]), pairs["latent"][order])
    torch.testing.assert_close(torch.from_numpy(out["noise"]), pairs["noise"][order])


@pytest.mark.slow  # a Ray cluster streams the shards
def test_reflow_on_sharded_pairs_streams_the_noise(tiny_rf, ray_cluster):
    run, out = tiny_rf
    new = zoo.reflow(run.dir, pairs=16, sample_steps=2, sharded=True, progress=False, output=str(out / "sharded"),
                     **{**tiny_overrides(steps=2, batch_size=8), "workers": 1, "cpus_per_worker": 1.0})
    spec = zoo.RunSpec.model_validate_json((Path(new.dir) / "spec.json").read_text())
    assert not spec.train.data.endswith(".safetensors") and (Path(spec.train.data) / "index.json").exists()
    assert new.checkpoint and all(torch.isfinite(torch.tensor(m["loss"])) for m in new.metrics if "loss" in m)
