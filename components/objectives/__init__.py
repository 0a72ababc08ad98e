"""Objectives: (denoiser, batch) -> scalar loss. kind = file stem. While there is one kind the
union is that spec; EDM, RF, CD/CT/iCT, LCD, PD join as members."""

from components.objectives.base import Objective
from components.objectives.dsm import Dsm, DsmSpec

ObjectiveSpec = DsmSpec

__all__ = ["Dsm", "DsmSpec", "Objective", "ObjectiveSpec"]
