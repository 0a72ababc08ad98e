"""The identity autoencoder of pixel-space models: diffusion runs on the images themselves."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from components.spec import Spec


class IdentitySpec(Spec):
    kind: Literal["identity"] = "identity"
    channels: int = Field(gt=0, description="image channels")

    def latent_shape(self, size: int) -> tuple[int, int]:
        """(channels, size) of the space diffusion runs in, for images of size x size."""
        return self.channels, size

    def build(self) -> Identity:
        return Identity(self)


class Identity(nn.Module):
    """encode/decode are the identity; images are in [-1, 1]."""

    def __init__(self, spec: IdentitySpec):
        super().__init__()
        self.spec = spec

    def encode(self, x: Tensor) -> Tensor:
        return x

    def decode(self, z: Tensor) -> Tensor:
        return z
