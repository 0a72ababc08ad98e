"""Where a served model comes from: a catalog name (+ weights URL, + typed overrides), a
checkpoint or run folder URL (local or s3://), or a Model already in memory.

``resolve`` reads only the spec (cheap, done once when the application is built) and pins a run
folder to its newest complete checkpoint, so every replica, even one started hours later by
the autoscaler, serves the same weights. ``load`` is what each replica runs: ``zoo.load``.
"""

from __future__ import annotations

from dataclasses import dataclass

import fsspec
import torch

from serve.options import ModelOptions
from zoo import catalog
from zoo import checkpoint as ckpt
from zoo.catalog import format_errors
from zoo.errors import CheckpointError, SpecError
from zoo.model import Model
from zoo.specs import ModelSpec, RunSpec


@dataclass(frozen=True)
class Source:
    """A resolved model: its route name, the spec it serves, and how a replica loads it."""

    name: str
    spec: ModelSpec
    options: ModelOptions  # options.model is pinned to a concrete checkpoint where it was a run folder
    model: Model | None = None  # a model served from memory (not exportable as a config)

    def load(self, device: str | torch.device = "cpu") -> Model:
        if self.model is not None:
            return self.model.to(device).eval()
        from zoo.loading import load

        o = self.options
        model = load(o.model, weights=o.weights, ema=o.ema, device=device, **o.overrides)
        if model.spec != self.spec:
            raise CheckpointError(f"{o.model}: the spec loaded on the replica differs from the one resolved at build time")
        return model


def is_catalog_name(ref: str) -> bool:
    """A catalog name, or something that looks like one (a bare word that is not a path)."""
    if ref in catalog.entries():
        return True
    if "://" in ref or "/" in ref or ref.startswith("."):
        return False
    fs, path = fsspec.core.url_to_fs(ref)
    return not fs.exists(path)


def resolve(options: ModelOptions) -> Source:
    """The spec a model serves, read without loading weights; errors name the model."""
    ref = options.model
    if ref.startswith("memory:"):
        raise SpecError(f"{ref}: a model held in memory has no URL to load it from: save a checkpoint to serve or export it")
    if is_catalog_name(ref):
        run = catalog.get(ref, **options.overrides)  # UnknownModelError with suggestions on a typo
        if (options.weights or run.model.weights) is None:
            raise CheckpointError(
                f"{ref!r} has no weights to serve: pass weights='<URL of a .safetensors file or checkpoint>' "
                "(nothing is downloaded), or serve a trained checkpoint / run folder instead"
            )
        return Source(options.name or run.name, run.model, options)
    if options.overrides:
        raise SpecError(f"{ref}: overrides apply to catalog names; a checkpoint carries its own spec")
    if options.weights is not None:
        raise SpecError(f"{ref}: weights= applies to catalog names; a checkpoint carries its own weights")
    pinned = ckpt.resolve(ref)  # the newest complete checkpoint of a run folder
    body = ckpt.Checkpoint(pinned).spec_json()
    try:
        run = RunSpec.model_validate_json(body)
    except Exception as e:  # pydantic ValidationError or JSON error
        detail = format_errors(e) if hasattr(e, "errors") else str(e)
        raise CheckpointError(f"{pinned}/spec.json: not a valid spec:\n{detail}") from None
    return Source(options.name or run.name, run.model, options.model_copy(update={"model": pinned}))


def in_memory(model: Model, options: ModelOptions) -> Source:
    """Serve a Model held in memory (e.g. just trained in a notebook); it travels to replicas."""
    return Source(options.name or model.name, model.spec, options, model)
