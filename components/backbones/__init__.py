"""Backbones: plain nn.Module(x, c_noise, cond) -> tensor; they know nothing of processes.

BackboneSpec is the union of the backbone kinds (kind = file stem). While there is one kind it
is that spec itself; later kinds (dit, sd_unet, ...) join as union members.
"""

from components.backbones.unet import UNet, UNetSpec
from components.registry import Registry

BackboneSpec = UNetSpec

BACKBONES = Registry(BackboneSpec, "backbone")

__all__ = ["BACKBONES", "BackboneSpec", "UNet", "UNetSpec"]
