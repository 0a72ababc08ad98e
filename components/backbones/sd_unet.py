"""The Stable Diffusion UNet (Rombach et al. 2022, section 3.3 and appendix E), wrapping diffusers'
``UNet2DConditionModel`` (the ``[hf]`` extra): ResNet blocks with a time embedding and spatial
transformers whose cross-attention reads the text condition cond["text"] (B, L, D).

SD 1.5: block_out_channels (320, 640, 1280, 1280), 8 heads, cross_attention_dim 768 (860M
parameters). SD 2.1: heads of width 64 (attention_head_dim (5, 10, 20, 20)), linear projections,
cross_attention_dim 1024. ``time_cond_proj_dim`` adds a guidance-scale embedding w -> time
(Luo et al. 2023, LCM, section 4.2): cond["w"] (B,), embedded as diffusers' LCM pipeline does.
Attention runs through torch SDPA (flash / memory-efficient kernels on GPU); "xformers" uses
xformers' memory-efficient attention when it is installed, "eager" the plain softmax(QK^T)V.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from components.hf_folder import LayoutError, check_part, check_config as check_fields, join, local_copy, read_json
from components.spec import Spec

DownBlock = Literal["CrossAttnDownBlock2D", "DownBlock2D"]
UpBlock = Literal["CrossAttnUpBlock2D", "UpBlock2D"]
CONFIG, WEIGHTS = "config.json", "diffusion_pytorch_model.safetensors"


class SdUnetSpec(Spec):
    kind: Literal["sd_unet"] = "sd_unet"
    #: layers LoRA adapts by default (zoo/lora.py): those of LCM-LoRA (Luo et al. 2023; diffusers'
    #: train_lcm_distill_lora_sd_wds.py), attention, feed-forward, ResNet convs, resamplers, time projection
    lora_targets: ClassVar[tuple[str, ...]] = (
        "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2",
        "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj")
    resolution: int = Field(gt=0, description="spatial size of the latent")
    in_channels: int = Field(4, gt=0)
    out_channels: int = Field(4, gt=0)
    block_out_channels: tuple[int, ...] = Field((320, 640, 1280, 1280), min_length=1)
    down_block_types: tuple[DownBlock, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up_block_types: tuple[UpBlock, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    layers_per_block: int = Field(2, ge=1)
    attention_head_dim: int | tuple[int, ...] = Field(8, description="diffusers' name: heads per block (SD 1.x: 8)")
    cross_attention_dim: int = Field(768, gt=0, description="width of the text condition")
    use_linear_projection: bool = False
    norm_num_groups: int = Field(32, ge=1)
    time_cond_proj_dim: int | None = Field(None, gt=0, description="guidance-scale embedding width (LCM)")
    attention: Literal["sdpa", "eager", "xformers"] = "sdpa"

    @property
    def guidance_input(self) -> bool:
        """Trait: the backbone takes the guidance scale w as an input (cond["w"]) instead of CFG."""
        return self.time_cond_proj_dim is not None

    @model_validator(mode="after")
    def _check(self) -> SdUnetSpec:
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(f"down_block_types and up_block_types need {n} entries, one per block_out_channels")
        if isinstance(self.attention_head_dim, tuple) and len(self.attention_head_dim) != n:
            raise ValueError(f"attention_head_dim needs {n} entries, one per block_out_channels")
        if self.resolution % 2 ** (n - 1):
            raise ValueError(f"resolution {self.resolution} is not divisible by 2^{n - 1} for {n} levels")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"block_out_channels {bad} are not divisible by norm_num_groups={self.norm_num_groups}")
        return self

    def diffusers_config(self) -> dict:
        return dict(
            sample_size=self.resolution, in_channels=self.in_channels, out_channels=self.out_channels,
            block_out_channels=self.block_out_channels, down_block_types=self.down_block_types,
            up_block_types=self.up_block_types, layers_per_block=self.layers_per_block,
            attention_head_dim=self.attention_head_dim, cross_attention_dim=self.cross_attention_dim,
            use_linear_projection=self.use_linear_projection, norm_num_groups=self.norm_num_groups,
            time_cond_proj_dim=self.time_cond_proj_dim,
        )

    def build(self) -> SdUnet:
        return SdUnet(self)


def check_config(spec: SdUnetSpec, config: dict, where: str) -> None:
    """A LayoutError naming the file and field where a UNet config disagrees with the spec
    (diffusers' sample_size is a default, not a constraint: any multiple of 2^(n-1) runs)."""
    check_fields(config, spec.diffusers_config(), where, "backbone", ignore=("sample_size",),
                 unsupported=("class_embed_type", "addition_embed_type", "encoder_hid_dim"), kind="sd_unet")


def load_unet(spec: SdUnetSpec, url: str) -> nn.Module:
    from diffusers import UNet2DConditionModel

    files = check_part(url, (CONFIG, WEIGHTS), "unet")
    check_config(spec, read_json(join(url, CONFIG), "unet"), join(url, CONFIG))
    with local_copy(url, [f for f in files if f in (CONFIG, WEIGHTS)]) as local:
        return UNet2DConditionModel.from_pretrained(str(local), use_safetensors=True)


def guidance_embedding(w: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of 1000 w, [sin | cos] halves (diffusers' LCM get_guidance_scale_embedding)."""
    w = w.float() * 1000.0
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=w.device) * -(math.log(10000.0) / (half - 1)))
    args = w[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return nn.functional.pad(emb, (0, dim % 2))


def set_attention(unet: nn.Module, kind: str) -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if kind == "xformers":
        unet.enable_xformers_memory_efficient_attention()  # raises when xformers is absent
    else:
        unet.set_attn_processor(AttnProcessor2_0() if kind == "sdpa" else AttnProcessor())


class SdUnet(nn.Module):
    def __init__(self, spec: SdUnetSpec, unet: nn.Module | None = None):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.spec = spec
        self.unet = unet if unet is not None else UNet2DConditionModel(**spec.diffusers_config())
        set_attention(self.unet, spec.attention)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.unet.enable_gradient_checkpointing()
        else:
            self.unet.disable_gradient_checkpointing()

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        if cond is None or "text" not in cond:
            raise ValueError("sd_unet cross-attends to a text condition and needs cond['text'] (a clip_text conditioner)")
        w_emb = None
        if self.spec.time_cond_proj_dim is not None:
            if "w" not in cond:
                raise ValueError("this sd_unet has time_cond_proj_dim set and needs the guidance scale cond['w']")
            w_emb = guidance_embedding(cond["w"].reshape(-1).expand(x.shape[0]), self.spec.time_cond_proj_dim).to(x.dtype)
        t = c_noise.expand(x.shape[0])
        return self.unet(x, t, encoder_hidden_states=cond["text"].to(x.dtype), timestep_cond=w_emb).sample


__all__ = ["LayoutError", "SdUnet", "SdUnetSpec", "check_config", "load_unet"]
