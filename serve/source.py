"""Where a served model comes from: a catalog name (+ weights URL, + typed overrides), a
checkpoint or run folder URL (local or s3://), or a Model already in memory.

``resolve`` reads only the spec (cheap, done once when the application is built) and pins a run
folder to its newest complete checkpoint, so every replica, even one started hours later by
the autoscaler, serves the same weights. ``load`` is what each replica runs: ``zoo.load``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from serve.options import ModelOptions
from zoo.errors import CheckpointError, SpecError
from zoo.model import Model
from zoo.resolve import load_model
from zoo.resolve import resolve as resolve_ref
from zoo.specs import ModelSpec


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
        o = self.options
        model = load_model(o.model, weights=o.weights, ema=o.ema, device=device, **o.overrides)
        if model.spec != self.spec:
            raise CheckpointError(f"{o.model}: the spec loaded on the replica differs from the one resolved at build time")
        return model


def resolve(options: ModelOptions) -> Source:
    """The spec a model serves, read without loading weights (zoo.resolve); errors name the model."""
    ref = options.model
    if ref.startswith("memory:"):
        raise SpecError(f"{ref}: a model held in memory has no URL to load it from: save a checkpoint to serve or export it")
    r = resolve_ref(ref, weights=options.weights, **options.overrides)
    if r.checkpoint is None:
        if r.weights is None:
            raise CheckpointError(
                f"{ref!r} has no weights to serve: pass weights='<URL of a .safetensors file or checkpoint>' "
                "(nothing is downloaded), or serve a trained checkpoint / run folder instead"
            )
        return Source(options.name or r.name, r.spec, options)
    return Source(options.name or r.name, r.spec, options.model_copy(update={"model": r.checkpoint}))


def in_memory(model: Model, options: ModelOptions) -> Source:
    """Serve a Model held in memory (e.g. just trained in a notebook); it travels to replicas."""
    return Source(options.name or model.name, model.spec, options, model)
