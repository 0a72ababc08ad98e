"""Stable Diffusion weights in the diffusers layout, both ways.

A diffusers model folder (local path or any fsspec URL) holds ``model_index.json`` and the parts
``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``. Its scheduler config maps
onto our process + parameterization + default grid:

    beta_schedule scaled_linear / linear, beta_start, beta_end, num_train_timesteps
        -> process vp_scaled_linear / vp_linear (T = num_train_timesteps)
    prediction_type epsilon / v_prediction / sample -> denoiser eps / v / x0
    LCMScheduler (+ timestep_scaling, original_inference_steps) -> denoiser lcm (the released boundary
        scalings over that prediction) and solver lcm, 4 steps (LatentConsistencyModelPipeline's defaults)
    timestep_spacing leading (+ steps_offset) / trailing / linspace -> grid leading / trailing / uniform
    clip_sample (+ clip_sample_range) -> sampling.clip_x0

Where a spec is given (a catalog entry), every mapped field and every part's config must agree
with it; a disagreement is an error naming the file and the field. Only safetensors weights are
read. Guidance: our w is diffusers' guidance_scale - 1 (eps~ = (1 + w) eps(c) - w eps(null)).
Our grids end at the clean end t = 0, i.e. diffusers' DDIM with ``set_alpha_to_one=True``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from components.autoencoders.kl_vae import check_config as check_vae, load_vae
from components.backbones.sd_unet import check_config as check_unet, load_unet
from components.conditioners.clip_text import load_text_model, load_tokenizer
from components.hf_folder import LayoutError, check_part, join, listing, put_folder, read_json
from components.denoisers import DenoiserSpec
from components.grids import GridSpec
from components.noise import NoiseSpec
from zoo import lora, lora_file
from zoo.specs import ModelSpec

_NOISE, _DENOISER, _GRID = TypeAdapter(NoiseSpec), TypeAdapter(DenoiserSpec), TypeAdapter(GridSpec)

PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_PRED = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
_SPACING = {"leading": "leading", "trailing": "trailing", "linspace": "uniform"}


def is_diffusers_folder(url: str) -> bool:
    import fsspec

    fs, path = fsspec.core.url_to_fs(join(url, "model_index.json"))
    return fs.exists(path)


def scheduler_spec(cfg: dict, where: str) -> dict[str, Any]:
    """process, denoiser, grid and clip_x0 (as spec dicts) of a diffusers scheduler config."""
    for key, bad in (("rescale_betas_zero_snr", True), ("thresholding", True), ("trained_betas", "any")):
        if cfg.get(key) and (bad == "any" or cfg.get(key) == bad):
            raise LayoutError(f"{where}: {key}={cfg[key]!r} is not supported")
    T = int(cfg.get("num_train_timesteps", 1000))
    schedule = cfg.get("beta_schedule", "linear")
    b0, b1 = float(cfg.get("beta_start", 0.0001)), float(cfg.get("beta_end", 0.02))
    if schedule == "scaled_linear":
        process = {"kind": "vp_scaled_linear", "beta_start": b0, "beta_end": b1, "timesteps": T}
    elif schedule == "linear":
        process = {"kind": "vp_linear", "beta_min": b0 * T, "beta_max": b1 * T, "timesteps": T, "eps_t": 1e-5}
    else:
        raise LayoutError(f"{where}: beta_schedule={schedule!r} is not supported (scaled_linear, linear)")
    pred = cfg.get("prediction_type", "epsilon")
    if pred not in _PRED:
        raise LayoutError(f"{where}: prediction_type={pred!r} is not supported ({', '.join(_PRED)})")
    spacing = cfg.get("timestep_spacing", "leading")
    if spacing not in _SPACING:
        raise LayoutError(f"{where}: timestep_spacing={spacing!r} is not supported ({', '.join(_SPACING)})")
    grid: dict[str, Any] = {"kind": _SPACING[spacing]}
    if spacing == "leading":
        grid["offset"] = int(cfg.get("steps_offset", 0))
    clip = float(cfg.get("clip_sample_range", 1.0)) if cfg.get("clip_sample", False) else None
    denoiser: dict[str, Any] = {"kind": _PRED[pred]}
    solver: dict[str, Any] = {"kind": "ddim", "eta": 0.0}
    if cfg.get("_class_name") == "LCMScheduler":  # a latent consistency model: the released boundary scalings
        denoiser = {"kind": "lcm", "prediction": _PRED[pred], "timestep_scaling": float(cfg.get("timestep_scaling", 10.0))}
        solver = {"kind": "lcm", "original_inference_steps": int(cfg.get("original_inference_steps", 50))}
    return {"process": process, "denoiser": denoiser, "grid": grid, "clip_x0": clip, "solver": solver}


def scheduler_config(spec: ModelSpec) -> dict[str, Any]:
    """A DDIMScheduler config for the spec's process, parameterization and default grid."""
    p, g = spec.process, spec.sampling.grid
    if p.kind == "vp_scaled_linear":
        betas = {"beta_schedule": "scaled_linear", "beta_start": p.beta_start, "beta_end": p.beta_end}
    elif p.kind == "vp_linear" and p.timesteps is not None:
        betas = {"beta_schedule": "linear", "beta_start": p.beta_min / p.timesteps, "beta_end": p.beta_max / p.timesteps}
    else:
        raise LayoutError(f"process {p.kind!r} has no diffusers scheduler (vp_scaled_linear or discrete vp_linear)")
    lcm = spec.denoiser.kind == "lcm"
    pred = {v: k for k, v in _PRED.items()}.get(spec.denoiser.prediction if lcm else spec.denoiser.kind)
    spacing = {v: k for k, v in _SPACING.items()}.get(g.kind)
    if pred is None:
        raise LayoutError(f"denoiser {spec.denoiser.kind!r} has no diffusers prediction_type (eps, v, x0)")
    if spacing is None:
        raise LayoutError(f"grid {g.kind!r} has no diffusers timestep_spacing (leading, trailing, uniform)")
    clip = spec.sampling.clip_x0
    config = {
        "_class_name": "DDIMScheduler", "num_train_timesteps": p.timesteps, **betas, "prediction_type": pred,
        "timestep_spacing": spacing, "steps_offset": getattr(g, "offset", 0), "set_alpha_to_one": True,
        "clip_sample": clip is not None, "clip_sample_range": clip or 1.0, "thresholding": False,
        "rescale_betas_zero_snr": False,
    }
    if lcm:  # LCMScheduler: the released boundary scalings and the skipping schedule of the lcm solver
        solver = spec.sampling.solver
        config.update(_class_name="LCMScheduler", timestep_scaling=spec.denoiser.timestep_scaling,
                      original_inference_steps=getattr(solver, "original_inference_steps", 50))
        if spec.denoiser.sigma_data != 0.5:
            raise LayoutError(f"denoiser.sigma_data={spec.denoiser.sigma_data}: LCMScheduler fixes sigma_data = 0.5")
    return config


