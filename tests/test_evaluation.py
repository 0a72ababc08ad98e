"""zoo.evaluate end to end on tiny models: NFE planning (measured, not assumed = steps), the
method x NFE table, its CSV/JSON/PNG files next to the run, seeds independent of batching and
workers, label-sampled accuracy of class-conditional models, the CLI, and the loss curve."""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import zoo
from components.conditioners import digit_captions
from components.denoisers.base import DenoiseFn
from components.solvers.base import at
from components.spec import Spec
from tests.conftest import tiny_overrides
from tests.train_cache import cached_train
from zoo.cli import app
from zoo.data import digits
from zoo.evaluation import plan as planning
from zoo.metrics.digits_classifier import classifier
from zoo.model import Model

PNG = b"\x89PNG\r\n\x1a\n"
COND = {"conditioner": {"kind": "class_label", "num_classes": 10, "drop_prob": 0.1}, "backbone.num_classes": 10}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return cached_train(tmp_path_factory, "ddpm-digits", **tiny_overrides())


# -- the metrics recomputed by hand: the same seeds, labels and solver through model.sample, the
# digits classifier called directly, and the formulas written out here (not zoo.metrics') ----------


def by_hand(model: Model, solver: str, steps: int, n: int, guidance: float | None = None):
    """What zoo.evaluate scores for one cell: sample i has seed i and, for a class-conditional
    model, label i % classes (a captioned text model: the caption of digit i % 10); uint8 as a PNG
    writer rounds it."""
    seeds = list(range(n))
    if getattr(getattr(model.conditioner, "spec", None), "captions", None) == "digits":  # captioned text: prompt digit i % 10
        labels = [i % 10 for i in seeds]
        cond = {"prompt": [digit_captions.caption(y) for y in labels]}
    else:
        k = getattr(model.conditioner, "num_classes", None)
        labels = None if k is None else [i % k for i in seeds]
        cond = {"labels": labels}
    x = model.sample(n, steps=steps, solver=solver, guidance=guidance, seed=seeds, **cond)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels


