"""Autoencoders: map images to the space diffusion runs in (identity for pixel models, the
KL-VAE f=8 for latent models). kind = file stem; the union is the registry."""

from typing import Annotated, Union

from pydantic import Field

from components.autoencoders.identity import Identity, IdentitySpec
from components.autoencoders.kl_vae import KlVae, KlVaeSpec, KlVaeTrainSpec
from components.registry import Registry

AutoencoderSpec = Annotated[Union[IdentitySpec, KlVaeSpec], Field(discriminator="kind")]

AUTOENCODERS = Registry(AutoencoderSpec, "autoencoder")

__all__ = ["AUTOENCODERS", "AutoencoderSpec", "Identity", "IdentitySpec", "KlVae", "KlVaeSpec", "KlVaeTrainSpec"]
