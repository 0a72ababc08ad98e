"""Model: a ModelSpec assembled into torch objects, sampled with any solver and grid.

    model = Model(spec)                     # or zoo.load(checkpoint) / zoo.load("ddpm-digits", weights=...)
    images = model.sample(16, steps=50, solver="ddim", seed=0)   # (16, C, H, W) in [0, 1]
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import TypeAdapter, ValidationError
from torch import Tensor, nn
from tqdm.auto import tqdm

from components.denoisers import Denoiser, bind, count_calls
from components.grids import GridSpec
from components.random import RandomSource
from components.solvers import SolverSpec
from zoo import diffusers_layout
from zoo.catalog import format_errors
from zoo.errors import SpecError
from zoo.lora import Adapter, is_adapter_key
from zoo.specs import ModelSpec

_SOLVERS = TypeAdapter(SolverSpec)
_GRIDS = TypeAdapter(GridSpec)


def _component(adapter: TypeAdapter, value: Any, field: str) -> Any:
    """A solver / grid given as a kind name, a dict or a spec, validated against its union."""
    if isinstance(value, str):
        value = {"kind": value}
    if isinstance(value, dict):
        try:
            return adapter.validate_python(value)
        except ValidationError as e:
            raise SpecError(f"invalid {field}:\n{format_errors(e)}") from None
    return value


class Model(nn.Module):
    def __init__(self, spec: ModelSpec, name: str | None = None, parts: dict[str, nn.Module] | None = None):
        """``parts`` may hold prebuilt "autoencoder", "conditioner" and "backbone" modules (e.g. read
        from a diffusers folder); the others are built from the spec."""
        super().__init__()
        parts = parts or {}
        unknown = set(parts) - {"autoencoder", "conditioner", "backbone"}
        if unknown:
            raise ValueError(f"unknown model parts {sorted(unknown)}")
        self.spec, self.name = spec, name or "model"
        self.process = spec.process.build()
        self.autoencoder = parts["autoencoder"] if "autoencoder" in parts else spec.autoencoder.build()
        self.conditioner = parts["conditioner"] if "conditioner" in parts else spec.conditioner.build()
        self.denoiser = Denoiser(parts["backbone"] if "backbone" in parts else spec.backbone.build(), self.process, spec.denoiser.build())
        self.adapter: Adapter | None = None  # an unmerged LoRA adapter on the backbone (zoo/lora.py)

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        c, size = self.spec.autoencoder.latent_shape(self.spec.image.size)
        return (c, size, size)

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The weights a checkpoint stores: the denoiser's (frozen parts come from their URLs); with
        a LoRA adapter only the adapter's (the base comes from ``spec.weights``)."""
        sd = self.denoiser.state_dict()
        return sd if self.adapter is None else {k: v for k, v in sd.items() if is_adapter_key(k)}

    def export_diffusers(self, url: str) -> None:
        """Write a Stable-Diffusion-layout folder (kl_vae + sd_unet + clip_text models) that
        diffusers' StableDiffusionPipeline.from_pretrained loads; any fsspec URL. An unmerged LoRA
        adapter goes beside the base weights as ``<url>/pytorch_lora_weights.safetensors``
        (``pipe.load_lora_weights(url)``)."""
        diffusers_layout.export(self, url)

    # -- data to the space diffusion runs in ---------------------------------------------------
    def encode(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] -> x0 of the diffusion."""
        return self.autoencoder.encode(images)

    def decode(self, x0: Tensor) -> Tensor:
        """x0 of the diffusion -> images in [0, 1]."""
        return ((self.autoencoder.decode(x0) + 1) / 2).clamp(0, 1)

    # -- sampling --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        steps: int | None = None,
        solver: str | dict | Any = None,
        grid: str | dict | Any = None,
        guidance: float | None = None,
        seed: int | Sequence[int] = 0,
        labels: int | Sequence[int] | Tensor | None = None,
        prompt: str | Sequence[str] | None = None,
        rng: RandomSource | None = None,
        progress: bool = False,
        return_latents: bool = False,
    ) -> Tensor:
        """Draw n images in [0, 1] with the spec's default solver/grid/steps unless given.

        ``seed`` is one seed for the whole batch or one per sample; ``rng`` (a RandomSource)
        overrides it, e.g. one generator per request in a served batch.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        cfg = self.spec.sampling
        steps = cfg.steps if steps is None else steps
        solver_spec = _component(_SOLVERS, solver, "solver") if solver is not None else cfg.solver
        grid_spec = _component(_GRIDS, grid, "grid") if grid is not None else cfg.grid
        w = cfg.guidance if guidance is None else guidance
        if w < 0:
            raise ValueError(f"guidance must be >= 0, got {w}")
        device = self.device
        if rng is None:
            seeds = [(int(seed), n)] if isinstance(seed, numbers.Integral) else [(int(s), 1) for s in seed]
            if len(seeds) != n and not isinstance(seed, numbers.Integral):
                raise ValueError(f"got {len(seeds)} seeds for n={n} samples (give one seed, or one per sample)")
            rng = RandomSource.from_seeds(seeds, device)
        if rng.n != n:
            raise ValueError(f"random source has {rng.n} rows for n={n} samples")

        if w and not self.conditioner.guidable:
            raise ValueError(f"guidance={w} needs a conditional model; {self.name} is unconditional")
        cond = _to(self.conditioner.request(n, labels=labels, prompt=prompt), device)
        if self.spec.guidance_input:  # an LCM: w is an input of the network, one call per step (LCM eq. 8)
            cond, w = {**(cond or {}), "w": torch.full((n,), float(w), device=device)}, 0.0
        null = _to(self.conditioner.null(n), device) if w else None

        was_training = self.training
        self.eval()
        try:
            ts = grid_spec.build()(self.process, steps)
            x = self.process.prior(self.latent_shape, rng).to(device)
            fn = bind(self.denoiser, cond, null, w, cfg.clip_x0)
            bar = tqdm(desc=f"sample {self.name}", unit="nfe", disable=not progress, leave=False, mininterval=1.0)
            fn, _ = count_calls(fn, bar.update)
            x0 = solver_spec.build()(fn, self.process, x, ts, rng)
            bar.close()
        finally:
            self.train(was_training)
        return x0 if return_latents else self.decode(x0)


def _to(cond: dict[str, Tensor] | None, device: torch.device) -> dict[str, Tensor] | None:
    return None if cond is None else {k: v.to(device) for k, v in cond.items()}
