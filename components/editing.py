"""Zero-shot editing (Song et al. 2023, "Consistency Models", Algorithm 4; openai's
consistency_models ``iterative_inpainting`` / ``iterative_colorization`` / ``iterative_superres``):

    y <- A^-1[(A y) * (1 - Omega)]                                            (line 2)
    x ~ N(y, t_1^2 I);  x <- f(x, t_1);  x <- A^-1[(A y) * (1 - Omega) + (A x) * Omega]
    for tau = t_2 ... t_N:
        x ~ N(x, (tau^2 - eps^2) I);  x <- f(x, tau);  x <- A^-1[(A y) * (1 - Omega) + (A x) * Omega]

with A orthogonal, so the replacement keeps y's components outside Omega and x's inside:

- inpainting: A = I, Omega = the mask (1 = fill);
- colorization: A's first row is the unit luminance direction v ∝ (0.2989, 0.5870, 0.1140) (the
  CM code's QR basis), Omega everything else: x + v v^T (y - x) keeps y's luminance exactly;
- super-resolution by ``factor``: per factor x factor block, A's first row is the unit constant
  vector: x - blockmean(x) + blockmean(y) keeps y's block means (the low-resolution image).

Noise levels are EDM's sigma = sigma / alpha on the scaled path, so any process works:
x_tau = alpha(tau) (x + sqrt(s_tau^2 - s_min^2) z), s_min at t_min (CM's eps), as in the
consistency sampler. ``f`` is the model's consistency function (one network call), or for any
other model a solver run from tau to 0 (the PF-ODE's solution is the consistency function).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from components.noise.base import NoiseProcess
from components.random import RandomSource
from components.solvers.base import alpha_sigma, fresh_noise

#: ITU-R 601 luma weights, as openai's iterative_colorization
LUMA = (0.2989, 0.5870, 0.1140)


class Inpaint:
    """A = I; ``mask`` (B or 1, 1 or C, H, W), nonzero where pixels are generated."""

    def __init__(self, mask: Tensor):
        self.fill = mask.bool()

    def __call__(self, y: Tensor, x: Tensor) -> Tensor:
        return torch.where(self.fill.to(x.device), x, y)


class Colorize:
    """Keep y's luminance v^T y (v the unit luma direction), take the chroma from x."""

    def __call__(self, y: Tensor, x: Tensor) -> Tensor:
        v = torch.tensor(LUMA, dtype=torch.float64)
        v = (v / v.norm()).to(x).reshape(1, 3, 1, 1)
        return x + v * (v * (y - x)).sum(1, keepdim=True)

    @staticmethod
    def luminance(images: Tensor) -> Tensor:
        w = torch.tensor(LUMA, dtype=images.dtype, device=images.device).reshape(1, 3, 1, 1)
        return (images * w).sum(1)


class SuperRes:
    """Keep y's mean over each factor x factor block, the detail from x."""

    def __init__(self, factor: int = 2):
        self.factor = factor

    def block_mean(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.factor)

    def upsample(self, low: Tensor) -> Tensor:
        return low.repeat_interleave(self.factor, -2).repeat_interleave(self.factor, -1)

    def __call__(self, y: Tensor, x: Tensor) -> Tensor:
        return x + self.upsample(self.block_mean(y) - self.block_mean(x))


def edit(
    f: Callable[[Tensor, Tensor], Tensor],
    process: NoiseProcess,
    y: Tensor,
    replace: Callable[[Tensor, Tensor], Tensor],
    times: Tensor,
    rng: RandomSource,
) -> Tensor:
    """Algorithm 4. ``f(x, t)`` maps x at the scalar time t to x0; ``times`` t_1 > ... > t_N in
    the process's time; y is the reference in the space diffusion runs in."""
    y = replace(y, torch.zeros_like(y))  # line 2: nothing of y inside Omega
    a, sg = alpha_sigma(process, times[0])
    x = replace(y, f(a * y + sg * fresh_noise(y, rng), times[0]))  # x ~ N(y, t_1^2) in EDM's sigma
    a_min, s_min = alpha_sigma(process, torch.tensor(process.t_min, dtype=torch.float32).double())
    s_min = s_min / a_min
    for tau in times[1:]:
        a, sg = alpha_sigma(process, tau)
        std = math.sqrt(max((sg / a) ** 2 - s_min**2, 0.0))
        x = replace(y, f(a * (x + std * fresh_noise(x, rng)), tau))
    return x
