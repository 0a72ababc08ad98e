"""Building models from the catalog and loading them from checkpoints or weight URLs (zoo/resolve.py)."""

from __future__ import annotations

from typing import Any

import torch

from zoo import catalog
from zoo.model import Model
from zoo.resolve import load_diffusers, load_model  # noqa: F401  (zoo.loading.load_diffusers, as before)
from zoo.errors import SpecError
from zoo.specs import ModelSpec, RunSpec
from zoo.weights import fit_weights, load_weights  # noqa: F401  (zoo.loading.load_weights, as before)


def build(name: str | RunSpec | ModelSpec, **overrides: Any) -> Model:
    """An untrained model (random weights) of a catalog entry, a RunSpec or a ModelSpec, e.g. as a
    baseline; overrides apply to the first two (a ModelSpec is edited with ``model_copy``)."""
    if isinstance(name, ModelSpec):
        if overrides:
            raise SpecError(f"zoo.build(ModelSpec, ...): overrides {sorted(overrides)} apply to catalog names and "
                            "RunSpecs; edit a ModelSpec with spec.model_copy(update=...)")
        return Model(name)
    if isinstance(name, RunSpec):
        run = catalog.apply_overrides(name, overrides)
    elif isinstance(name, str):
        run = catalog.get(name, **overrides)
    else:
        raise SpecError(f"zoo.build takes a catalog name, a RunSpec or a ModelSpec, not {type(name).__name__}")
    return Model(run.model, run.name)


def load(ref: str, *, weights: str | None = None, ema: bool = True, device: str | torch.device = "cpu",
         lora: str | None = None, merge: bool = False, **overrides: Any) -> Model:
    """A trained model from a checkpoint folder / run folder URL, or a catalog name with weights.

    ``zoo.load("runs/ddpm-digits-...")`` restores the newest complete checkpoint (EMA weights
    unless ema=False). ``zoo.load("ddpm-cifar", weights="s3://.../model.safetensors")`` builds
    the catalog entry and loads the weights (the spec's own ``weights`` URL when not given).
    ``weights=`` and overrides apply to catalog names only (zoo.resolve.resolve).
    ``lora="s3://.../pytorch_lora_weights.safetensors"`` (or a folder holding it) puts a LoRA
    adapter on the model, unmerged unless ``merge=True`` (zoo/lora_file.py); a LoRA run's
    checkpoint loads its base (``spec.weights``) with its own adapter.
    """
    return load_model(ref, weights=weights, ema=ema, device=device, lora=lora, merge=merge, **overrides)
