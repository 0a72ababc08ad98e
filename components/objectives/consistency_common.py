"""What CD, CT and iCT share (Song et al. 2023 "Consistency Models"; Song & Dhariwal 2023
"Improved Techniques for Training Consistency Models"): the Karras levels, the distances, and
the target network theta^- the objective owns (part of its state_dict, so every checkpoint
holds it and a resumed run restores it)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal, Union

import torch
from pydantic import BeforeValidator
from torch import Tensor, nn

from components.denoisers.base import Denoiser
from components.noise.base import NoiseProcess
from components.objectives.lpips_distance import LpipsSpec


def _no_bare_lpips(v: Any) -> Any:
    if v == "lpips":
        raise ValueError("distance 'lpips' needs its weights, given by path (never downloaded): "
                         "{kind: lpips, net: vgg, weights: lin.safetensors, backbone: vgg16.safetensors}")
    return v


#: d of CD / CT / iCT: a plain distance by name, or LPIPS with its weights
DistanceSpec = Annotated[Union[Literal["l2", "l1", "pseudo_huber"], LpipsSpec], BeforeValidator(_no_bare_lpips)]


def karras_levels(process: NoiseProcess, n: int, rho: float = 7.0) -> Tensor:
    """N levels sigma_1 < ... < sigma_N in EDM's sigma from the process's s_min to s_max (CM
    section 5 / EDM eq. 5), as float64."""
    lo = float(process.ve_sigma(torch.tensor(process.t_min, dtype=torch.float32).double()))
    hi = float(process.ve_sigma(torch.tensor(process.t_max, dtype=torch.float64)))
    if not math.isfinite(hi):  # rectified prior: sigma/alpha = inf at t_max; use the largest finite level
        hi = float(process.ve_sigma(torch.tensor(process.t_max * (1 - 1e-3), dtype=torch.float64)))
    i = torch.arange(n, dtype=torch.float64) / (n - 1)
    return (lo ** (1 / rho) + i * (hi ** (1 / rho) - lo ** (1 / rho))) ** rho


def distance(a: Tensor, b: Tensor, kind: str, c: float | None = None) -> Tensor:
    """Per-row d(a, b): l2 (mean squared), l1 (mean absolute), or pseudo-Huber
    sqrt(||a - b||^2 + c^2) - c (iCT section 3.3; c = 0.00054 sqrt(d) when None)."""
    diff = (a.float() - b.float()).flatten(1)
    if kind == "l2":
        return diff.pow(2).mean(1)
    if kind == "l1":
        return diff.abs().mean(1)
    if kind == "pseudo_huber":
        c = 0.00054 * math.sqrt(diff.shape[1]) if c is None else c
        return (diff.pow(2).sum(1) + c * c).sqrt() - c
    raise ValueError(f"distance {kind!r}: use l2, l1, pseudo_huber or an LpipsSpec")


def build_distance(spec: DistanceSpec, huber_c: float | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """d(a, b) per row for a distance spec; LPIPS is built once here (its weights read from their
    paths) and kept out of the objective's state (it is a fixed metric, not trained)."""
    if isinstance(spec, LpipsSpec):
        net = spec.build()

        def lpips(a: Tensor, b: Tensor) -> Tensor:
            return net.to(a.device)(a, b)

        return lpips
    return lambda a, b: distance(a, b, spec, huber_c)


@contextmanager
def same_dropout(device: torch.device) -> Iterator[None]:
    """At the end of the block, put the global RNG back as it was on entry, so the next network
    call (the target's) draws the dropout masks the block's call (the student's) drew, as
    openai's consistency_losses does."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    yield
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


class TargetNetwork(nn.Module):
    """theta^-: a frozen copy of the student updated as theta^- <- mu theta^- + (1 - mu) theta
    (CM Algorithm 2/3, last line). Created by ``attach`` from the student, before any resume."""

    def __init__(self) -> None:
        super().__init__()
        self.net: Denoiser | None = None

    def attach(self, student: Denoiser) -> None:
        self.net = copy.deepcopy(_unwrap(student)).requires_grad_(False)

    def forward(self, x: Tensor, t: Tensor, cond: object = None):
        if self.net is None:
            raise RuntimeError("the consistency objective has no target network: the loop must call attach(student)")
        out = self.net(x, t, cond)
        reshard = getattr(self.net.backbone, "reshard", None)
        if reshard is not None:  # FSDP2 keeps a root unsharded after forward (for a backward that never comes)
            reshard()
        return out

    @torch.no_grad()
    def update(self, student: Denoiser, mu: float) -> None:
        assert self.net is not None
        for p_t, p_s in zip(self.net.parameters(), _unwrap(student).parameters()):
            p_t.mul_(mu).add_(p_s.detach().to(p_t.dtype), alpha=1 - mu)
        for b_t, b_s in zip(self.net.buffers(), _unwrap(student).buffers()):
            b_t.copy_(b_s)


def load_teacher_weights(student: nn.Module, teacher: nn.Module, kind: str) -> None:
    """Start the student from the teacher's weights (CD's initialisation, PD's every round); the
    two must share the architecture, else the error names both shapes."""
    target = _unwrap(student)
    theirs = teacher.state_dict()
    mine = target.state_dict()
    if mine.keys() != theirs.keys() or any(mine[k].shape != theirs[k].shape for k in mine):
        bad = sorted(set(mine) ^ set(theirs)) or [k for k in mine if mine[k].shape != theirs[k].shape]
        raise ValueError(f"{kind}: the student cannot start from the teacher's weights: the architectures "
                         f"differ (first differing tensor: {bad[0]!r}); make model.backbone equal the teacher's")
    target.load_state_dict(theirs)


def _unwrap(m: nn.Module) -> nn.Module:
    return getattr(m, "module", m)
