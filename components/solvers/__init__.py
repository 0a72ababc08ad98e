"""Solvers: stateless (denoise, process, x_T, grid, noise) -> x_0. kind = file stem."""

from typing import Annotated, Union

from pydantic import Field

from components.solvers.base import Solver
from components.solvers.ddim import Ddim, DdimSpec
from components.solvers.ddpm import Ddpm, DdpmSpec

SolverSpec = Annotated[Union[DdpmSpec, DdimSpec], Field(discriminator="kind")]

__all__ = ["Ddim", "DdimSpec", "Ddpm", "DdpmSpec", "Solver", "SolverSpec"]
