"""Noise processes: the union of their specs is the registry (kind = file stem)."""

from typing import Annotated, Union

from pydantic import Field

from components.noise.base import NoiseProcess, VPProcess
from components.noise.edm import EdmProcess, EdmProcessSpec
from components.noise.rectified import Rectified, RectifiedSpec
from components.noise.ve import Ve, VeSpec
from components.noise.vp_cosine import VpCosine, VpCosineSpec
from components.noise.vp_linear import VpLinear, VpLinearSpec
from components.noise.vp_scaled_linear import VpScaledLinear, VpScaledLinearSpec
from components.registry import Registry

NoiseSpec = Annotated[
    Union[VpLinearSpec, VpScaledLinearSpec, VpCosineSpec, VeSpec, EdmProcessSpec, RectifiedSpec], Field(discriminator="kind")
]

PROCESSES = Registry(NoiseSpec, "noise process")

__all__ = [
    "PROCESSES", "EdmProcess", "EdmProcessSpec", "NoiseProcess", "NoiseSpec", "Rectified", "RectifiedSpec", "VPProcess", "Ve",
    "VeSpec", "VpCosine", "VpCosineSpec", "VpLinear", "VpLinearSpec", "VpScaledLinear", "VpScaledLinearSpec",
]
