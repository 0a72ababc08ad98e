"""The one way a reference becomes a model: a catalog name (with ``weights=`` and typed overrides),
a run folder, a checkpoint folder, a Stable-Diffusion-layout (diffusers) folder, or any fsspec
URL of them.

    r = resolve("runs/ddpm-digits-1a2b")        # Resolved(run=..., weights=<newest checkpoint>, checkpoint=<same>)
    r = resolve("ddpm-cifar", weights="s3://b/model.safetensors", steps=10)
    model = load_model(r)                       # or load_model("runs/...") in one call

``resolve`` reads only the spec (cheap: serve does it once when the application is built) and pins
a run folder to its newest complete checkpoint, so whoever loads the result later (a replica the
autoscaler starts hours later, a training worker) gets the same weights. Used by ``zoo.load``,
``zoo.evaluate``, serving and training (initial weights, reflow sources).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fsspec
import torch

from components.autoencoders import KlVae
from components.backbones import SdUnet
from components.conditioners import ClipText
from components.random import derive_seed
from zoo import catalog, diffusers_layout, lora_file
from zoo import checkpoint as ckpt
from zoo.catalog import format_errors
from zoo.errors import CheckpointError, SpecError
from zoo.lora import add_adapter, merge_adapter
from zoo.model import Model
from zoo.specs import ModelSpec, RunSpec
from zoo.weights import fit_weights, load_weights


@dataclass(frozen=True)
class Resolved:
    """A reference resolved without loading weights.

    spec, name: the model spec and the name it is known by.
    weights: where the weights are: ``weights=`` or the entry's own URL for a catalog name (None
        when it has none), the pinned checkpoint for a checkpoint / run folder, the folder itself
        for a diffusers-layout folder.
    checkpoint: the pinned newest complete checkpoint when the reference was one (else None).
    run: the full run spec (catalog entry with overrides, or the checkpoint's spec.json); None for
        a diffusers folder, which carries a model but no training recipe.
    """

    ref: str
    spec: ModelSpec
    name: str
    weights: str | None
    checkpoint: str | None = None
    run: RunSpec | None = None

    @property
    def run_dir(self) -> str | None:
        """The run folder of a checkpoint under ``<run>/checkpoints/``."""
        url = self.checkpoint
        return url.rstrip("/").rsplit("/checkpoints/", 1)[0] if url and "/checkpoints/" in url else None


def is_catalog_name(ref: str) -> bool:
    """A catalog entry's name, or a bare word that names no existing path (then the catalog's
    UnknownModelError, with suggestions, is the right answer)."""
    if ref in catalog.entries():
        return True
    if "://" in ref or "/" in ref or ref.startswith("."):
        return False
    fs, path = fsspec.core.url_to_fs(ref)
    return not fs.exists(path)


def resolve(ref: str, *, weights: str | None = None, **overrides: Any) -> Resolved:
    """The spec and weights a reference names; errors name the reference. ``weights=`` and
    ``overrides`` apply to catalog names only (a checkpoint carries its own spec and weights)."""
    if not isinstance(ref, str):
        raise SpecError(f"model: expected a catalog name or a run/checkpoint URL, got {type(ref).__name__}")
    if is_catalog_name(ref):
        run = catalog.get(ref, **overrides)  # UnknownModelError with suggestions on a typo
        return Resolved(ref, run.model, run.name, weights or run.model.weights, run=run)
    if overrides:
        raise SpecError(f"{ref}: overrides apply to catalog names; a checkpoint carries its own spec")
    if weights is not None:
        raise SpecError(f"{ref}: weights= applies to catalog names; a checkpoint carries its own weights")
    if diffusers_layout.is_diffusers_folder(ref):  # a Stable-Diffusion-layout folder carries its own spec
        return Resolved(ref, diffusers_layout.spec_from_folder(ref), ref.rstrip("/").rsplit("/", 1)[-1], ref)
    pinned = ckpt.resolve(ref)  # the newest complete checkpoint of a run folder
    try:
        run = RunSpec.model_validate_json(ckpt.Checkpoint(pinned).spec_json())
    except Exception as e:  # pydantic ValidationError or JSON error
        detail = format_errors(e) if hasattr(e, "errors") else str(e)
        raise CheckpointError(f"{pinned}/spec.json: not a valid spec:\n{detail}") from None
    return Resolved(ref, run.model, run.name, pinned, pinned, run)


def load_model(ref: str | Resolved, *, weights: str | None = None, ema: bool = True,
               device: str | torch.device = "cpu", lora: str | None = None, merge: bool = False,
               **overrides: Any) -> Model:
    """A model with its weights (EMA unless ema=False), in eval mode on ``device``.

    ``lora``: a LoRA adapter (``pytorch_lora_weights.safetensors`` or a folder holding it, any
    fsspec URL; zoo/lora_file.py) put on the loaded base, so an adapter trained on one base can
    go on another's weights. ``merge=True`` folds it (and a LoRA run's own adapter) into the
    base weights; else it stays a separate, unmerged adapter (``model.adapter``)."""
    r = ref if isinstance(ref, Resolved) else resolve(ref, weights=weights, **overrides)
    if r.weights is None:
        raise CheckpointError(
            f"{r.ref!r} has no weights: pass weights='<URL of a .safetensors file or checkpoint>' "
            "(nothing is downloaded), or use zoo.build() for an untrained model"
        )
    if r.checkpoint is not None and r.run is not None and r.run.train.lora is not None:
        model = base_model(r.spec, r.name, r.spec.weights, what=f"{r.checkpoint}: the base of this LoRA run")
        add_adapter(model, r.run.train.lora, seed=derive_seed(r.run.train.seed, "lora"))
        c = ckpt.Checkpoint(r.checkpoint)
        fit_weights(model, c.tensors("ema.safetensors" if ema else "model.safetensors"), c.url)
        model.requires_grad_(True)
    elif r.checkpoint is not None:
        model = Model(r.spec, r.name)
        c = ckpt.Checkpoint(r.checkpoint)
        fit_weights(model, c.tensors("ema.safetensors" if ema else "model.safetensors"), c.url)
    else:
        model = base_model(r.spec, r.name, r.weights, ema=ema)
    if lora is not None:
        if model.adapter is not None:  # a LoRA run's own adapter: fold it in before the next one
            merge_adapter(model)
        lora_file.load(model, lora)
    if merge and model.adapter is not None:
        merge_adapter(model)
    return model.to(device).eval()


def base_model(spec: ModelSpec, name: str, weights: str | None, ema: bool = True, what: str | None = None) -> Model:
    """A model built from ``spec`` with ``weights`` when given: a Stable-Diffusion-layout folder
    (every part read from it), a .safetensors file or a checkpoint / run folder (the denoiser)."""
    if weights is None:
        if what is not None:
            raise CheckpointError(f"{what} has no weights URL (model.weights)")
        return Model(spec, name)
    if diffusers_layout.is_diffusers_folder(weights):
        return load_diffusers(weights, spec, name)
    model = Model(spec, name)
    load_weights(model, weights, ema)
    return model


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