def _check_index(url: str) -> dict:
    index = read_json(join(url, "model_index.json"), "model_index.json")
    names = listing(url)
    for part in PARTS:
        if part not in index:
            raise LayoutError(f"{join(url, 'model_index.json')}: no {part!r} entry")
        if not any(n.startswith(part + "/") for n in names):
            raise LayoutError(f"{url}: the part {part}/ named in model_index.json is missing")
    return index


def spec_from_folder(url: str) -> ModelSpec:
    """The ModelSpec a Stable-Diffusion-layout folder describes (configs of every part + scheduler)."""
    _check_index(url)
    unet = read_json(join(url, "unet", "config.json"), "unet")
    vae = read_json(join(url, "vae", "config.json"), "vae")
    text = read_json(join(url, "text_encoder", "config.json"), "text_encoder")
    sched_url = join(url, "scheduler", "scheduler_config.json")
    sched = scheduler_spec(read_json(sched_url, "scheduler"), sched_url)
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    size = int(unet["sample_size"]) * factor
    tok = _tokenizer_max_length(url)
    head = unet.get("attention_head_dim", 8)
    body = {
        "image": {"size": size, "channels": vae["in_channels"]},
        "autoencoder": {
            "kind": "kl_vae", "channels": vae["in_channels"], "latent_channels": vae["latent_channels"],
            "block_out_channels": vae["block_out_channels"], "layers_per_block": vae["layers_per_block"],
            "norm_num_groups": vae["norm_num_groups"], "scaling_factor": vae["scaling_factor"],
        },
        "backbone": {
            "kind": "sd_unet", "resolution": unet["sample_size"], "in_channels": unet["in_channels"],
            "out_channels": unet["out_channels"], "block_out_channels": unet["block_out_channels"],
            "down_block_types": unet["down_block_types"], "up_block_types": unet["up_block_types"],
            "layers_per_block": unet["layers_per_block"], "attention_head_dim": head,
            "cross_attention_dim": unet["cross_attention_dim"], "use_linear_projection": unet.get("use_linear_projection", False),
            "norm_num_groups": unet["norm_num_groups"], "time_cond_proj_dim": unet.get("time_cond_proj_dim"),
        },
        "process": sched["process"],
        "denoiser": sched["denoiser"],
        "conditioner": {
            "kind": "clip_text", "vocab_size": text["vocab_size"], "hidden_size": text["hidden_size"],
            "intermediate_size": text["intermediate_size"], "num_layers": text["num_hidden_layers"],
            "num_heads": text["num_attention_heads"], "max_length": min(tok, text["max_position_embeddings"]),
            "hidden_act": text.get("hidden_act", "quick_gelu"),
        },
        "sampling": {"solver": sched["solver"], "grid": sched["grid"], "clip_x0": sched["clip_x0"],
                     # diffusers' defaults: StableDiffusionPipeline 50 steps at guidance_scale 7.5,
                     # LatentConsistencyModelPipeline 4 steps at 8.5 (w = guidance_scale - 1)
                     **({"steps": 4, "guidance": 7.5} if sched["solver"]["kind"] == "lcm" else {"steps": 50, "guidance": 6.5})},
        "weights": url,
    }
    return ModelSpec.model_validate(body)


