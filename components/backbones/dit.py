"""DiT, the Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers"), built from timm's PatchEmbed / Attention / Mlp:

  patchify the (latent) image into (H/p)(W/p) tokens of width D + fixed 2D sin-cos positions;
  c = t_emb(c_noise) + y_emb(label)            (section 3.2, "adaLN" conditioning)
  each block:  shift, scale, gate (x2) = Linear(SiLU(c))
               x += gate_msa * Attn(LN(x) (1 + scale_msa) + shift_msa)
               x += gate_mlp * MLP (LN(x) (1 + scale_mlp) + shift_mlp)
  final: LN(x) (1 + scale) + shift -> Linear -> unpatchify.
adaLN-Zero: every modulation Linear and the final Linear start at zero, so each block starts as
the identity and the network's output as 0. Class-conditional (num_classes + 1 rows, the last
the null label of classifier-free guidance) or text-conditional: the text condition's last token
(CLIP's attention is causal, so it has read the whole prompt; the padding is <|endoftext|>),
projected to D, is added to c (the pooled-text variant of adaLN conditioning); with
``cross_attention`` every block also attends to all text tokens between its self-attention and its
MLP, x += CrossAttn(LN(x), text) (PixArt-alpha, Chen et al. 2023, section 2.3), its output
projection zero-initialized so the block still starts as the identity. The pooled token alone is
a weak signal for a small random text tower (the phrasing moves it more than the prompted word
does); the per-token attention reads the word itself.
The learned-variance half of DiT's output (learn_sigma) is not included: out_channels = C.
DiT-XL/2: D = 1152, depth 28, 16 heads, p = 2.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from components.spec import Spec


class DitSpec(Spec):
    kind: Literal["dit"] = "dit"
    #: layers LoRA adapts by default (zoo/lora.py): attention, MLP and adaLN modulation of every block
    lora_targets: ClassVar[tuple[str, ...]] = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1")
    resolution: int = Field(gt=0, description="spatial size of the (latent) input")
    in_channels: int = Field(gt=0)
    out_channels: int = Field(gt=0)
    patch_size: int = Field(2, gt=0)
    hidden_size: int = Field(1152, gt=0)
    depth: int = Field(28, ge=1)
    num_heads: int = Field(16, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    num_classes: int | None = Field(None, ge=1, description="class embedding (+1 null row)")
    cross_attention_dim: int | None = Field(None, gt=0, description="width of a text condition (pooled into c)")
    cross_attention: bool = Field(False, description="every block also cross-attends to the text tokens (PixArt-alpha)")

    @model_validator(mode="after")
    def _check(self) -> DitSpec:
        if self.resolution % self.patch_size:
            raise ValueError(f"resolution {self.resolution} is not divisible by patch_size={self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by 4 (2D sin-cos positions)")
        if self.num_classes is not None and self.cross_attention_dim is not None:
            raise ValueError("a DiT is class- or text-conditioned: set num_classes or cross_attention_dim, not both")
        if self.cross_attention and self.cross_attention_dim is None:
            raise ValueError("cross_attention needs a text condition: set cross_attention_dim")
        return self

    def build(self) -> Dit:
        return Dit(self)


def timestep_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """DiT's frequency embedding of (possibly fractional) times, [cos | sin] halves."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2D sin-cos position embedding (MAE / DiT): half the width for each axis."""
    def one(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    emb = np.concatenate([one(dim // 2, gw), one(dim // 2, gh)], axis=1)
    return torch.from_numpy(emb).float()[None]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class CrossAttention(nn.Module):
    """softmax(Q K^T / sqrt(d_h)) V with Q from LN(x) and K, V from the text tokens, through SDPA."""

    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, n, d = x.shape
        h = self.heads
        q = self.q(self.norm(x)).reshape(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(context.to(x.dtype)).reshape(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DitBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, context_dim: int | None = None):
        # timm when a DiT is built, not when the catalog's specs load: importing timm pulls in
        # torchvision and torch._dynamo (about 5 s of CPU in every Ray worker and CLI process)
        from timm.layers import Mlp
        from timm.models.vision_transformer import Attention

        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads=heads, qkv_bias=True)
        self.cross = CrossAttention(dim, context_dim, heads) if context_dim else None
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, context: Tensor | None = None) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa[:, None] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        if self.cross is not None:
            x = x + self.cross(x, context)
        return x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, patch: int, out: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch * patch * out)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class Dit(nn.Module):
    def __init__(self, spec: DitSpec):
        from timm.layers import PatchEmbed  # see DitBlock

        super().__init__()
        self.spec = spec
        d, p = spec.hidden_size, spec.patch_size
        self.x_embedder = PatchEmbed(spec.resolution, p, spec.in_channels, d, bias=True)
        self.t_embedder = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.y_embedder = nn.Embedding(spec.num_classes + 1, d) if spec.num_classes else None
        self.text_proj = nn.Linear(spec.cross_attention_dim, d) if spec.cross_attention_dim else None
        self.register_buffer("pos_embed", sincos_2d(d, spec.resolution // p), persistent=False)
        context = spec.cross_attention_dim if spec.cross_attention else None
        self.blocks = nn.ModuleList(DitBlock(d, spec.num_heads, spec.mlp_ratio, context) for _ in range(spec.depth))
        self.final_layer = FinalLayer(d, p, spec.out_channels)
        self.grad_checkpointing = False
        self._init()

    def _init(self) -> None:
        """DiT's initialization (their models.py): Xavier linears, normal(0.02) embeddings, adaLN-Zero."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.weight, std=0.02)
        for lin in (self.t_embedder[0], self.t_embedder[2]):
            nn.init.normal_(lin.weight, std=0.02)
        for block in [*self.blocks, self.final_layer]:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
            if getattr(block, "cross", None) is not None:  # cross-attention starts as the identity too
                nn.init.zeros_(block.cross.proj.weight)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def condition(self, c_noise: Tensor, cond: dict[str, Tensor] | None, n: int) -> Tensor:
        c = self.t_embedder(timestep_embedding(c_noise.expand(n)))
        if self.y_embedder is not None:
            if cond is None or "label" not in cond:
                raise ValueError("this DiT is class-conditional (num_classes set) and needs cond['label']")
            c = c + self.y_embedder(cond["label"])
        if self.text_proj is not None:
            if cond is None or "text" not in cond:
                raise ValueError("this DiT is text-conditional (cross_attention_dim set) and needs cond['text']")
            c = c + self.text_proj(cond["text"][:, -1].to(c.dtype))  # the last token: causal CLIP has read the whole prompt there
        return c

    def unpatchify(self, x: Tensor) -> Tensor:
        p, c = self.spec.patch_size, self.spec.out_channels
        h = w = self.spec.resolution // p
        x = x.reshape(x.shape[0], h, w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        c = self.condition(c_noise, cond, x.shape[0])
        h = self.x_embedder(x) + self.pos_embed.to(x.dtype)
        context = cond["text"] if self.spec.cross_attention else None
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                h = checkpoint(block, h, c, context, use_reentrant=False)
            else:
                h = block(h, c, context)
        return self.unpatchify(self.final_layer(h, c))
