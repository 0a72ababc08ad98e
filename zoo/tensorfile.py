"""Read a ``.safetensors`` file from any fsspec URL, with an error that names the file."""

from __future__ import annotations

import fsspec
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import Tensor

from zoo.errors import DataError, ZooError


def read_safetensors(url: str, error: type[ZooError], what: str) -> dict[str, Tensor]:
    """The tensors of ``url``; ``error(f"{what}: ...")`` when the file is missing or not safetensors."""
    try:
        with fsspec.open(url, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise error(f"{what}: file not found") from None
    try:
        return st_load(blob)
    except SafetensorError as e:
        raise error(f"{what}: not a valid safetensors file ({e})") from None


def read_tensor_file(url: str) -> dict[str, Tensor]:
    """A training-data .safetensors file of columns; errors are DataErrors naming ``data=``."""
    return read_safetensors(url, DataError, f"data={url!r}")
