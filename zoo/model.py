"""Model: a ModelSpec assembled into torch objects, sampled with any solver and grid.

    model = Model(spec)                     # or zoo.load(checkpoint) / zoo.load("ddpm-digits", weights=...)
    images = model.sample(16, steps=50, solver="ddim", seed=0)   # (16, C, H, W) in [0, 1]
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
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
    def plan(self, *, steps: int | None = None, solver: str | dict | Any = None, grid: str | dict | Any = None,
             guidance: float | None = None) -> SamplingPlan:
        """The spec's sampling defaults with the given ones in their place, validated."""
        cfg = self.spec.sampling
        w = cfg.guidance if guidance is None else guidance
        if w < 0:
            raise ValueError(f"guidance must be >= 0, got {w}")
        return SamplingPlan(
            steps=cfg.steps if steps is None else steps,
            solver=_component(_SOLVERS, solver, "solver") if solver is not None else cfg.solver,
            grid=_component(_GRIDS, grid, "grid") if grid is not None else cfg.grid,
            guidance=w,
        )

    @torch.no_grad()
    def solve(self, plan: SamplingPlan, rng: RandomSource, *, x: Tensor | None = None,
              labels: int | Sequence[int] | Tensor | None = None, prompt: str | Sequence[str] | None = None,
              progress: bool = False) -> Tensor:
        """The one sampling pipeline (``sample`` and reflow's pairs call it): the prior x_T (drawn
        from ``rng`` unless given), the condition and, with guidance, the null condition, the grid,
        the guided denoiser and the solver; returns x0 in the space diffusion runs in."""
        n, w = rng.n, plan.guidance
        if w and not self.conditioner.guidable:
            raise ValueError(f"guidance={w} needs a conditional model; {self.name} is unconditional")
        device = self.device
        was_training = self.training
        self.eval()
        try:
            ts = plan.grid.build()(self.process, plan.steps)
            x = self.process.prior(self.latent_shape, rng).to(device) if x is None else x.to(device)
            cond = _to(self.conditioner.request(n, labels=labels, prompt=prompt), device)
            if self.spec.guidance_input:  # an LCM: w is an input of the network, one call per step (LCM eq. 8)
                cond, w = {**(cond or {}), "w": torch.full((n,), float(w), device=device)}, 0.0
            null = _to(self.conditioner.null(n), device) if w else None
            fn = bind(self.denoiser, cond, null, w, self.spec.sampling.clip_x0)
            bar = tqdm(desc=f"sample {self.name}", unit="nfe", disable=not progress, leave=False, mininterval=1.0)
            fn, _ = count_calls(fn, bar.update)
            x0 = plan.solver.build()(fn, self.process, x, ts, rng)
            bar.close()
        finally:
            self.train(was_training)
        return x0

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
        plan = self.plan(steps=steps, solver=solver, grid=grid, guidance=guidance)
        if rng is None:
            seeds = [(int(seed), n)] if isinstance(seed, numbers.Integral) else [(int(s), 1) for s in seed]
            if len(seeds) != n and not isinstance(seed, numbers.Integral):
                raise ValueError(f"got {len(seeds)} seeds for n={n} samples (give one seed, or one per sample)")
            rng = RandomSource.from_seeds(seeds, self.device)
        if rng.n != n:
            raise ValueError(f"random source has {rng.n} rows for n={n} samples")
        x0 = self.solve(plan, rng, labels=labels, prompt=prompt, progress=progress)
        return x0 if return_latents else self.decode(x0)

    def edit(self, images: Tensor, task: str, **kw: Any) -> Tensor:
        """Zero-shot editing (CM Algorithm 4): ``task`` "inpaint" (``mask=``: nonzero where pixels are
        generated), "colorize" (an RGB model; keeps the luminance) or "superres" (``factor=2``: keeps
        the block means; low-resolution images are accepted as they are). Images in [0, 1]; options
        ``steps``, ``solver``, ``grid``, ``solver_steps``, ``seed``, ``labels``, ``prompt``,
        ``guidance`` as for sampling (see zoo/editing.py)."""
        from zoo.editing import edit_images

        return edit_images(self, images, task, **kw)


@dataclass(frozen=True)
class SamplingPlan:
    """How to sample: grid steps, solver, grid and guidance scale, all resolved (Model.plan)."""

    steps: int
    solver: SolverSpec
    grid: GridSpec
    guidance: float


def _to(cond: dict[str, Tensor] | None, device: torch.device) -> dict[str, Tensor] | None:
    return None if cond is None else {k: v.to(device) for k, v in cond.items()}
