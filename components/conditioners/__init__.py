"""Conditioners: turn labels / prompts into the backbone's ``cond`` and know the null condition
of classifier-free guidance. kind = file stem."""

from typing import Annotated, Union

from pydantic import Field

from components.conditioners.class_label import ClassLabel, ClassLabelSpec
from components.conditioners.clip_text import ClipText, ClipTextSpec
from components.conditioners.unconditional import Unconditional, UnconditionalSpec
from components.registry import Registry

ConditionerSpec = Annotated[Union[UnconditionalSpec, ClassLabelSpec, ClipTextSpec], Field(discriminator="kind")]

CONDITIONERS = Registry(ConditionerSpec, "conditioner")

__all__ = ["CONDITIONERS", "ClassLabel", "ClassLabelSpec", "ClipText", "ClipTextSpec", "ConditionerSpec", "Unconditional",
           "UnconditionalSpec"]