def digits_net(u8: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(features, logits) of the shipped digits classifier on uint8 images."""
    clf = classifier()
    with torch.no_grad():
        f = clf.features(u8.float() / 255 * 2 - 1)
        return f.double().numpy(), clf.head(f).double().numpy()


def frechet(f1: np.ndarray, f2: np.ndarray, sigma2: np.ndarray | None = None) -> float:
    """||mu1 - mu2||^2 + Tr S1 + Tr S2 - 2 Tr (S1 S2)^(1/2) with S1 = A^T A / (n - 1) for the
    centred features A of f1: the nonzero eigenvalues of S1 S2 are those of the small
    A S2 A^T / (n - 1). ``f2``: features, or a mean with its covariance ``sigma2``."""
    if sigma2 is None:
        a2 = f2 - f2.mean(0)
        mu2, sigma2 = f2.mean(0), a2.T @ a2 / (len(f2) - 1)
    else:
        mu2 = f2
    a1 = f1 - f1.mean(0)
    small = a1 @ sigma2 @ a1.T / (len(f1) - 1)
    eig = np.clip(np.linalg.eigvals(small).real, 0, None)
    diff = f1.mean(0) - mu2
    return float(diff @ diff + (a1 * a1).sum() / (len(f1) - 1) + np.trace(sigma2) - 2 * np.sqrt(eig).sum())


def inception_score_by_hand(logits: np.ndarray, splits: int) -> float:
    """exp(E_x KL(p(y|x) || p(y))) per consecutive chunk, averaged (Salimans et al. 2016)."""
    out = []
    for idx in np.array_split(np.arange(len(logits)), splits):
        p = torch.softmax(torch.from_numpy(logits[idx]), 1)
        py = p.mean(0, keepdim=True)
        out.append(torch.exp((p * (p.log() - py.log())).sum(1).mean()).item())
    return float(np.mean(out))


def heldout_digit_features() -> np.ndarray:
    held = digits.load("heldout")[0]
    return digits_net(((held + 1) / 2 * 255).round().to(torch.uint8))[0]


class HeunLikeSpec(Spec):
    """A stand-in two-evaluations-per-step solver (Heun's pattern: 2 per step, 1 on the last)."""

    kind: Literal["heun_like"] = "heun_like"

    def build(self):
        def solve(denoise: DenoiseFn, process, x, ts, rng):
            for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
                pred = denoise(x, at(t, x))
                if i < len(ts) - 2:
                    pred = denoise(x, at(s, x))
                x = pred.x0 * float(process.alpha(s.reshape(1))) + pred.eps * float(process.sigma(s.reshape(1)))
            return x

        return solve


def test_plan_fits_steps_to_measured_nfe():
    process = zoo.build("ddpm-digits").process
    grid = planning.grid_spec("uniform")
    points = planning.plan(HeunLikeSpec(), grid, process, [1, 2, 4, 8])
    assert [(p.budget, p.steps, p.nfe) for p in points] == [(1, 1, 1), (2, None, None), (4, 2, 3), (8, 4, 7)]
    ddim = planning.plan(planning.solver_spec("ddim"), grid, process, [1, 3, 1000, 2000])
    assert [(p.steps, p.nfe) for p in ddim] == [(1, 1), (3, 3), (1000, 1000), (None, None)]  # the chain has 1000 steps
    assert {"ddpm", "ddim"} <= set(planning.solver_kinds())
    assert planning.label(planning.solver_spec({"kind": "ddim", "eta": 1.0})) == "ddim(eta=1.0)"


def test_evaluate_table_files_and_reproducibility(tiny_run):
    ev = zoo.evaluate(tiny_run.dir, metric=["digits_fid", "digits_is"], nfe=[1, 2, 4], solvers=["ddim", "ddpm"],
                      n=24, batch_size=24, progress=False)
    assert [(r["solver"], r["nfe_budget"], r["steps"], r["nfe"]) for r in ev.records] == [
        (s, b, b, b) for s in ("ddim", "ddpm") for b in (1, 2, 4)]
    # every cell's numbers recomputed from its own samples: FID against the held-out digits, IS in 10 chunks
    model, ref = zoo.load(tiny_run.checkpoint), heldout_digit_features()
    for r in ev.records:
        feats, logits = digits_net(by_hand(model, r["solver"], r["steps"], 24)[0])
        assert r["digits_fid"] == pytest.approx(frechet(feats, ref), rel=1e-6), r
        assert r["digits_is"] == pytest.approx(inception_score_by_hand(logits, 10), rel=1e-9), r
    text = str(ev)
    assert "NFE 1" in text and "NFE 4" in text and "ddpm-digits" in text and "digits IS" in text
    # written next to the run: CSV, JSON, text, a plot per metric, sample grids
    run_eval = f"{tiny_run.dir}/eval"
    assert ev.files["csv"] == f"{run_eval}/eval.csv"
    body = json.loads(open(ev.files["json"]).read())
    assert body["records"][0]["digits_fid"] == pytest.approx(ev.records[0]["digits_fid"])
    assert open(ev.files["csv"]).readline().startswith("model,solver,grid,nfe_budget,steps,nfe")
    for key in ("digits_fid_plot", "digits_is_plot", "samples ddpm-digits ddim"):
        assert open(ev.files[key], "rb").read(8) == PNG
    # sample i has seed i whatever the batching: the same numbers with batches of 7
    again = zoo.evaluate(zoo.load(tiny_run.checkpoint), metric="digits_fid", nfe=[2], solvers="ddpm",
                         n=24, batch_size=7, progress=False)
    assert again.records[0]["digits_fid"] == pytest.approx(ev.value("ddpm-digits", "ddpm", 2)["digits_fid"], rel=1e-9)
    assert again.files == {}  # a Model object has no run folder: nothing written unless out= is given


def test_training_writes_a_loss_curve(tiny_run):
    assert open(f"{tiny_run.dir}/loss.png", "rb").read(8) == PNG


def test_conditional_models_are_label_sampled_and_scored():
    model = zoo.build("ddpm-digits", **tiny_overrides(**COND))
    guided = zoo.evaluate(model, metric="digits_accuracy", nfe=[2], n=20, guidance=1.0, progress=False)
    assert guided.records[0]["guidance"] == 1.0
    # the share of the 20 samples whose classifier label is the label they were sampled with
    images, labels = by_hand(model, "ddim", 2, 20, guidance=1.0)
    hits = (digits_net(images)[1].argmax(1) == np.asarray(labels))
    assert guided.records[0]["digits_accuracy"] == pytest.approx(hits.mean(), abs=1e-12)
    wrong_labels = (digits_net(images)[1].argmax(1) == (np.asarray(labels) + 1) % 10).mean()
    assert wrong_labels != hits.mean() or hits.mean() == 0, "the labels matter to the check"
    uncond = zoo.build("ddpm-digits", **tiny_overrides())
    ev = zoo.evaluate([model, uncond], metric=["digits_accuracy", "digits_fid"], nfe=[2], n=20, progress=False)
    assert ev.records[0]["digits_accuracy"] is not None and ev.records[1]["digits_accuracy"] is None
    assert "n/a" in ev.table("digits_accuracy")
    assert ev.rows() == [("ddpm-digits#1", "ddim"), ("ddpm-digits#2", "ddim")]  # same name, told apart
    with pytest.raises(zoo.SpecError, match="ddpm-digits#2 is unconditional"):
        zoo.evaluate([model, uncond], metric="digits_fid", nfe=[2], n=20, guidance=1.0, progress=False)


SMALL_DIT = {"backbone.depth": 1, "backbone.hidden_size": 16, "backbone.num_heads": 2}


def test_captioned_text_models_are_prompted_with_the_captions_and_scored():
    """A text model whose conditioner makes captions from labels (ldm-tiny, lcm-tiny) is sampled
    with the caption of digit i % 10 for sample i, and digits_accuracy scores the prompted digit."""
    model = zoo.build("dit-tiny", **SMALL_DIT)
    torch.manual_seed(0)
    with torch.no_grad():  # adaLN-Zero starts at a zero output whatever the prompt: move it off zero
        for p in model.denoiser.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ev = zoo.evaluate(model, metric="digits_accuracy", nfe=[2], n=20, guidance=1.0, progress=False)
    images, labels = by_hand(model, "ddim", 2, 20, guidance=1.0)
    hits = digits_net(images)[1].argmax(1) == np.asarray(labels)
    assert ev.records[0]["digits_accuracy"] == pytest.approx(hits.mean(), abs=1e-12)
    seeds = list(range(20))
    other = model.sample(20, steps=2, guidance=1.0, seed=seeds, prompt=[digit_captions.caption((i + 1) % 10) for i in seeds])
    assert not torch.equal(images, (other.clamp(0, 1) * 255).round().to(torch.uint8)), "the prompts reach the samples"
    uncaptioned = zoo.build("dit-tiny", **{**SMALL_DIT, "conditioner.captions": None})
    ev = zoo.evaluate(uncaptioned, metric="digits_accuracy", nfe=[2], n=20, progress=False)
    assert ev.records[0]["digits_accuracy"] is None  # no prompts of its own: sampled with the null prompt


def test_errors_name_the_culprit(monkeypatch):
    model = zoo.build("ddpm-digits", **tiny_overrides())
    monkeypatch.delenv("ZOO_INCEPTION", raising=False)
    with pytest.raises(zoo.SpecError, match="inception="):
        zoo.evaluate(model, metric="fid", n=8, progress=False)
    with pytest.raises(zoo.SpecError, match="unknown metric 'fdi'"):
        zoo.evaluate(model, metric="fdi", n=8)
    with pytest.raises(zoo.SpecError, match="eta"):
        zoo.evaluate(model, metric="digits_fid", solvers=[{"kind": "ddim", "eta": 3}], n=8)
    with pytest.raises(zoo.SpecError, match="no reference data"):
        zoo.evaluate(Model(model.spec, "not-in-catalog"), metric="digits_fid", n=8, progress=False)


@pytest.mark.heavy
def test_fid_and_inception_score_with_given_weights_and_reference(tmp_path, inception_weights):
    from safetensors.torch import save_file

    weights = inception_weights["safetensors"]
    data = str(tmp_path / "ref.safetensors")
    save_file({"image": digits.load("heldout")[0][:5].contiguous()}, data)
    model = zoo.build("ddpm-digits", **tiny_overrides())
    ev = zoo.evaluate(model, metric=["fid", "is"], nfe=[1], n=5,
                      ref=data, inception=weights, out=str(tmp_path / "eval"), progress=False)
    r = ev.records[0]
    assert ev.meta["detectors"]["inception"].startswith("pt_inception")
    # recomputed: the same 5 samples through the same Inception weights (one pass), against the
    # mean and covariance of the 5 held-out digits stored next to the data
    from zoo.metrics.inception import load_inception

    net = load_inception(weights)[0]
    images = by_hand(model, "ddim", 1, 5)[0]
    with torch.no_grad():
        out = net((images.float() / 255).expand(-1, 3, -1, -1))
    fake, logits = out["pool"].double().numpy(), out["logits"].double().numpy()
    stats = np.load(tmp_path / "ref.stats.inception.npz")
    assert r["fid"] == pytest.approx(frechet(fake, stats["mu"], stats["sigma"]), rel=1e-5)
    assert r["is"] == pytest.approx(inception_score_by_hand(logits, 5), rel=1e-9)  # 5 chunks of 1: exactly 1
    assert (tmp_path / "ref.stats.inception.npz").is_file()  # reference statistics stored next to the data
    assert open(ev.files["fid_plot"], "rb").read(8) == PNG


def test_cli_eval_and_stats(tiny_run, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["eval", tiny_run.checkpoint, "--metric", "digits_fid", "--nfe", "1,2", "--solver", "ddim",
                            "--n", "12", "--out", str(tmp_path / "ev"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "NFE 2" in r.stdout and (tmp_path / "ev" / "eval.csv").is_file()
    r = runner.invoke(app, ["eval", tiny_run.checkpoint, "--metric", "fid", "--n", "12"], env={"ZOO_INCEPTION": ""})
    assert r.exit_code == 2 and "Inception" in r.stderr
    r = runner.invoke(app, ["stats", "builtin:digits", "--detector", "digits", "--out", str(tmp_path / "s.npz")])
    assert r.exit_code == 0 and "360 images" in r.stdout


@pytest.mark.slow
def test_ray_workers_give_the_in_process_numbers(tiny_run, ray_cluster):
    model = zoo.load(tiny_run.checkpoint)
    kw = dict(metric="digits_fid", nfe=[1, 3], solvers="ddpm", n=16, batch_size=8, progress=False)
    local, remote = zoo.evaluate(model, **kw), zoo.evaluate(model, workers=2, **kw)
    assert [r["nfe"] for r in remote.records] == [1, 3]
    for a, b in zip(local.records, remote.records):
        assert b["digits_fid"] == pytest.approx(a["digits_fid"], rel=1e-9)
