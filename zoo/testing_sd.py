"""A tiny Stable-Diffusion-layout folder written with diffusers' and transformers' own classes
(random weights, a CLIP tokenizer from a vocab.json / merges.txt written here), for the tests
and benches that compare the zoo with diffusers' StableDiffusionPipeline. Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from components.conditioners.clip_tokenizer import vocab_and_merges

WORDS = ["a", "handwritten", "digit", "seven", "the", "number", "three"]


def write_sd_folder(root: Path, prediction: str = "epsilon", channels: tuple[int, ...] = (32, 64), image_size: int = 16,
                    text_width: int = 32, max_length: int = 12, seed: int = 0, lcm_w_dim: int | None = None) -> str:
    """Write ``root/sd`` (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/). With
    ``lcm_w_dim`` a latent consistency model instead: a UNet with time_cond_proj_dim = lcm_w_dim
    (the guidance-scale embedding), an LCMScheduler and LatentConsistencyModelPipeline's index."""
    from diffusers import (AutoencoderKL, DDIMScheduler, LatentConsistencyModelPipeline, LCMScheduler,
                           StableDiffusionPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = Path(root)
    tok_dir = root / "tok-src"
    tok_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocab_and_merges(WORDS)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=max_length)
    torch.manual_seed(seed)
    n = len(channels)
    unet = UNet2DConditionModel(
        sample_size=image_size // 2, in_channels=4, out_channels=4, block_out_channels=channels, layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=text_width, attention_head_dim=8, norm_num_groups=32,
        use_linear_projection=prediction == "v_prediction", time_cond_proj_dim=lcm_w_dim)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=32,
        sample_size=image_size)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=text_width, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=max_length, bos_token_id=len(vocab) - 2, eos_token_id=len(vocab) - 1))
    scheduler = (LCMScheduler if lcm_w_dim else DDIMScheduler)(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type=prediction, clip_sample=False, set_alpha_to_one=True, steps_offset=1, timestep_spacing="leading")
    pipe = (LatentConsistencyModelPipeline if lcm_w_dim else StableDiffusionPipeline)(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    out = root / "sd"
    pipe.save_pretrained(out, safe_serialization=True)
    return str(out)
