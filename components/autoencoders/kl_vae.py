"""The KL-regularized autoencoder of latent diffusion (Rombach et al. 2022, section 3 and
appendix G), wrapping diffusers' ``AutoencoderKL`` (the ``[hf]`` extra): downsampling
f = 2^(levels - 1) (f = 8 for Stable Diffusion's four levels), a diagonal Gaussian posterior
q(z|x), and diffusion on z * scaling_factor so the latents have roughly unit variance.

Weights: ``weights`` names a diffusers ``AutoencoderKL`` folder (config.json +
diffusion_pytorch_model.safetensors) at a local path or any fsspec URL; its config must agree
with the spec. Without weights the VAE is built from the spec with init_seed (reproducible).
Training loss: L1/L2 reconstruction + kl_weight * KL(q(z|x) || N(0, I)) (appendix G; the
perceptual and adversarial terms of the paper are not included).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from components.hf_folder import LayoutError, check_part, check_config as check_fields, join, local_copy, put_folder, read_json
from components.spec import Spec

CONFIG, WEIGHTS = "config.json", "diffusion_pytorch_model.safetensors"


class KlVaeTrainSpec(Spec):
    """How ``zoo train-autoencoder`` fits the VAE on a run's images (Adam, constant lr, the loss below)."""

    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float = Field(gt=0)
    seed: int = Field(0, ge=0)


class KlVaeSpec(Spec):
    kind: Literal["kl_vae"] = "kl_vae"
    channels: int = Field(3, gt=0, description="image channels")
    latent_channels: int = Field(4, gt=0)
    block_out_channels: tuple[int, ...] = Field((128, 256, 512, 512), min_length=1)
    layers_per_block: int = Field(2, ge=1)
    norm_num_groups: int = Field(32, ge=1)
    scaling_factor: float = Field(0.18215, gt=0, description="z_diffusion = z * scaling_factor")
    posterior: Literal["mean", "sample"] = Field("mean", description="encode with the posterior mean or a sample")
    kl_weight: float = Field(1e-6, ge=0, description="weight of the KL term in the autoencoder's training loss")
    init_seed: int = Field(0, ge=0, description="seed of the random initialization when there are no weights")
    weights: str | None = Field(None, description="URL of a diffusers AutoencoderKL folder")
    train: KlVaeTrainSpec | None = Field(None, description="the recipe of `zoo train-autoencoder`; None: weights come from a folder")

    @model_validator(mode="after")
    def _check(self) -> KlVaeSpec:
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"block_out_channels {bad} are not divisible by norm_num_groups={self.norm_num_groups}")
        return self

    @property
    def factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def latent_shape(self, size: int) -> tuple[int, int]:
        if size % self.factor:
            raise ValueError(f"image size {size} is not divisible by the KL-VAE's downsampling factor {self.factor}")
        return self.latent_channels, size // self.factor

    def diffusers_config(self) -> dict:
        n = len(self.block_out_channels)
        return dict(
            in_channels=self.channels, out_channels=self.channels, latent_channels=self.latent_channels,
            down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=self.block_out_channels, layers_per_block=self.layers_per_block,
            norm_num_groups=self.norm_num_groups, scaling_factor=self.scaling_factor,
        )

    def build(self) -> KlVae:
        return KlVae(self)


def check_config(spec: KlVaeSpec, config: dict, where: str) -> None:
    """A LayoutError naming the file and field where a diffusers config disagrees with the spec."""
    check_fields(config, spec.diffusers_config(), where, "autoencoder",
                 unsupported=("shift_factor", "latents_mean", "latents_std"), kind="kl_vae")


class KlVae(nn.Module):
    def __init__(self, spec: KlVaeSpec, vae: nn.Module | None = None):
        super().__init__()
        from diffusers import AutoencoderKL

        self.spec = spec
        if vae is None and spec.weights:
            vae = load_vae(spec, spec.weights)
        if vae is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(spec.init_seed)
                vae = AutoencoderKL(**spec.diffusers_config())
        self.vae = vae

    def posterior(self, images: Tensor):
        return self.vae.encode(images).latent_dist

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images in [-1, 1] -> scaled latents (posterior mean, or a sample when the spec says so)."""
        dist = self.posterior(images)
        z = dist.sample(generator) if self.spec.posterior == "sample" else dist.mean
        return z * self.spec.scaling_factor

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latents -> images in about [-1, 1] (unclamped, as diffusers' decode)."""
        return self.vae.decode(z / self.spec.scaling_factor).sample

    def loss(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """Reconstruction (L1 + L2) + kl_weight * KL(q(z|x) || N(0, I)) per image (Rombach et al., app. G)."""
        dist = self.posterior(images)
        recon = self.vae.decode(dist.sample(generator)).sample
        rec = (recon - images).abs().mean() + F.mse_loss(recon, images)
        kl = dist.kl().mean() / images[0].numel()
        return rec + self.spec.kl_weight * kl, {"recon": float(rec.detach()), "kl": float(kl.detach())}

    def save(self, url: str) -> None:
        """Write the diffusers layout (config.json + diffusion_pytorch_model.safetensors) to ``url``."""
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            self.vae.save_pretrained(tmp, safe_serialization=True)
            put_folder(Path(tmp), url)


def load_vae(spec: KlVaeSpec, url: str) -> nn.Module:
    """diffusers' AutoencoderKL from a folder URL, checked against the spec."""
    from diffusers import AutoencoderKL

    files = check_part(url, (CONFIG, WEIGHTS), "vae")
    check_config(spec, read_json(join(url, CONFIG), "vae"), join(url, CONFIG))
    with local_copy(url, [f for f in files if f in (CONFIG, WEIGHTS)]) as local:
        return AutoencoderKL.from_pretrained(str(local), use_safetensors=True)


__all__ = ["KlVae", "KlVaeSpec", "KlVaeTrainSpec", "check_config", "load_vae"]
