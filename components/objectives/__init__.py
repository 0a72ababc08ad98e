"""Objectives: (denoiser, batch) -> scalar loss. kind = file stem; the union is the registry."""

from typing import Annotated, Union

from pydantic import Field

from components.objectives.base import Objective
from components.objectives.cd import Cd, CdSpec
from components.objectives.dsm import Dsm, DsmSpec
from components.objectives.edm import EdmLoss, EdmLossSpec
from components.objectives.ict import Ict, IctSpec
from components.objectives.lcd import Lcd, LcdSpec
from components.objectives.lcf import Lcf, LcfSpec
from components.objectives.flow_matching import FlowMatching, FlowMatchingSpec
from components.objectives.pd import Pd, PdSpec
from components.objectives.rectified_flow import RectifiedFlow, RectifiedFlowSpec
from components.objectives.rf_distill import RfDistill, RfDistillSpec
from components.registry import Registry

ObjectiveSpec = Annotated[
    Union[DsmSpec, EdmLossSpec, RectifiedFlowSpec, FlowMatchingSpec, RfDistillSpec, CdSpec, IctSpec, PdSpec, LcdSpec, LcfSpec], Field(discriminator="kind")
]

OBJECTIVES = Registry(ObjectiveSpec, "objective")

__all__ = [
    "Cd", "CdSpec", "Ict", "IctSpec", "Lcd", "LcdSpec", "Lcf", "LcfSpec", "Pd", "PdSpec",
    "OBJECTIVES",     "Dsm", "DsmSpec", "EdmLoss", "EdmLossSpec", "FlowMatching", "FlowMatchingSpec", "Objective", "ObjectiveSpec",
    "RectifiedFlow", "RectifiedFlowSpec", "RfDistill", "RfDistillSpec",
]
