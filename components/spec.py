"""The base of every typed spec: frozen, no unknown fields, JSON round-trippable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """A frozen Pydantic model that rejects unknown fields.

    Each component kind subclasses it with ``kind: Literal["<file stem>"]`` and a ``build()``
    that returns the torch object. The discriminated union of the kinds is the registry. Floats
    are finite (JSON cannot hold inf or NaN, and a spec must round-trip through it).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=(), allow_inf_nan=False)
