"""LoRA through peft (zoo/lora.py, zoo/lora_file.py): only the adapters train, the base stays bit
for bit, a LoRA run resumes bit-identically; merged and unmerged adapters agree; adapter files
round-trip with diffusers' own loader and writer on a tiny SD folder (zoo/testing_sd.py), on the
base they were made for and on another base; pickles are refused."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")
pytest.importorskip("diffusers")

import zoo  # noqa: E402
from components.backbones import SdUnetSpec  # noqa: E402
from jobs import loop  # noqa: E402
from tests.conftest import assert_bit_identical, tiny_overrides  # noqa: E402
from zoo import checkpoint as ckpt  # noqa: E402
from zoo import lora_file  # noqa: E402
from zoo.errors import CheckpointError, SpecError  # noqa: E402
from zoo.lora import LoraSpec, add_adapter, is_adapter_key  # noqa: E402
from zoo.testing_sd import write_sd_folder  # noqa: E402

PROMPT = "a handwritten digit seven"
BACKBONE = {k: v for k, v in tiny_overrides().items() if k.startswith("backbone.")}


def randomize_b(model_or_module, seed: int, scale: float = 0.05) -> None:
    """B starts at zero (the adapter is the identity); give it values so the adapter matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model_or_module.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture(scope="module")
