"""Latent consistency models as released (Luo et al. 2023; diffusers' LCMScheduler and
LatentConsistencyModelPipeline): the boundary scalings with timestep_scaling, the LCM timestep
schedule, and multistep latent consistency sampling of a tiny LCM folder written by the test with
diffusers' own classes (a UNet with time_cond_proj_dim), equal to diffusers' pipeline."""

from __future__ import annotations

import pytest
import torch

from components.denoisers import DENOISERS, Denoiser, LcmSpec
from components.noise import PROCESSES as NOISES
from components.solvers import SOLVERS
from components.solvers.lcm import LcmSamplerSpec, lcm_timesteps

PROMPT = "a handwritten digit seven"


def test_registered_and_boundary_condition_exact():
    assert "lcm" in DENOISERS.kinds() and "lcm" in SOLVERS.kinds()
    assert not SOLVERS.parse("lcm").has_step
    process = NOISES.parse("vp_scaled_linear").build()

    class Noise(torch.nn.Module):
        def forward(self, x, c_noise, cond=None):
            return torch.randn_like(x) * 5

    for pred in ("eps", "v", "x0"):
        den = Denoiser(Noise(), process, LcmSpec(prediction=pred).build())
        x = torch.randn(3, 4, 8, 8)
        pred_ = den(x, torch.full((3,), process.t_min))
        assert torch.equal(pred_.x0, x)  # f(x, t_min) = x: c_skip = 1, c_out = 0 at timestep 0


def test_scalings_equal_lcm_scheduler():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.LCMScheduler(timestep_scaling=10.0)
    process = NOISES.parse("vp_scaled_linear").build()
    lcm = LcmSpec().build()
    n = torch.tensor([0, 1, 19, 259, 499, 759, 999])
    c_skip, c_out = lcm.scalings((n.double() + 1) / 1000, process)
    for i, k in enumerate(n.tolist()):
        s, o = sched.get_scalings_for_boundary_condition_discrete(torch.tensor(k))
        assert abs(float(c_skip[i]) - float(s)) < 1e-6 and abs(float(c_out[i]) - float(o)) < 1e-6  # theirs in float32
    # the CM paper's form differs (diffusers issue #8547): c_out carries a factor sigma_data there
    assert float(c_out[-1]) > 0.99


@pytest.mark.parametrize("original", [50, 25])
def test_timesteps_equal_lcm_scheduler(original):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.LCMScheduler()
    for steps in (1, 2, 3, 4, 8, original):
        sched.set_timesteps(steps, original_inference_steps=original)
        assert lcm_timesteps(1000, steps, original) == sched.timesteps.tolist(), steps
    assert lcm_timesteps(1000, 4) == [999, 759, 499, 259]
    with pytest.raises(ValueError, match="original_inference_steps"):
        lcm_timesteps(1000, original + 1, original)


def test_timesteps_field_validated():
    with pytest.raises(ValueError, match="strictly decreasing"):
        LcmSamplerSpec(timesteps=[499, 999])
    with pytest.raises(ValueError, match="continuous"):
        LcmSamplerSpec().build().times(NOISES.parse({"kind": "vp_linear", "timesteps": None}).build(), 4)


# -- a tiny LCM folder in the diffusers layout ----------------------------------------------------
@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def lcm_folder(request, tmp_path_factory):
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from zoo.testing_sd import write_sd_folder

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return write_sd_folder(tmp_path_factory.mktemp("lcm-" + request.param), request.param, lcm_w_dim=16, seed=3)
    finally:
        torch.set_num_threads(n)


def lcm_pipeline_images(folder: str, steps: int, guidance_scale: float, n: int = 2, seed: int = 0) -> torch.Tensor:
    from diffusers import LatentConsistencyModelPipeline

    pipe = LatentConsistencyModelPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance_scale, num_images_per_prompt=n,
               generator=torch.Generator().manual_seed(seed), output_type="pt", height=16, width=16)
    return out.images


def test_lcm_folder_maps_onto_the_spec(lcm_folder):
    import zoo

    model = zoo.load(lcm_folder)
    spec = model.spec
    assert spec.denoiser.kind == "lcm" and spec.denoiser.timestep_scaling == 10.0
    assert spec.denoiser.prediction == ("v" if "v_prediction" in lcm_folder else "eps")
    assert spec.sampling.solver.kind == "lcm" and spec.sampling.steps == 4 and spec.sampling.guidance == 7.5
    assert spec.backbone.time_cond_proj_dim == 16 and spec.guidance_input


@pytest.mark.parametrize("steps,w", [(1, 7.5), (2, 3.0), (4, 7.5)])
def test_sample_equals_latent_consistency_pipeline(lcm_folder, steps, w, one_thread):
    import zoo

    model = zoo.load(lcm_folder)
    ours = model.sample(2, steps=steps, seed=0, prompt=PROMPT, guidance=w)  # the spec's own solver: lcm
    theirs = lcm_pipeline_images(lcm_folder, steps, guidance_scale=w + 1)
    assert ours.shape == theirs.shape == (2, 3, 16, 16)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
    # w is an input: another w gives other images, with one network call per step (no CFG batch)
    other = model.sample(2, steps=steps, seed=0, prompt=PROMPT, guidance=w + 4)
    assert (other - ours).abs().max() > 1e-4


def test_export_writes_lcm_scheduler(lcm_folder, tmp_path, one_thread):
    import json

    from safetensors.torch import load_file

    import zoo

    model = zoo.load(lcm_folder)
    out = tmp_path / "exported"
    model.export_diffusers(str(out))
    sched = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "LCMScheduler" and sched["timestep_scaling"] == 10.0
    assert sched["original_inference_steps"] == 50
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "LatentConsistencyModelPipeline"
    mine, theirs = load_file(f"{out}/unet/diffusion_pytorch_model.safetensors"), load_file(
        f"{lcm_folder}/unet/diffusion_pytorch_model.safetensors")
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert any("cond_proj" in k for k in mine)  # the guidance-scale embedding travels with the UNet
    again = zoo.load(str(out))
    assert again.spec.model_copy(update={"weights": None}) == model.spec.model_copy(update={"weights": None})
    torch.testing.assert_close(lcm_pipeline_images(str(out), 2, 4.0), lcm_pipeline_images(lcm_folder, 2, 4.0),
                               rtol=0, atol=0)


@pytest.mark.slow
def test_lcm_folder_loads_from_s3(lcm_folder, s3_server, one_thread):
    import s3fs

    import zoo

    fs = s3fs.S3FileSystem()
    if not fs.exists("zoo-lcm"):
        fs.mkdir("zoo-lcm")
    url = "s3://zoo-lcm/" + lcm_folder.rstrip("/").split("/")[-2]
    fs.put(lcm_folder, url, recursive=True)
    a = zoo.load(url).sample(1, steps=4, seed=1, prompt=PROMPT)
    b = zoo.load(lcm_folder).sample(1, steps=4, seed=1, prompt=PROMPT)
    assert torch.equal(a, b)
