"""Parameterizations of the denoiser: what a backbone's output means (kind = file stem)."""

from typing import Annotated, Union

from pydantic import Field

from components.denoisers.base import Cond, DenoiseFn, Denoiser, Prediction, bind, count_calls
from components.denoisers.consistency import ConsistencySpec
from components.denoisers.edm import EdmPrecondSpec
from components.denoisers.eps import EpsSpec
from components.denoisers.lcm import LcmSpec
from components.denoisers.v import VSpec
from components.denoisers.velocity import VelocitySpec
from components.denoisers.x0 import X0Spec
from components.registry import Registry

DenoiserSpec = Annotated[Union[EpsSpec, X0Spec, VSpec, VelocitySpec, EdmPrecondSpec, ConsistencySpec, LcmSpec], Field(discriminator="kind")]

DENOISERS = Registry(DenoiserSpec, "denoiser")

__all__ = [
    "DENOISERS",     "Cond", "ConsistencySpec", "DenoiseFn", "Denoiser", "DenoiserSpec", "EdmPrecondSpec", "EpsSpec", "LcmSpec", "Prediction", "VSpec",
    "VelocitySpec", "X0Spec", "bind", "count_calls",
]
