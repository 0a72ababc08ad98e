"""Noise processes: the union of their specs is the registry (kind = file stem)."""

from typing import Annotated, Union

from pydantic import Field

from components.noise.base import NoiseProcess, VPProcess
from components.noise.vp_cosine import VpCosine, VpCosineSpec
from components.noise.vp_linear import VpLinear, VpLinearSpec

NoiseSpec = Annotated[Union[VpLinearSpec, VpCosineSpec], Field(discriminator="kind")]

__all__ = ["NoiseProcess", "NoiseSpec", "VPProcess", "VpCosine", "VpCosineSpec", "VpLinear", "VpLinearSpec"]
