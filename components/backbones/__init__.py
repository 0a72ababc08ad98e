"""Backbones: plain nn.Module(x, c_noise, cond) -> tensor; they know nothing of processes.

BackboneSpec is the union of the backbone kinds (kind = file stem): the DDPM UNet of pixel
models, the Stable Diffusion UNet (cross-attention to text) and DiT.
"""

from typing import Annotated, Union

from pydantic import Field

from components.backbones.dit import Dit, DitSpec
from components.backbones.sd_unet import SdUnet, SdUnetSpec
from components.backbones.unet import UNet, UNetSpec
from components.registry import Registry

BackboneSpec = Annotated[Union[UNetSpec, SdUnetSpec, DitSpec], Field(discriminator="kind")]

BACKBONES = Registry(BackboneSpec, "backbone")

__all__ = ["BACKBONES", "BackboneSpec", "Dit", "DitSpec", "SdUnet", "SdUnetSpec", "UNet", "UNetSpec"]
