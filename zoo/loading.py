"""Building models from the catalog and loading them from checkpoints or weight URLs."""

from __future__ import annotations

from typing import Any

import fsspec
import torch
from torch import Tensor

from components.autoencoders import KlVae
from components.backbones import SdUnet
from components.conditioners import ClipText
from zoo import catalog, diffusers_layout
from zoo import checkpoint as ckpt
from zoo.catalog import format_errors
from zoo.errors import CheckpointError, SpecError
from zoo.model import Model
from zoo.specs import ModelSpec, RunSpec
from zoo.tensorfile import read_safetensors


def build(name: str | RunSpec, **overrides: Any) -> Model:
    """An untrained model of a catalog entry (random weights), e.g. as a baseline."""
    run = name if isinstance(name, RunSpec) else catalog.get(name, **overrides)
    return Model(run.model, run.name)


def load(ref: str, *, weights: str | None = None, ema: bool = True, device: str | torch.device = "cpu",
         **overrides: Any) -> Model:
    """A trained model from a checkpoint folder / run folder URL, or a catalog name with weights.

    ``zoo.load("runs/ddpm-digits-...")`` restores the newest complete checkpoint (EMA weights
    unless ema=False). ``zoo.load("ddpm-cifar", weights="s3://.../model.safetensors")`` builds
    the catalog entry and loads the weights (the spec's own ``weights`` URL when not given).
    """
    if _is_catalog_name(ref):
        run = catalog.get(ref, **overrides)
        url = weights or run.model.weights
        if url is None:
            raise CheckpointError(
                f"{ref!r} has no weights: pass weights='<URL of a .safetensors file or checkpoint>' "
                "(nothing is downloaded), or use zoo.build() for an untrained model"
            )
        if diffusers_layout.is_diffusers_folder(url):
            return load_diffusers(url, run.model, run.name).to(device).eval()
        model = Model(run.model, run.name)
        load_weights(model, url, ema)
        return model.to(device).eval()
    if overrides:
        raise SpecError("overrides apply to catalog names; a checkpoint carries its own spec")
    if weights is not None:
        raise SpecError(f"weights= applies to catalog names; {ref!r} is a checkpoint or weights folder itself")
    if diffusers_layout.is_diffusers_folder(ref):
        return load_diffusers(ref).to(device).eval()
    c = ckpt.Checkpoint(ckpt.resolve(ref))
    try:
        run = RunSpec.model_validate_json(c.spec_json())
    except Exception as e:  # pydantic ValidationError or JSON error
        detail = format_errors(e) if hasattr(e, "errors") else str(e)
        raise CheckpointError(f"{c.url}/spec.json: not a valid spec:\n{detail}") from None
    model = Model(run.model, run.name)
    fit_weights(model, c.tensors("ema.safetensors" if ema else "model.safetensors"), c.url)
    return model.to(device).eval()


def load_diffusers(url: str, spec: ModelSpec | None = None, name: str | None = None) -> Model:
    """A model from a Stable-Diffusion-layout folder (local path or any fsspec URL): its spec is
    the folder's own, or ``spec`` (a catalog entry) checked field by field against the folder."""
    spec = diffusers_layout.spec_from_folder(url) if spec is None else spec
    p = diffusers_layout.read_parts(spec, url)
    parts = {
        "autoencoder": KlVae(spec.autoencoder, vae=p["vae"]),
        "conditioner": ClipText(spec.conditioner, text_model=p["text_encoder"], tokenizer=p["tokenizer"]),
        "backbone": SdUnet(spec.backbone, unet=p["unet"]),
    }
    return Model(spec, name or url.rstrip("/").rsplit("/", 1)[-1], parts=parts)


def _is_catalog_name(ref: str) -> bool:
    if "://" in ref or "/" in ref or ref.startswith("."):
        return False
    fs, path = fsspec.core.url_to_fs(ref)
    return not fs.exists(path)


def load_weights(model: Model, url: str, ema: bool = True) -> None:
    """Load weights into ``model`` from a .safetensors URL or a checkpoint / run folder (EMA unless ema=False)."""
    if url.endswith(".safetensors"):
        sd = read_safetensors(url, CheckpointError, f"weights {url}")
    else:
        c = ckpt.Checkpoint(ckpt.resolve(url))
        sd = c.tensors("ema.safetensors" if ema else "model.safetensors")
    fit_weights(model, sd, url)


def fit_weights(model: Model, sd: dict[str, Tensor], where: str) -> None:
    """Load a denoiser state dict, or a CheckpointError naming the source and the mismatch."""
    try:
        model.denoiser.load_state_dict(sd)
    except RuntimeError as e:
        first = str(e).splitlines()
        raise CheckpointError(f"{where}: weights do not fit {model.name}: {' '.join(first[:3])[:500]}") from None
