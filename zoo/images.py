"""PNG sample grids, written to any fsspec URL."""

from __future__ import annotations

import io
import math

import fsspec
from PIL import Image
from torch import Tensor


def grid_image(images: Tensor, nrow: int | None = None, scale: int = 1) -> Image.Image:
    """images (N, C, H, W) in [0, 1] -> one PIL image, nearest-neighbour upscaled ``scale`` times."""
    from torchvision.utils import make_grid  # here: torchvision imports torch._dynamo (seconds per process)

    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    g = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=1, pad_value=1.0)
    arr = (g * 255).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def save_grid(images: Tensor, url: str, nrow: int | None = None, scale: int = 4) -> str:
    """Write a PNG grid of images in [0, 1] to a path or fsspec URL; returns the URL."""
    buf = io.BytesIO()
    grid_image(images, nrow, scale).save(buf, format="PNG")
    with fsspec.open(url, "wb") as f:
        f.write(buf.getvalue())
    return url
