"""Errors that name the culprit: the field, the file, the model name."""

from __future__ import annotations


class ZooError(Exception):
    """Base of every error the zoo raises on purpose."""


class UnknownModelError(ZooError, LookupError):
    def __init__(self, name: str, suggestions: list[str], known: list[str]):
        self.name, self.suggestions = name, suggestions
        hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"unknown model {name!r}{hint} (`zoo list` shows all {len(known)} catalog entries)")

    def __str__(self) -> str:  # LookupError would repr() the message
        return self.args[0]


class SpecError(ZooError, ValueError):
    """A spec or an override that does not validate; the message names each bad field."""


class CheckpointError(ZooError):
    """A checkpoint that is missing, incomplete or corrupt; the message names the file."""


class DataError(ZooError):
    """Training data that is missing or unreadable; the message names the source."""


class NonFiniteLossError(ZooError, FloatingPointError):
    """The loss became NaN/inf; training stops and keeps the last good checkpoint."""
