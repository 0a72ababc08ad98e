"""The time-conditional UNet of DDPM (Ho et al. 2020, appendix B), as in their TF code:

ResNet blocks (GroupNorm, SiLU, 3x3 convs, time embedding added after the first conv, dropout),
self-attention at chosen resolutions, num_res_blocks blocks per level, a skip from every down
block into the up path, a sinusoidal time embedding (Vaswani et al.) through a 2-layer MLP, and an
optional class embedding (num_classes + 1 rows, the last one the null label of classifier-free
guidance). ``time_cond_proj_dim`` adds the guidance-scale embedding of an LCM student (Luo et al.
2023, section 4.2): cond["w"] (B,) embedded as diffusers' get_guidance_scale_embedding and added
to the time embedding through a zero-initialized projection, so a student built from a teacher
starts as the teacher. CIFAR-10 settings (channels=128, mult 1,2,2,2, 2 blocks, attention at 16x16,
dropout 0.1) give the paper's 35.7M parameters.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from components.backbones.sd_unet import guidance_embedding
from components.spec import Spec


class UNetSpec(Spec):
    kind: Literal["unet"] = "unet"
    #: layers LoRA adapts by default (zoo/lora.py): ResNet convs and time projections, attention, resamplers
    lora_targets: ClassVar[tuple[str, ...]] = ("conv1", "conv2", "temb", "qkv", "proj", "conv")
    resolution: int = Field(gt=0, description="spatial size of the input (latent) image")
    in_channels: int = Field(gt=0)
    out_channels: int = Field(gt=0)
    channels: int = Field(128, gt=0, description="base channel count")
    channel_mult: tuple[int, ...] = Field((1, 2, 2, 2), min_length=1)
    num_res_blocks: int = Field(2, ge=1)
    attention_resolutions: tuple[int, ...] = (16,)
    num_heads: int = Field(1, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    groups: int = Field(32, ge=1, description="GroupNorm groups")
    num_classes: int | None = Field(None, ge=1, description="class embedding (+1 null row)")
    time_cond_proj_dim: int | None = Field(None, gt=0, description="guidance-scale embedding width (LCM)")

    @property
    def guidance_input(self) -> bool:
        """Trait: the backbone takes the guidance scale w as an input (cond["w"]) instead of CFG."""
        return self.time_cond_proj_dim is not None

    @model_validator(mode="after")
    def _check(self) -> UNetSpec:
        levels = len(self.channel_mult)
        if self.resolution % 2 ** (levels - 1):
            raise ValueError(
                f"resolution {self.resolution} is not divisible by 2^{levels - 1} "
                f"for {levels} levels of channel_mult {self.channel_mult}"
            )
        sizes = [self.resolution // 2**i for i in range(levels)]
        bad = [r for r in self.attention_resolutions if r not in sizes]
        if bad:
            raise ValueError(f"attention_resolutions {bad} are not among the UNet's resolutions {sizes}")
        for m in self.channel_mult:
            if (self.channels * m) % self.groups:
                raise ValueError(f"channels*mult = {self.channels * m} is not divisible by groups={self.groups}")
        return self

    def build(self) -> UNet:
        return UNet(self)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) times, [cos | sin] halves."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Self-attention over pixels; SDPA picks flash / memory-efficient kernels on GPU."""

    def __init__(self, ch: int, heads: int, groups: int):
        super().__init__()
        if ch % heads:
            raise ValueError(f"attention channels {ch} not divisible by num_heads={heads}")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        o = F.scaled_dot_product_attention(q, k, v)  # (b, heads, hw, c/heads)
        return x + self.proj(o.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    def __init__(self, spec: UNetSpec):
        super().__init__()
        self.spec = spec
        ch, g, drop = spec.channels, spec.groups, spec.dropout
        temb = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.class_emb = nn.Embedding(spec.num_classes + 1, temb) if spec.num_classes else None
        self.conv_in = nn.Conv2d(spec.in_channels, ch, 3, padding=1)
        self.grad_checkpointing = False

        self.down = nn.ModuleList()
        skips, cur, res = [ch], ch, spec.resolution
        for level, mult in enumerate(spec.channel_mult):
            for _ in range(spec.num_res_blocks):
                block = nn.ModuleList([ResBlock(cur, ch * mult, temb, drop, g)])
                cur = ch * mult
                if res in spec.attention_resolutions:
                    block.append(AttnBlock(cur, spec.num_heads, g))
                self.down.append(block)
                skips.append(cur)
            if level != len(spec.channel_mult) - 1:
                self.down.append(nn.ModuleList([Downsample(cur)]))
                skips.append(cur)
                res //= 2

        self.mid = nn.ModuleList([ResBlock(cur, cur, temb, drop, g), AttnBlock(cur, spec.num_heads, g), ResBlock(cur, cur, temb, drop, g)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(spec.channel_mult))):
            for i in range(spec.num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(cur + skips.pop(), ch * mult, temb, drop, g)])
                cur = ch * mult
                if res in spec.attention_resolutions:
                    block.append(AttnBlock(cur, spec.num_heads, g))
                if level and i == spec.num_res_blocks:
                    block.append(Upsample(cur))
                    res *= 2
                self.up.append(block)

        self.norm_out = nn.GroupNorm(g, cur)
        self.conv_out = _zero(nn.Conv2d(cur, spec.out_channels, 3, padding=1))
        self.w_proj = _zero(nn.Linear(spec.time_cond_proj_dim, temb, bias=False)) if spec.time_cond_proj_dim else None

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward (timm's method name)."""
        self.grad_checkpointing = enable

    def _run(self, block: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
        for layer in block:
            if self.grad_checkpointing and self.training:
                h = checkpoint(layer, h, emb, use_reentrant=False)
            else:
                h = layer(h, emb)
        return h

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        emb = self.time_mlp(timestep_embedding(c_noise.expand(x.shape[0]), self.spec.channels))
        if self.class_emb is not None:
            if cond is None or "label" not in cond:
                raise ValueError("this UNet is class-conditional (num_classes set) and needs cond['label']")
            emb = emb + self.class_emb(cond["label"])
        if self.w_proj is not None:
            if cond is None or "w" not in cond:
                raise ValueError("this UNet has time_cond_proj_dim set and needs the guidance scale cond['w']")
            w = guidance_embedding(cond["w"].reshape(-1).expand(x.shape[0]), self.spec.time_cond_proj_dim)
            emb = emb + self.w_proj(w.to(emb.dtype))
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            h = self._run(block, h, emb)
            hs.append(h)
        h = self._run(self.mid, h, emb)
        for block in self.up:
            h = self._run(block, torch.cat([h, hs.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))
