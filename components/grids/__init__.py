"""Time grids, separate from solvers: (process, steps) -> steps+1 decreasing times ending at 0.
kind = file stem; the union of the specs is the registry."""

from typing import Annotated, Union

from pydantic import Field

from components.grids.karras import Karras, KarrasSpec
from components.grids.leading import Leading, LeadingSpec
from components.grids.log_snr import LogSnr, LogSnrSpec
from components.grids.quadratic import Quadratic, QuadraticSpec
from components.grids.trailing import Trailing, TrailingSpec
from components.grids.uniform import Uniform, UniformSpec
from components.registry import Registry

GridSpec = Annotated[
    Union[UniformSpec, QuadraticSpec, KarrasSpec, LogSnrSpec, LeadingSpec, TrailingSpec], Field(discriminator="kind")
]

GRIDS = Registry(GridSpec, "grid")

__all__ = [
    "GRIDS",     "GridSpec", "Karras", "KarrasSpec", "Leading", "LeadingSpec", "LogSnr", "LogSnrSpec", "Quadratic",
    "QuadraticSpec", "Trailing", "TrailingSpec", "Uniform", "UniformSpec",
]