def _tokenizer_max_length(url: str) -> int:
    cfg = read_json(join(url, "tokenizer", "tokenizer_config.json"), "tokenizer")
    return int(cfg.get("model_max_length", 77))


def check_agrees(spec: ModelSpec, url: str) -> None:
    """A LayoutError naming the file and field where the folder disagrees with ``spec``."""
    _check_index(url)
    where = join(url, "scheduler", "scheduler_config.json")
    sched = scheduler_spec(read_json(where, "scheduler"), where)
    for field, mine, adapter in (("process", spec.process, _NOISE), ("denoiser", spec.denoiser, _DENOISER),
                                 ("sampling.grid", spec.sampling.grid, _GRID)):
        theirs = sched[field.split(".")[-1]]
        if field == "denoiser" and mine.kind == "lcm" and theirs["kind"] != "lcm":
            # an LCM-LoRA's base: a plain SD folder under an LCM spec (lcm-lora-sd); the adapter makes
            # it a consistency model, so only the prediction the folder's UNet makes must agree
            theirs = {**mine.model_dump(mode="json"), "prediction": theirs["kind"]}
        if adapter.validate_python(theirs) != mine:
            raise LayoutError(f"{where}: the scheduler means {field} = {theirs} but the spec's {field} is "
                              f"{mine.model_dump(mode='json')}")
    if spec.autoencoder.kind != "kl_vae" or spec.backbone.kind != "sd_unet" or spec.conditioner.kind != "clip_text":
        raise LayoutError(f"{url}: a Stable Diffusion folder needs autoencoder kl_vae, backbone sd_unet and conditioner "
                          f"clip_text; the spec has {spec.autoencoder.kind}, {spec.backbone.kind}, {spec.conditioner.kind}")
    check_vae(spec.autoencoder, read_json(join(url, "vae", "config.json"), "vae"), join(url, "vae", "config.json"))
    check_unet(spec.backbone, read_json(join(url, "unet", "config.json"), "unet"), join(url, "unet", "config.json"))


def read_parts(spec: ModelSpec, url: str) -> dict[str, Any]:
    """The torch parts of the folder (diffusers / transformers objects), each checked against the spec."""
    check_agrees(spec, url)
    return {
        "unet": load_unet(spec.backbone, join(url, "unet")),
        "vae": load_vae(spec.autoencoder, join(url, "vae")),
        "text_encoder": load_text_model(spec.conditioner, join(url, "text_encoder")),
        "tokenizer": load_tokenizer(spec.conditioner, join(url, "tokenizer")),
    }


def export(model: Any, url: str) -> None:
    """Write ``model`` (kl_vae + sd_unet + clip_text) as a folder diffusers' StableDiffusionPipeline loads;
    an unmerged LoRA adapter as ``pytorch_lora_weights.safetensors`` in it (zoo/lora_file.py)."""
    import diffusers
    from diffusers import DDIMScheduler, LCMScheduler

    spec = model.spec
    if spec.autoencoder.kind != "kl_vae" or spec.backbone.kind != "sd_unet" or spec.conditioner.kind != "clip_text":
        raise LayoutError(f"export_diffusers needs autoencoder kl_vae, backbone sd_unet and conditioner clip_text; "
                          f"{model.name} has {spec.autoencoder.kind}, {spec.backbone.kind}, {spec.conditioner.kind}")
    if model.conditioner.tokenizer is None:
        raise LayoutError(f"export_diffusers: {model.name}'s conditioner has no tokenizer to write")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if model.adapter is None:
            model.denoiser.backbone.unet.save_pretrained(root / "unet", safe_serialization=True)
        else:  # the base UNet, and the unmerged adapter beside it where load_lora_weights(folder) finds it
            with lora.without_adapter(model) as unet:
                unet.save_pretrained(root / "unet", safe_serialization=True)
            (root / lora_file.WEIGHT_NAME).write_bytes(lora_file.encode(model))
        model.autoencoder.vae.save_pretrained(root / "vae", safe_serialization=True)
        model.conditioner.text_model.save_pretrained(root / "text_encoder", safe_serialization=True)
        model.conditioner.tokenizer.save_pretrained(root / "tokenizer")
        config = scheduler_config(spec)
        lcm = config["_class_name"] == "LCMScheduler"
        (LCMScheduler if lcm else DDIMScheduler).from_config(config).save_pretrained(root / "scheduler")
        index = {
            "_class_name": "LatentConsistencyModelPipeline" if lcm else "StableDiffusionPipeline",
            "_diffusers_version": diffusers.__version__,
            "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", config["_class_name"]], "safety_checker": [None, None],
            "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
        }
        (root / "model_index.json").write_text(json.dumps(index, indent=2))
        put_folder(root, url)


__all__ = ["LayoutError", "check_agrees", "check_part", "export", "is_diffusers_folder", "read_parts",
           "scheduler_config", "scheduler_spec", "spec_from_folder"]
