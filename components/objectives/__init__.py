"""Objectives: (denoiser, batch) -> scalar loss. kind = file stem; the union is the registry."""

from typing import Annotated, Union

from pydantic import Field

from components.objectives.base import Objective
from components.objectives.dsm import Dsm, DsmSpec
from components.objectives.edm import Edm, EdmSpec
from components.objectives.flow_matching import FlowMatching, FlowMatchingSpec
from components.objectives.rectified_flow import RectifiedFlow, RectifiedFlowSpec
from components.objectives.rf_distill import RfDistill, RfDistillSpec

ObjectiveSpec = Annotated[
    Union[DsmSpec, EdmSpec, RectifiedFlowSpec, FlowMatchingSpec, RfDistillSpec], Field(discriminator="kind")
]

__all__ = [
    "Dsm", "DsmSpec", "Edm", "EdmSpec", "FlowMatching", "FlowMatchingSpec", "Objective", "ObjectiveSpec",
    "RectifiedFlow", "RectifiedFlowSpec", "RfDistill", "RfDistillSpec",
]
