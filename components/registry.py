"""The lookup API of one component union (DESIGN.md section 2b: the registry answers questions).

Each ``components/<family>/__init__.py`` wraps its discriminated union in a :class:`Registry`, so
tests, the CLI, serving limits and evaluation iterate ``kinds()`` / ``members()`` and ``parse``
names or dicts instead of keeping lists of kinds. A Registry is immutable: it is a view of the
union, which stays the registry.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError


class Registry:
    def __init__(self, union: Any, family: str):
        self.family = family
        self.adapter = TypeAdapter(union)
        args = typing.get_args(union)
        inner = args[0] if args and typing.get_origin(union) is typing.Annotated else union
        self._members: tuple[type[BaseModel], ...] = typing.get_args(inner) or (inner,)
        self._by_kind = {m.model_fields["kind"].default: m for m in self._members}

    def members(self) -> tuple[type[BaseModel], ...]:
        """The spec classes of the union, in its order."""
        return self._members

    def kinds(self) -> list[str]:
        """Every kind of the union, in its order."""
        return list(self._by_kind)

    def member(self, kind: str) -> type[BaseModel]:
        try:
            return self._by_kind[kind]
        except KeyError:
            raise ValueError(f"unknown {self.family} kind {kind!r}; the zoo has {self.kinds()}") from None

    def default_kinds(self) -> list[str]:
        """The kinds that build from their name alone (no required fields)."""
        out = []
        for kind, cls in self._by_kind.items():
            try:
                cls(kind=kind)
            except ValidationError:
                continue
            out.append(kind)
        return out

    def parse(self, value: str | dict[str, Any] | BaseModel) -> Any:
        """A spec from a kind name, a dict with ``kind``, or a spec of this union (checked)."""
        if isinstance(value, BaseModel):
            if type(value) not in self._members:
                raise ValueError(f"{type(value).__name__} is not a {self.family} spec; kinds: {self.kinds()}")
            return value
        if isinstance(value, str):
            self.member(value)
            value = {"kind": value}
        if not isinstance(value, dict):
            raise ValueError(f"a {self.family} is a kind name or a dict with 'kind', not {type(value).__name__}")
        if "kind" in value:
            self.member(value["kind"])
        return self.adapter.validate_python(value)
