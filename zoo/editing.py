"""``Model.edit``: zero-shot inpainting, colorization and super-resolution (CM Algorithm 4,
components/editing.py) on a pixel-space model.

The times t_1 > ... > t_N are the model's grid of ``steps`` (its final t = 0 left out), or with a
``consistency`` solver that names ``times``, the grid's first time and those. f is one network
call for the consistency solver (a consistency model); any other solver makes f(x, tau) its own
run from tau to 0 over the part of a ``solver_steps`` grid below tau, so a diffusion model edits
too, at steps x solver_steps network calls. The returned images are the last replacement done
in [0, 1] (the maps are affine-equivariant): unmasked pixels, the luminance, the block means are
the input's to float precision (inpainting: exactly); colorization and super-resolution may step
slightly outside [0, 1] there, as the replacement is not clamped.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from components.denoisers import bind
from components.editing import Colorize, Inpaint, SuperRes, edit
from components.grids import GRIDS
from components.random import RandomSource
from components.solvers import SOLVERS
from components.solvers.base import at

Model = Any  # zoo.model.Model, which calls this module (no import back: the layers test forbids the cycle)

Task = Literal["inpaint", "colorize", "superres"]
TASKS = ("inpaint", "colorize", "superres")


def _replacement(model: Model, images: Tensor, task: str, mask: Tensor | None, factor: int) -> tuple[Tensor, Any]:
    """(the reference images at the model's size in [0, 1], the replacement map)."""
    c, size = model.spec.image.channels, model.spec.image.size
    if task == "inpaint":
        if mask is None:
            raise ValueError("edit(task='inpaint') needs mask= (nonzero where pixels are generated)")
        mask = torch.as_tensor(mask)
        if mask.ndim == 2:
            mask = mask[None, None]
        if mask.ndim != 4 or mask.shape[-2:] != images.shape[-2:] or mask.shape[1] not in (1, images.shape[1]) \
                or mask.shape[0] not in (1, images.shape[0]):
            raise ValueError(f"mask has shape {tuple(mask.shape)}; images are {tuple(images.shape)}: give (H, W), "
                             f"(1 or B, 1 or C, H, W)")
        return images, Inpaint(mask.to(images.device))
    if mask is not None:
        raise ValueError(f"mask= is for task='inpaint', not {task!r}")
    if task == "colorize":
        if c != 3:
            raise ValueError(f"colorize needs an RGB model; {model.name} makes {c}-channel images")
        if images.shape[1] == 1:  # a grayscale input: its luminance is the gray value
            images = images.expand(-1, 3, -1, -1)
        return images, Colorize()
    if task == "superres":
        sr = SuperRes(factor)
        if size % factor:
            raise ValueError(f"superres factor {factor} does not divide the model's size {size}")
        if images.shape[-1] * factor == size:  # the low-resolution images themselves
            images = sr.upsample(images)
        return images, sr
    raise ValueError(f"unknown edit task {task!r}; tasks: {list(TASKS)}")


@torch.no_grad()
def edit_images(
    model: Model,
    images: Tensor,
    task: Task,
    *,
    mask: Tensor | None = None,
    steps: int | None = None,
    solver: Any = None,
    grid: Any = None,
    solver_steps: int | None = None,
    seed: int | Sequence[int] = 0,
    labels: Any = None,
    prompt: Any = None,
    guidance: float | None = None,
    factor: int = 2,
) -> Tensor:
    if model.spec.autoencoder.kind != "identity":
        raise ValueError(f"edit works in pixel space; {model.name} diffuses in its {model.spec.autoencoder.kind} latent")
    images = torch.as_tensor(images).to(model.device, torch.float32)
    if images.ndim == 3:
        images = images[None]
    images, replace = _replacement(model, images, task, mask, factor)
    c, size = model.spec.image.channels, model.spec.image.size
    if images.ndim != 4 or images.shape[1:] != (c, size, size):
        raise ValueError(f"images have shape {tuple(images.shape)}; {model.name} edits (B, {c}, {size}, {size}) in [0, 1]"
                         + (f" (superres also takes (B, {c}, {size // factor}, {size // factor}))" if task == "superres" else ""))
    if images.min() < 0 or images.max() > 1:
        raise ValueError("images must be in [0, 1]")

    cfg = model.spec.sampling
    solver_spec = SOLVERS.parse(solver) if solver is not None else cfg.solver
    grid_spec = (GRIDS.parse(grid) if grid is not None else cfg.grid).build()
    n = images.shape[0]
    rng = RandomSource.from_seeds([(int(seed), n)] if isinstance(seed, numbers.Integral) else [(int(s), 1) for s in seed],
                                  model.device)
    if rng.n != n:
        raise ValueError(f"got {rng.n} seeds for {n} images (give one seed, or one per image)")
    w = cfg.guidance if guidance is None else guidance
    cond = _to(model.conditioner.request(n, labels=labels, prompt=prompt), model.device)
    null = _to(model.conditioner.null(n), model.device) if w else None
    if w and not model.conditioner.guidable:
        raise ValueError(f"guidance={w} needs a conditional model; {model.name} is unconditional")
    fn = bind(model.denoiser, cond, null, w, cfg.clip_x0)

    ts = grid_spec(model.process, cfg.steps if steps is None else steps)
    consistency = solver_spec.kind == "consistency"
    if consistency and solver_spec.times is not None:
        times = torch.cat([ts[:1].double(), torch.tensor(solver_spec.times, dtype=torch.float64)])
    else:
        times = ts[:-1]

    if consistency:
        def f(x: Tensor, t: Tensor) -> Tensor:
            return fn(x, at(t, x)).x0
    else:
        inner = grid_spec(model.process, solver_steps or cfg.steps)
        run = solver_spec.build()

        def f(x: Tensor, t: Tensor) -> Tensor:
            below = inner[inner < t]
            return run(fn, model.process, x, torch.cat([t.reshape(1).to(inner), below]), rng)

    was_training = model.training
    model.eval()
    try:
        y = model.encode(images * 2 - 1)
        x0 = edit(f, model.process, y, replace, times, rng)
    finally:
        model.train(was_training)
    return replace(images, model.decode(x0))  # the last replacement, in [0, 1]


def _to(cond: dict[str, Tensor] | None, device: torch.device) -> dict[str, Tensor] | None:
    return None if cond is None else {k: v.to(device) for k, v in cond.items()}
