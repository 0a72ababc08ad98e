"""Stable Diffusion in the diffusers layout: a tiny SD folder written here with diffusers' own
classes (random weights, a CLIP tokenizer built from a vocab.json / merges.txt written here)
loads through the spec from a local path and from S3 (moto on 127.0.0.1), samples exactly as
diffusers' StableDiffusionPipeline with DDIMScheduler does, and export_diffusers round-trips."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import zoo  # noqa: E402
from components.hf_folder import LayoutError  # noqa: E402
from zoo.loading import load_diffusers  # noqa: E402
from zoo.testing_sd import write_sd_folder  # noqa: E402

PROMPT = "a handwritten digit seven"


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def sd_folder(request, tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: intra-op threads only slow them down on a loaded machine
    try:
        return write_sd_folder(tmp_path_factory.mktemp(request.param), request.param)
    finally:
        torch.set_num_threads(n)


def diffusers_images(folder: str, guidance_scale: float, n: int = 2) -> torch.Tensor:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(PROMPT, num_inference_steps=4, guidance_scale=guidance_scale, num_images_per_prompt=n,
               generator=torch.Generator().manual_seed(0), output_type="pt", height=16, width=16)
    return out.images


@pytest.mark.parametrize("w", [0.0, 3.0])
def test_sample_equals_diffusers_pipeline(sd_folder, w, one_thread):
    model = zoo.load(sd_folder)
    assert model.spec.denoiser.kind == ("v" if "v_prediction" in sd_folder else "eps")
    assert model.spec.process.kind == "vp_scaled_linear" and model.spec.sampling.grid.offset == 1
    ours = model.sample(2, steps=4, solver="ddim", seed=0, prompt=PROMPT, guidance=w)
    theirs = diffusers_images(sd_folder, guidance_scale=w + 1)
    assert ours.shape == theirs.shape == (2, 3, 16, 16)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
    # the prompt matters: another prompt gives other images
    other = model.sample(2, steps=4, solver="ddim", seed=0, prompt="the number three", guidance=w)
    assert (other - ours).abs().max() > 1e-3


@pytest.mark.slow
def test_loads_from_s3_and_export_round_trips(sd_folder, s3_server, tmp_path, one_thread):
    import s3fs
    from safetensors.torch import load_file

    fs = s3fs.S3FileSystem()
    if not fs.exists("zoo-sd"):
        fs.mkdir("zoo-sd")
    url = "s3://zoo-sd/" + sd_folder.rstrip("/").split("/")[-2]
    fs.put(sd_folder, url, recursive=True)
    remote = zoo.load(url)
    local = zoo.load(sd_folder)
    a = remote.sample(1, steps=4, solver="ddim", seed=1, prompt=PROMPT, guidance=2.0)
    b = local.sample(1, steps=4, solver="ddim", seed=1, prompt=PROMPT, guidance=2.0)
    assert torch.equal(a, b)

    out = tmp_path / "exported"
    remote.export_diffusers(str(out))
    for part, fname in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model")):
        mine, theirs = load_file(f"{out}/{part}/{fname}.safetensors"), load_file(f"{sd_folder}/{part}/{fname}.safetensors")
        assert mine.keys() == theirs.keys(), part
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), part
    again = zoo.load(str(out))
    assert again.spec.model_copy(update={"weights": None}) == local.spec.model_copy(update={"weights": None})
    assert torch.equal(again.sample(1, steps=4, solver="ddim", seed=1, prompt=PROMPT, guidance=2.0), b)
    # and diffusers' pipeline loads the export and agrees with the original folder
    torch.testing.assert_close(diffusers_images(str(out), 3.0), diffusers_images(sd_folder, 3.0), rtol=0, atol=0)


def test_a_catalog_like_spec_is_checked_against_the_folder(sd_folder, one_thread):
    spec = zoo.load(sd_folder).spec
    v = "v_prediction" in sd_folder
    if not v:
        from components.denoisers import VSpec

        wrong = spec.model_copy(update={"denoiser": VSpec()})
    else:
        from components.denoisers import EpsSpec

        wrong = spec.model_copy(update={"denoiser": EpsSpec()})
    with pytest.raises(LayoutError, match=r"scheduler_config.json: the scheduler means denoiser"):
        load_diffusers(sd_folder, wrong)
    from components.noise import VpScaledLinearSpec

    wrong = spec.model_copy(update={"process": VpScaledLinearSpec(beta_start=0.0001, beta_end=0.02)})
    with pytest.raises(LayoutError, match=r"scheduler_config.json: the scheduler means process"):
        load_diffusers(sd_folder, wrong)
    wrong = spec.model_copy(update={"backbone": spec.backbone.model_copy(update={"cross_attention_dim": 64})})
    with pytest.raises(LayoutError, match=r"unet/config.json: cross_attention_dim=32 but the spec's backbone gives 64"):
        load_diffusers(sd_folder, wrong)


def test_bad_folders_and_prompts(sd_folder, tmp_path, one_thread):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(sd_folder, broken)
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(LayoutError, match=r"text_encoder/ named in model_index.json is missing"):
        zoo.load(str(broken))
    shutil.copytree(f"{sd_folder}/text_encoder", broken / "text_encoder")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").rename(broken / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(LayoutError, match=r"unet: .* holds pickle weights .*safe_serialization=True"):
        zoo.load(str(broken))
    model = zoo.load(sd_folder)
    with pytest.raises(ValueError, match=r"prompt 0 .* is 1[4-9] tokens long; this model's conditioner.max_length is 12"):
        model.sample(1, steps=2, prompt="seven " * 12)
    with pytest.raises(ValueError, match="text-conditioned: pass prompt="):
        model.sample(1, steps=2, labels=3)


def test_cli_samples_a_prompt(sd_folder, tmp_path, one_thread):
    from typer.testing import CliRunner

    from zoo.cli import app

    if "v_prediction" in sd_folder:
        pytest.skip("one parameterization is enough for the CLI plumbing")
    out = tmp_path / "grid.png"
    r = CliRunner().invoke(app, ["sample", sd_folder, "--n", "2", "--steps", "2", "--prompt", PROMPT, "--guidance", "2",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 0
    r = CliRunner().invoke(app, ["sample", sd_folder, "--n", "1", "--steps", "2", "--prompt", "seven " * 12])
    assert r.exit_code != 0 and "max_length is 12" in r.output


def test_prompt_to_an_unconditional_model_is_an_error():
    model = zoo.build("ddpm-digits", **{"backbone.channels": 8, "backbone.channel_mult": [1], "backbone.attention_resolutions": [],
                                        "backbone.groups": 4})
    with pytest.raises(ValueError, match="unconditional: it takes neither labels nor a prompt"):
        model.sample(1, steps=1, prompt="a handwritten digit seven")


def test_served_text_model_takes_prompts_and_batches_them(sd_folder, one_thread):
    """The serve path of POST /v1/models/{name}/generate short of HTTP: request checks and one
    batched network call for requests with different prompts, each equal to its own sample."""
    from serve.batching import run_batch
    from serve.limits import ModelRules, RequestError
    from serve.options import Limits
    from serve.schemas import GenerateRequest
    from serve.source import resolve
    from serve.options import ModelOptions

    if "v_prediction" in sd_folder:
        pytest.skip("one parameterization is enough for the serving plumbing")
    source = resolve(ModelOptions(model=sd_folder))
    model = source.load()
    rules = ModelRules.build("sd", source.spec, Limits())
    with pytest.raises(RequestError, match="takes no class label .it is text-conditioned: pass prompt."):
        rules.check(GenerateRequest(label=3))
    jobs = [rules.check(GenerateRequest(n=1, steps=3, prompt=PROMPT, guidance=2.0, seed=1)),
            rules.check(GenerateRequest(n=2, steps=3, prompt="the number three", guidance=2.0, seed=2))]
    out = run_batch(model, jobs, max_images=8)
    assert [o.batch_requests for o in out] == [2, 2] and all(o.error is None for o in out)
    for j, o in zip(jobs, out):
        alone = model.sample(j.n, steps=3, solver="ddim", seed=j.seed, prompt=j.prompt, guidance=2.0).numpy()
        assert abs(o.images - alone).max() < 1e-5


def test_catalog_name_with_a_folder_is_checked_against_the_entry(sd_folder, one_thread):
    """zoo.load("sd-1.5", weights=folder): the tiny folder is not SD 1.5, and the error says where."""
    if "v_prediction" in sd_folder:
        with pytest.raises(LayoutError, match=r"scheduler_config.json: the scheduler means denoiser = \{'kind': 'v'\}"):
            zoo.load("sd-1.5", weights=sd_folder)
    else:
        with pytest.raises(LayoutError, match=r"vae/config.json: down_block_types=.* but the spec's autoencoder gives"):
            zoo.load("sd-1.5", weights=sd_folder)
