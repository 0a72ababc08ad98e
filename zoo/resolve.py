"""The one way a reference becomes a model: a catalog name (with ``weights=`` and typed overrides),
a run folder, a checkpoint folder, or any fsspec URL of them.

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

from zoo import catalog
from zoo import checkpoint as ckpt
from zoo.catalog import format_errors
from zoo.errors import CheckpointError, SpecError
from zoo.model import Model
from zoo.specs import ModelSpec, RunSpec
from zoo.weights import fit_weights, load_weights


@dataclass(frozen=True)
class Resolved:
    """A reference resolved without loading weights.

    run: the catalog entry (with overrides) or the checkpoint's own spec.json.
    weights: where the weights are: ``weights=`` or the entry's own URL for a catalog name (None
        when it has none), the pinned checkpoint for a checkpoint / run folder.
    checkpoint: the pinned newest complete checkpoint when the reference was one (else None).
    """

    ref: str
    run: RunSpec
    weights: str | None
    checkpoint: str | None = None

    @property
    def spec(self) -> ModelSpec:
        return self.run.model

    @property
    def name(self) -> str:
        return self.run.name

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
        return Resolved(ref, run, weights or run.model.weights)
    if overrides:
        raise SpecError(f"{ref}: overrides apply to catalog names; a checkpoint carries its own spec")
    if weights is not None:
        raise SpecError(f"{ref}: weights= applies to catalog names; a checkpoint carries its own weights")
    pinned = ckpt.resolve(ref)  # the newest complete checkpoint of a run folder
    try:
        run = RunSpec.model_validate_json(ckpt.Checkpoint(pinned).spec_json())
    except Exception as e:  # pydantic ValidationError or JSON error
        detail = format_errors(e) if hasattr(e, "errors") else str(e)
        raise CheckpointError(f"{pinned}/spec.json: not a valid spec:\n{detail}") from None
    return Resolved(ref, run, pinned, pinned)


def load_model(ref: str | Resolved, *, weights: str | None = None, ema: bool = True,
               device: str | torch.device = "cpu", **overrides: Any) -> Model:
    """A model with its weights (EMA unless ema=False), in eval mode on ``device``."""
    r = ref if isinstance(ref, Resolved) else resolve(ref, weights=weights, **overrides)
    if r.weights is None:
        raise CheckpointError(
            f"{r.ref!r} has no weights: pass weights='<URL of a .safetensors file or checkpoint>' "
            "(nothing is downloaded), or use zoo.build() for an untrained model"
        )
    model = Model(r.spec, r.name)
    if r.checkpoint is not None:
        c = ckpt.Checkpoint(r.checkpoint)
        fit_weights(model, c.tensors("ema.safetensors" if ema else "model.safetensors"), c.url)
    else:
        load_weights(model, r.weights, ema)
    return model.to(device).eval()
