"""Read a ``.safetensors`` file from any fsspec URL, with an error that names the file."""

from __future__ import annotations

import json
import struct

import fsspec
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import Tensor

from zoo.errors import DataError, ZooError


def read_blob(url: str, error: type[ZooError], what: str) -> bytes:
    """The bytes of ``url``; ``error(f"{what}: file not found")`` when it is missing."""
    try:
        with fsspec.open(url, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise error(f"{what}: file not found") from None


def header_metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors blob's JSON header ({} when it has none);
    struct.error / ValueError on a malformed header."""
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]).get("__metadata__") or {}


def read_safetensors(url: str, error: type[ZooError], what: str) -> dict[str, Tensor]:
    """The tensors of ``url``; ``error(f"{what}: ...")`` when the file is missing or not safetensors."""
    blob = read_blob(url, error, what)
    try:
        return st_load(blob)
    except SafetensorError as e:
        raise error(f"{what}: not a valid safetensors file ({e})") from None


def read_tensor_file(url: str) -> dict[str, Tensor]:
    """A training-data .safetensors file of columns; errors are DataErrors naming ``data=``."""
    return read_safetensors(url, DataError, f"data={url!r}")
