"""Autoencoders: map images to the space diffusion runs in (identity for pixel models;
KL-VAE f=8 for latent models joins the union later). kind = file stem."""

from components.autoencoders.identity import Identity, IdentitySpec

AutoencoderSpec = IdentitySpec

__all__ = ["AutoencoderSpec", "Identity", "IdentitySpec"]