def digits_base(tmp_path_factory) -> str:
    """Base weights of the tiny ddpm-digits (random, non-zero everywhere) as a .safetensors file."""
    from safetensors.torch import save_file

    model = zoo.build("ddpm-digits", **BACKBONE)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    path = str(tmp_path_factory.mktemp("base") / "base.safetensors")
    save_file({k: v.contiguous() for k, v in model.denoiser.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def sd_folders(tmp_path_factory) -> tuple[str, str]:
    """Two tiny SD folders of the same architecture with different weights (seed 0 and 1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return (write_sd_folder(tmp_path_factory.mktemp("sd0"), seed=0),
                write_sd_folder(tmp_path_factory.mktemp("sd1"), seed=1))
    finally:
        torch.set_num_threads(n)


def pipeline(folder: str):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_images(pipe, w: float = 3.0) -> torch.Tensor:
    return pipe(PROMPT, num_inference_steps=4, guidance_scale=w + 1, num_images_per_prompt=2, output_type="pt",
                generator=torch.Generator().manual_seed(0), height=16, width=16).images


def our_images(model, w: float = 3.0) -> torch.Tensor:
    return model.sample(2, steps=4, solver="ddim", seed=0, prompt=PROMPT, guidance=w)


# -- training ----------------------------------------------------------------------------------


LORA_RUN = dict(progress=False, lora={"rank": 4, "alpha": 8, "dropout": 0.1})
LORA_OVERRIDES = {"optimizer.weight_decay": 0.1, "lr": 1e-2}


@pytest.fixture(scope="module")
def lora_run(digits_base, tmp_path_factory):
    """A 6-step LoRA run of the tiny ddpm-digits, and the model its worker trained (captured
    where the loop builds it: workers=0 runs the loop in this process)."""
    built = []
    real = loop.base_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "base_model", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
        run = zoo.train("ddpm-digits", output=str(tmp_path_factory.mktemp("lora-runs")), weights=digits_base,
                        **LORA_RUN, **tiny_overrides(steps=6, **LORA_OVERRIDES))
    (model,) = built
    return run, model


@pytest.mark.slow
def test_lora_training_changes_only_the_adapters(lora_run, digits_base):
    """The model the worker trained keeps every base weight bit for bit (AdamW weight decay on);
    the adapters move; checkpoints hold the adapters alone, and the diffusers-layout file beside."""
    from safetensors.torch import load_file

    run, model = lora_run
    base = load_file(digits_base)
    state = model.denoiser.state_dict()
    plain = {k.replace(".base_layer", ""): v for k, v in state.items() if not is_adapter_key(k)}
    assert plain.keys() == base.keys()
    assert all(torch.equal(plain[k], base[k]) for k in base), "a base weight changed during LoRA training"
    c = ckpt.Checkpoint(run.checkpoint)
    trained = c.tensors("model.safetensors")
    assert trained and set(trained) == {k for k in state if is_adapter_key(k)}
    assert any(trained[k].abs().max() > 0 for k in trained if "lora_B" in k), "the adapters did not train"
    assert len(c.optimizer_state()["state"]) == len(trained), "the optimizer holds more than the adapters"
    assert ckpt.LORA in c.files
    # the adapter file beside the checkpoint is its EMA adapter in the file layout
    tensors, meta = lora_file.read(f"{run.checkpoint}/{ckpt.LORA}")
    ema = c.tensors("ema.safetensors")
    assert len(tensors) == len(ema) and meta["backbone.r"] == 4 and meta["backbone.lora_alpha"] == 8
    for key, value in ema.items():
        assert torch.equal(tensors[key.replace(".default.", ".")], value)
    # zoo.load of the LoRA run: the base from spec.weights + its EMA adapter, unmerged or merged
    unmerged, merged = zoo.load(run.checkpoint), zoo.load(run.checkpoint, merge=True)
    assert unmerged.adapter is not None and merged.adapter is None
    a, b = unmerged.sample(4, steps=5, seed=0), merged.sample(4, steps=5, seed=0)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    plain_base = zoo.load("ddpm-digits", weights=digits_base, **BACKBONE).sample(4, steps=5, seed=0)
    assert (a - plain_base).abs().max() > 1e-4, "the trained adapter changes nothing"


@pytest.mark.slow
def test_lora_run_resumes_bit_identically(lora_run, digits_base, tmp_path):
    straight, _ = lora_run
    first = zoo.train("ddpm-digits", output=str(tmp_path), weights=digits_base, **LORA_RUN,
                      **tiny_overrides(steps=4, **LORA_OVERRIDES))
    resumed = zoo.train("ddpm-digits", output=str(tmp_path), resume=first.dir, weights=digits_base, **LORA_RUN,
                        **tiny_overrides(steps=6, **LORA_OVERRIDES))
    assert resumed.dir == first.dir
    assert_bit_identical(straight.checkpoint, resumed.checkpoint, ("model.safetensors", "ema.safetensors"))
    a, b = ckpt.Checkpoint(straight.checkpoint), ckpt.Checkpoint(resumed.checkpoint)
    (x, x_meta), (y, y_meta) = (lora_file.read(f"{c.url}/{ckpt.LORA}") for c in (a, b))
    assert x_meta == y_meta and x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_lora_needs_base_weights_and_a_target():
    with pytest.raises(SpecError, match="lora= trains adapters on a base model: pass weights="):
        zoo.train("ddpm-digits", progress=False, lora={"rank": 4}, **tiny_overrides())
    with pytest.raises(SpecError, match=r"train.lora.rank"):
        zoo.get("ddpm-digits", lora={"rank": 0})
    model = zoo.build("ddpm-digits", **BACKBONE)
    with pytest.raises(ValueError, match=r"lora.target_modules \['nothing_here'\] on .*'s backbone: .*not found"):
        add_adapter(model, LoraSpec(rank=2, target_modules=("nothing_here",)), seed=0)


# -- merged vs unmerged, files, our backbones --------------------------------------------------------


def randomize(module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def network_output(model, prompt: str | None) -> torch.Tensor:
    """The backbone's output on fixed inputs (sampled images of a random network saturate)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *model.latent_shape, generator=g)
    cond = model.conditioner.request(2, prompt=prompt) if prompt else None
    with torch.no_grad():
        return model.denoiser.backbone(x, torch.tensor([100.0, 700.0]), cond)


@pytest.mark.parametrize("name,overrides,prompt", [("ddpm-digits", BACKBONE, None),
                                                   ("dit-tiny", {"backbone.depth": 2}, "a handwritten digit seven")])
def test_merged_and_unmerged_adapters_agree_and_round_trip(name, overrides, prompt, tmp_path, one_thread):
    """peft's generic injection on our UNet and DiT: the file written and read back gives the
    network of the model that wrote it, unmerged exactly, merged to float tolerance."""
    from safetensors.torch import save_file

    from zoo.lora import without_adapter

    model = zoo.build(name, **overrides)
    randomize(model.denoiser, seed=1)
    add_adapter(model, LoraSpec(rank=4, alpha=2), seed=0)
    randomize_b(model.denoiser, seed=2, scale=1.0)
    assert all(any(f".{t}.lora_A." in k or k.startswith(f"backbone.{t}.lora_A") for k in model.trainable_state_dict())
               for t in model.spec.backbone.lora_targets), "a default target adapts nothing"
    url = lora_file.write(model, str(tmp_path / "adapter"))
    weights = str(tmp_path / "base.safetensors")
    with without_adapter(model):
        save_file({k: v.contiguous() for k, v in model.denoiser.state_dict().items()}, weights)
    ref = network_output(model, prompt)
    unmerged = zoo.load(name, weights=weights, lora=url, **overrides)
    merged = zoo.load(name, weights=weights, lora=str(tmp_path / "adapter"), merge=True, **overrides)
    assert unmerged.adapter is not None and merged.adapter is None
    assert not any(is_adapter_key(k) for k in merged.denoiser.state_dict())
    torch.testing.assert_close(network_output(unmerged, prompt), ref, rtol=0, atol=0)
    torch.testing.assert_close(network_output(merged, prompt), ref, rtol=0, atol=1e-5)
    base = network_output(zoo.load(name, weights=weights, **overrides), prompt)
    assert (base - ref).abs().max() > 0.05 * ref.abs().max(), "the adapter changes nothing: the test could not fail"


def test_pickles_and_strangers_are_refused(tmp_path, digits_base):
    (tmp_path / "adapter.bin").write_bytes(b"not opened")
    with pytest.raises(CheckpointError, match=r"adapter.bin: pickle files are never loaded"):
        zoo.load("ddpm-digits", weights=digits_base, lora=str(tmp_path / "adapter.bin"), **BACKBONE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty: the folder holds no pytorch_lora_weights.safetensors"):
        zoo.load("ddpm-digits", weights=digits_base, lora=str(tmp_path / "empty"), **BACKBONE)
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(CheckpointError, match=r"bad.safetensors: not a valid safetensors file"):
        zoo.load("ddpm-digits", weights=digits_base, lora=str(tmp_path / "bad.safetensors"), **BACKBONE)
    # an adapter made for another architecture does not fit, and says so
    other = zoo.build("ddpm-digits", **{**BACKBONE, "backbone.channels": 16})
    add_adapter(other, LoraSpec(rank=2), seed=0)
    url = lora_file.write(other, str(tmp_path / "other"))
    with pytest.raises(CheckpointError, match=r"other/pytorch_lora_weights.safetensors: does not fit"):
        zoo.load("ddpm-digits", weights=digits_base, lora=url, **BACKBONE)


# -- Stable Diffusion: diffusers' layout, both ways ---------------------------------------------------


@pytest.mark.heavy
def test_zoo_adapter_loads_in_diffusers_with_the_same_images(sd_folders, tmp_path, one_thread):
    """An adapter zoo writes (rank 4, alpha 8: the metadata carries the scale) gives the same images
    through pipe.load_lora_weights as through zoo.load(lora=), on its own base and on another
    base of the same architecture; merged and unmerged agree; export_diffusers writes it beside
    the base and diffusers reads both from the folder."""
    first, second = sd_folders
    model = zoo.load(first)
    add_adapter(model, LoraSpec(rank=4, alpha=8), seed=0)
    randomize_b(model.denoiser, seed=3)
    folder = str(tmp_path / "adapter")
    lora_file.write(model, folder)
    tensors, meta = lora_file.read(folder)
    assert all(k.startswith("unet.") and (".lora_A.weight" in k or ".lora_B.weight" in k) for k in tensors)
    assert meta["unet.r"] == 4 and meta["unet.lora_alpha"] == 8
    assert set(meta["unet.target_modules"]) == set(SdUnetSpec.lora_targets)
    ours = our_images(model)
    for base in (first, second):
        pipe = pipeline(base)
        plain = diffusers_images(pipe)
        pipe.load_lora_weights(folder)
        theirs = diffusers_images(pipe)
        assert (theirs - plain).abs().max() > 1e-2, "the adapter changes nothing: the test could not fail"
        unmerged = zoo.load(base, lora=folder)
        merged = zoo.load(base, lora=folder, merge=True)
        mine = our_images(unmerged)
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-4)
        torch.testing.assert_close(our_images(merged), mine, rtol=0, atol=1e-4)
        if base == first:
            torch.testing.assert_close(mine, ours, rtol=0, atol=0)
        else:
            assert (mine - ours).abs().max() > 1e-3, "another base gives other images"
    # export_diffusers: the base UNet as it was, the adapter beside it
    out = str(tmp_path / "exported")
    unmerged = zoo.load(first, lora=folder)
    unmerged.export_diffusers(out)
    pipe = pipeline(out)
    torch.testing.assert_close(diffusers_images(pipe), diffusers_images(pipeline(first)), rtol=0, atol=0)
    pipe.load_lora_weights(out)
    torch.testing.assert_close(diffusers_images(pipe), ours, rtol=0, atol=1e-4)
    torch.testing.assert_close(our_images(zoo.load(out, lora=out)), ours, rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["peft", "diffusers_lcm_script"])
def test_diffusers_written_adapter_loads_in_ours(sd_folders, layout, tmp_path, one_thread):
    """Adapters written by diffusers' own save path (StableDiffusionPipeline.save_lora_weights of
    peft's state dict, with the LoraConfig as metadata): our loader gives the images of the
    in-memory peft model diffusers trained. "diffusers_lcm_script" is the LCM-LoRA script's
    convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)): to_q/k/v/out.0 keys in the
    older lora.down/up names, the others in peft's."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    first, _ = sd_folders
    pipe = pipeline(first)
    config = LoraConfig(r=4, lora_alpha=2, init_lora_weights="gaussian", target_modules=list(SdUnetSpec.lora_targets))
    torch.manual_seed(0)
    pipe.unet.add_adapter(config)
    randomize_b(pipe.unet, seed=4)
    state = get_peft_model_state_dict(pipe.unet)
    if layout == "diffusers_lcm_script":
        state = convert_state_dict_to_diffusers(state)
        assert any(".to_q.lora.down." in k for k in state) and any(".proj_in.lora_A." in k for k in state)
    StableDiffusionPipeline.save_lora_weights(str(tmp_path), unet_lora_layers=state,
                                              unet_lora_adapter_metadata=config.to_dict())
    theirs = diffusers_images(pipe)  # the model diffusers / peft hold in memory
    mine = our_images(zoo.load(first, lora=str(tmp_path)))
    torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-4)
    if layout == "peft":  # diffusers' own loader reads the peft layout back to the same images
        again = pipeline(first)
        again.load_lora_weights(str(tmp_path))
        torch.testing.assert_close(diffusers_images(again), theirs, rtol=0, atol=1e-4)


# -- LCM-LoRA ------------------------------------------------------------------------------------------


@pytest.mark.heavy
@pytest.mark.parametrize("steps", [1, 4])
def test_lcm_lora_equals_diffusers_lcm_scheduler(sd_folders, steps, tmp_path, one_thread):
    """An LCM-LoRA (the layers LCM-LoRA adapts, rank 8, written by peft + diffusers' save path as
    the LCM-LoRA script does) on a plain SD base: diffusers' load_lora_weights + LCMScheduler and
    our loader + the lcm denoiser/solver (the folder's LCMScheduler maps onto them) give the same
    images, unmerged and merged."""
    import json
    import shutil

    from diffusers import LCMScheduler, StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    first, _ = sd_folders
    base = tmp_path / "sd-lcm-scheduler"  # the SD base with the scheduler LCM-LoRA samples with
    shutil.copytree(first, base)
    LCMScheduler.from_config(json.loads((base / "scheduler" / "scheduler_config.json").read_text())).save_pretrained(
        base / "scheduler")
    pipe = pipeline(first)
    config = LoraConfig(r=8, lora_alpha=8, target_modules=list(SdUnetSpec.lora_targets))
    pipe.unet.add_adapter(config)
    randomize_b(pipe.unet, seed=6)
    StableDiffusionPipeline.save_lora_weights(str(tmp_path / "lcm-lora"), unet_lora_layers=get_peft_model_state_dict(
        pipe.unet), unet_lora_adapter_metadata=config.to_dict())

    theirs_pipe = pipeline(first)
    theirs_pipe.scheduler = LCMScheduler.from_config(theirs_pipe.scheduler.config)
    theirs_pipe.load_lora_weights(str(tmp_path / "lcm-lora"))
    theirs = theirs_pipe(PROMPT, num_inference_steps=steps, guidance_scale=1.0, num_images_per_prompt=2,
                         output_type="pt", generator=torch.Generator().manual_seed(0), height=16, width=16).images
    for merge in (False, True):
        model = zoo.load(str(base), lora=str(tmp_path / "lcm-lora"), merge=merge)
        assert model.spec.denoiser.kind == "lcm" and model.spec.sampling.solver.kind == "lcm"
        mine = model.sample(2, steps=steps, seed=0, prompt=PROMPT, guidance=0.0)
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-4)
    plain = zoo.load(str(base)).sample(2, steps=steps, seed=0, prompt=PROMPT, guidance=0.0)
    assert (plain - theirs).abs().max() > 1e-2, "the LCM-LoRA changes nothing: the test could not fail"
