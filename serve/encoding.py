"""Images (n, C, H, W) float in [0, 1] to what goes over the wire: PNG, base64 PNGs, or .npy."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

from zoo.images import grid_image

NPY = "application/x-npy"


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(n, C, H, W) in [0, 1] -> (n, H, W, C) uint8, rounded like zoo.images.grid_image."""
    return np.round(np.clip(images, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)


def png(image: np.ndarray) -> bytes:
    """One image (C, H, W) in [0, 1] as PNG (grayscale for 1 channel, RGB for 3)."""
    arr = to_uint8(image[None])[0]
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def png_grid(images: np.ndarray) -> bytes:
    """All images as one PNG: the image itself when n == 1, else a grid (1 px white gaps)."""
    if len(images) == 1:
        return png(images[0])
    buf = io.BytesIO()
    grid_image(torch.from_numpy(np.ascontiguousarray(images))).save(buf, format="PNG")
    return buf.getvalue()


def base64_pngs(images: np.ndarray) -> list[str]:
    return [base64.b64encode(png(im)).decode("ascii") for im in images]


def npy(images: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, images.astype(np.float32), allow_pickle=False)
    return buf.getvalue()


def from_npy(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


def from_png(blob: bytes) -> np.ndarray:
    """A PNG -> (C, H, W) float32 in [0, 1]."""
    arr = np.asarray(Image.open(io.BytesIO(blob)), dtype=np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
