"""Autoencoders: map images to the space diffusion runs in (identity for pixel models;
KL-VAE f=8 for latent models joins the union later). kind = file stem."""

from components.autoencoders.identity import Identity, IdentitySpec
from components.registry import Registry

AutoencoderSpec = IdentitySpec

AUTOENCODERS = Registry(AutoencoderSpec, "autoencoder")

__all__ = ["AUTOENCODERS", "AutoencoderSpec", "Identity", "IdentitySpec"]
