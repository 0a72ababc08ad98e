"""Solvers: stateless (denoise, process, x_T, grid, rng) -> x_0. kind = file stem."""

from typing import Annotated, Union

from pydantic import Field

from components.solvers.base import Solver
from components.solvers.consistency import ConsistencySampler, ConsistencySamplerSpec
from components.solvers.ddim import Ddim, DdimSpec
from components.solvers.ddpm import Ddpm, DdpmSpec
from components.solvers.dpmpp_2m import Dpmpp2m, Dpmpp2mSpec
from components.solvers.euler import Euler, EulerSpec
from components.solvers.euler_maruyama import EulerMaruyama, EulerMaruyamaSpec
from components.solvers.heun import Heun, HeunSpec
from components.solvers.lcm import LcmSampler, LcmSamplerSpec
from components.solvers.rf_euler import RfEuler, RfEulerSpec
from components.solvers.rk45 import Rk45, Rk45Info, Rk45Spec
from components.registry import Registry

SolverSpec = Annotated[
    Union[
        DdpmSpec, DdimSpec, EulerSpec, HeunSpec, Dpmpp2mSpec, EulerMaruyamaSpec, RfEulerSpec, Rk45Spec,
        ConsistencySamplerSpec, LcmSamplerSpec,
    ],
    Field(discriminator="kind"),
]

SOLVERS = Registry(SolverSpec, "solver")

__all__ = [
    "ConsistencySampler", "ConsistencySamplerSpec", "LcmSampler", "LcmSamplerSpec",
    "SOLVERS",     "Ddim", "DdimSpec", "Ddpm", "DdpmSpec", "Dpmpp2m", "Dpmpp2mSpec", "Euler", "EulerMaruyama",
    "EulerMaruyamaSpec", "EulerSpec", "Heun", "HeunSpec", "RfEuler", "RfEulerSpec", "Rk45", "Rk45Info",
    "Rk45Spec", "Solver", "SolverSpec",
]
